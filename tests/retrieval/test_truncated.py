"""Truncated or foreign index/embedding/checkpoint files: one error naming the file, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from dva.retrieval.index import GalleryIndex, build_index
from dva.retrieval.store import GalleryItem, embed_gallery, load_embeddings
from dva_cli.cli import main


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture
def built(embedder, gallery, tmp_path):
    paths, _ = gallery
    embed_gallery(embedder, [GalleryItem(str(p)) for p in paths], tmp_path / "emb", progress=False,
                  shard_size=4)
    build_index(tmp_path / "emb", tmp_path / "idx")
    return tmp_path


@pytest.mark.parametrize("pattern,loader", [
    ("idx/*.faiss", "index"), ("idx/index.json", "index"),
    ("emb/meta.json", "embeddings"), ("emb/shards/*.npy", "embeddings"),
])
def test_truncated_file_is_named(built, pattern, loader, capsys):
    target = sorted(built.glob(pattern))[0]
    _truncate(target)
    with pytest.raises(ValueError) as err:
        GalleryIndex.load(built / "idx") if loader == "index" else load_embeddings(built / "emb")
    assert str(target) in str(err.value)
    if loader == "index":  # and the command line prints one line, exit 2
        assert main(["search", "--index", str(built / "idx"), str(target)]) == 2
        e = capsys.readouterr().err
        assert str(target) in e and "Traceback" not in e


def test_checkpoint_without_num_classes(tmp_path):
    import json

    import torch
    from safetensors.torch import save_file

    from dva.checkpoint import FORMAT, read_checkpoint

    p = tmp_path / "ck.safetensors"
    save_file({"a": torch.zeros(1)}, str(p), metadata={"format": FORMAT, "config": json.dumps({}),
                                                         "fingerprint": "x"})
    with pytest.raises(ValueError, match="lacks num_classes"):
        read_checkpoint(p)


def test_truncated_train_state_is_named(tmp_path):
    import torch

    from dva_train.state import read_state

    p = tmp_path / "train_state.pt"
    torch.save({"step": 3, "trainable": {"a": torch.zeros(100)}}, p)
    _truncate(p)
    with pytest.raises(ValueError, match="train_state.pt: unreadable training state"):
        read_state(tmp_path)
