"""Property: for random trees with random symlinks (to files, to folders, loops, dangling), the
folder listing terminates, lists each real file at most once, by its plain path when it has one,
and misses no plain image; the folder reader built on it does the same or refuses the tree."""
from __future__ import annotations

import os
import signal
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dva.data import load_split
from dva.data._files import walk_images

EXAMPLES = 60
SECONDS = 20  # a listing that runs longer than this on a tree of a few dozen entries is looping


@st.composite
def trees(draw) -> dict:
    """A tree: folders (each under an earlier one), image files, and symlinks to anything."""
    n_dirs = draw(st.integers(1, 7))
    parents = [draw(st.integers(0, i)) for i in range(n_dirs)]  # folder i+1 lies in folder parents[i]
    files = draw(st.lists(st.integers(0, n_dirs), min_size=0, max_size=10))
    links = draw(st.lists(st.tuples(
        st.integers(0, n_dirs),  # where the link is
        st.sampled_from(["dir", "file", "root", "above", "self", "dangling"]),
        st.integers(0, 50),  # which folder or file it points at
        st.booleans(),  # named like an image
    ), max_size=8))
    return {"parents": parents, "files": files, "links": links}


def _build(base: Path, tree: dict) -> tuple[Path, list[Path], set[str]]:
    """Write ``tree`` under ``base/root``; return the root, its folders and the plain image files."""
    root = base / "root"
    dirs = [root]
    for i, parent in enumerate(tree["parents"]):
        dirs.append(dirs[parent] / f"d{i}")
        dirs[-1].mkdir(parents=True)
    root.mkdir(exist_ok=True)
    files = []
    for j, d in enumerate(tree["files"]):
        files.append(dirs[d] / f"f{j}.png")
        files[-1].write_bytes(b"x")
    for k, (where, kind, target, image_name) in enumerate(tree["links"]):
        link = dirs[where] / (f"l{k}.png" if image_name else f"l{k}")
        to = {"dir": dirs[target % len(dirs)], "root": root, "above": base, "self": link,
              "file": files[target % len(files)] if files else base / "none.png",
              "dangling": base / "missing"}[kind]
        os.symlink(to, link)
    return root, dirs, {str(f) for f in files}


def _alarm(signum, frame):  # pragma: no cover - only when the listing loops
    raise TimeoutError(f"the listing ran over {SECONDS} s: a symlink loop is not cut")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(tree=trees())
def test_listing_terminates_and_lists_each_real_file_once(tree):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(os.path.realpath(tmp))
            root, dirs, plain = _build(base, tree)
            paths, _notes = walk_images(root)
            real = [os.path.realpath(p) for p in paths]
            assert len(set(real)) == len(real), "a real file listed twice"
            assert all(os.path.isfile(p) and p.endswith(".png") for p in paths)
            assert plain <= set(paths), "a plain image missed, or listed through a link"
            assert paths == sorted(paths)
            _check_folder_reader(root, dirs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _check_folder_reader(root: Path, dirs: list[Path]) -> None:
    if sum(d.parent == root for d in dirs) < 2:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            split = load_split("folder", str(root), "open")
    except (ValueError, FileNotFoundError) as exc:  # a leak, or fewer than 2 classes with images
        assert "two classes" in str(exc) or "retrieval needs at least 2" in str(exc), str(exc)
        return
    recs = [os.path.realpath(r.path) for r in split.train + split.test]
    assert len(set(recs)) == len(recs), "a real file under two records"


@pytest.mark.parametrize("kind", ["root", "above", "self"])
def test_a_loop_alone_is_cut(tmp_path, kind):
    # The three loops, one at a time, so a failure names the kind (the property mixes them).
    root, _dirs, plain = _build(tmp_path, {"parents": [0, 1], "files": [0, 1, 2], "links": [(2, kind, 0, False)]})
    paths, notes = walk_images(root)
    assert sorted(paths) == sorted(plain) and len(notes) == 1
