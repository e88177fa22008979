"""What a user meets around the main path: unreadable images listed at once (train, eval,
data-info --check), the interrupted-training note, log rows without progress bars, a closed pipe,
class labels of nested gallery folders, and k hits per query in a report's search."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dva_cli.cli import main


def _photos(root: Path, classes: int = 6, per: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / f"class_{c}" / f"{i}.jpg")
    return root


@pytest.fixture()
def bad_folder(tmp_path):
    """Six classes, three unreadable files in three of them (training and test halves)."""
    root = _photos(tmp_path / "photos")
    (root / "class_0" / "notes.jpg").write_text("not an image")
    whole = (root / "class_1" / "0.jpg").read_bytes()
    (root / "class_1" / "trunc.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "class_4" / "empty.jpg").write_bytes(b"")
    return root, ["class_0/notes.jpg", "class_1/trunc.jpg", "class_4/empty.jpg"]


def _named(text: str, names: list[str]) -> bool:
    return all(n in text for n in names)


def test_find_unreadable_lists_each_bad_file_with_its_reason(bad_folder):
    from dva.data import find_unreadable

    root, bad = bad_folder
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    found = find_unreadable(paths)
    assert [str(Path(p).relative_to(root)) for p, _ in found] == bad  # input order, the clean ones left out
    assert all(reason for _, reason in found)
    assert find_unreadable([p for p in paths if not any(p.endswith(b) for b in bad)]) == []


def test_data_info_check_lists_every_unreadable_image(bad_folder, capsys):
    root, bad = bad_folder
    assert main(["data-info", "--dataset", "folder", "--root", str(root), "--check"]) == 1
    cap = capsys.readouterr()
    assert "3 of 27 images" in cap.out and _named(cap.out, bad) and "remove the unreadable" in cap.err
    assert main(["data-info", "--dataset", "folder", "--root", str(root), "--check", "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert sorted(Path(r["path"]).name for r in info["unreadable"]) == ["empty.jpg", "notes.jpg", "trunc.jpg"]
    clean = _photos(root.parent / "clean")
    assert main(["data-info", "--dataset", "folder", "--root", str(clean), "--check"]) == 0
    assert "0 of 24 images" in capsys.readouterr().out


def test_train_and_eval_name_every_unreadable_image_at_once(bad_folder, tmp_path, capsys):
    root, bad = bad_folder
    rc = main(["train", "--data.dataset", "folder", "--data.root", str(root), "--output_dir", str(tmp_path / "run"),
               "--backbone.img_size", "64", "--train.steps", "2", "--train.threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert "cannot read 3 image file(s)" in err and _named(err, bad), err[-2000:]
    rc = main(["eval", "--dataset", "folder", "--root", str(root), "--split", "all", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read 3 image file(s)" in err and _named(err, bad), err[-2000:]


def test_many_unreadable_images_are_cut_with_the_command_that_lists_them():
    from dva.data import UnreadableImagesError

    err = UnreadableImagesError([(f"/d/{i}.jpg", "empty") for i in range(13)], shown=10, hint=" (see --check)")
    text = str(err)
    assert "cannot read 13 image file(s)" in text and "/d/9.jpg" in text and "/d/10.jpg" not in text
    assert "... and 3 more (see --check)" in text


def test_an_interrupted_run_says_where_its_state_is_and_prints_its_log_rows(synthetic_root, tmp_path, capsys,
                                                                            monkeypatch):
    import dva_train.train as T

    real = T.train

    def stop_at_3(cfg, **kw):
        def on_step(step):
            if step == 3:
                raise KeyboardInterrupt

        return real(cfg, on_step=on_step, **kw)

    monkeypatch.setattr(T, "train", stop_at_3)
    out = tmp_path / "run"
    args = ["train", "--data.dataset", "synthetic", "--data.root", str(synthetic_root), "--output_dir", str(out),
            "--backbone.img_size", "64", "--train.classes_per_batch", "4", "--train.images_per_class", "2",
            "--train.threads", "1", "--train.log_every", "1", "--train.save_every", "2", "--train.steps", "6",
            "--no-progress"]
    assert main(args) == 130
    cap = capsys.readouterr()
    assert f"interrupted; the state saved at step 2 (every 2 steps and at each epoch's end) is in {out}" in cap.err
    assert "--resume to continue" in cap.err
    # --no-progress turns the bars off, not the log rows: every step's row printed (log_every 1).
    assert "step=1 " in cap.out and "step=2 " in cap.out and "loss=" in cap.out
    fresh = tmp_path / "fresh"
    from dva_cli.commands.train import interrupted_note

    assert "interrupted before its first saved state" in interrupted_note(str(fresh), 50)
    # With --overwrite, a state older than the command is the replaced run's: not offered for --resume.
    import time

    assert "the state saved at step 2" in interrupted_note(str(out), 2, started=0.0)
    assert "interrupted before its first saved state" in interrupted_note(str(out), 2, started=time.time() + 1)


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`dva data-info --json | head -0`: the reader is gone before the (buffered) output is flushed."""
    import os
    import subprocess
    import sys

    root = _photos(tmp_path / "photos", classes=4, per=2)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered, as in a shell pipe
    code = ("import sys, time; from dva_cli.cli import main; time.sleep(1.0); "
            f"sys.exit(main(['data-info', '--dataset', 'folder', '--root', {str(root)!r}, '--json']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader leaves before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_another_broken_pipe_is_reported(monkeypatch, capsys):
    import dva_cli.commands.data_info as D

    def cut(_args):
        raise BrokenPipeError(32, "Broken pipe")  # e.g. a socket or a worker's pipe: stdout is fine

    monkeypatch.setattr(D, "run", cut)
    assert main(["data-info", "--dataset", "folder", "--root", "x"]) == 2
    assert "dva data-info: error: BrokenPipeError" in capsys.readouterr().err


def test_an_image_too_large_to_open_is_listed_not_raised(tmp_path):
    import pickle

    from dva.data import UnreadableImagesError, find_unreadable

    big = tmp_path / "big.png"
    Image.new("1", (20000, 20000)).save(big)  # a few KB on disk, over twice Pillow's pixel limit
    [(path, reason)] = find_unreadable([str(big)])
    assert path == str(big) and "exceeds limit" in reason
    err = pickle.loads(pickle.dumps(UnreadableImagesError([(path, reason)], hint=" (h)")))
    assert err.bad == [(path, reason)] and "cannot read 1 image file(s)" in str(err)


def test_labels_from_dirs_is_the_class_folder_under_the_root(tmp_path):
    from dva.retrieval.store.gallery import list_images

    root = tmp_path / "g"
    def labels(root, files):
        for rel in files:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / rel)
        return {Path(it.path).name: it.label for it in list_images(root, label_from_parent=True)}

    assert labels(root, ("Mallard/2024-05/a.png", "Mallard/b.png", "Wren/x/y/c.png", "top.png")) == {
        "a.png": "Mallard", "b.png": "Mallard", "c.png": "Wren", "top.png": None}
    # The reader's other layouts: root/images/<class>/ and root/{train,val,test}/<class>/.
    assert labels(tmp_path / "i", ("images/Mallard/a.png", "images/Wren/c.png")) == {"a.png": "Mallard",
                                                                                      "c.png": "Wren"}
    assert labels(tmp_path / "t", ("train/Mallard/a.png", "val/Teal/v.png", "test/Wren/c.png")) == {
        "a.png": "Mallard", "v.png": "Teal", "c.png": "Wren"}


def test_trim_hits_keeps_k_besides_the_query_itself():
    from dva.retrieval.search import Hit, QueryResult, trim_hits

    hits = [Hit(i + 1, i, 1.0 - i / 10, f"/g/{i}.jpg") for i in range(4)]
    in_gallery = QueryResult("/g/0.jpg", list(hits))  # finds itself first: itself + k
    outside = QueryResult("/q/new.jpg", list(hits))  # not in the gallery: k, not k + 1
    trim_hits([in_gallery, outside], 3)
    assert [h.id for h in in_gallery.hits] == [0, 1, 2, 3] and [h.id for h in outside.hits] == [0, 1, 2]


def test_flags_are_not_abbreviated(tmp_path, capsys):
    """`--over` is not --overwrite (which deletes a run's checkpoints): it is refused."""
    rc = main(["train", "--preset", "mobilenetv2", "--data.root", str(tmp_path), "--over"])
    assert rc == 2 and "--over" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data-info", "--dataset", "folder", "--root", str(tmp_path), "--jso"])
    assert "unrecognized arguments: --jso" in capsys.readouterr().err


def test_the_report_counts_gallery_queries_by_the_index_not_by_their_hits():
    from dva.retrieval.pipeline import summarize
    from dva.retrieval.search import Hit, QueryResult

    hits = [Hit(1, 1, 0.9, "/g/1.jpg", "a"), Hit(2, 2, 0.8, "/g/2.jpg", "b")]
    pushed_out = QueryResult("/g/0.jpg", list(hits), label="a")  # a gallery image whose own hit fell out
    assert summarize([pushed_out], 2)["gallery_queries"] == 0  # by its hits alone: not seen
    s = summarize([pushed_out], 2, in_gallery={"/g/0.jpg"})
    assert s["gallery_queries"] == 1 and s["self_hit_rate"] == 0.0
