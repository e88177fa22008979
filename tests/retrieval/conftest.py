"""Fixtures for the retrieval tests: a tiny stand-in embedder and generated galleries."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image


class TinyEmbedder:
    """Same attributes as :class:`dva.runtime.torch_embedder.Embedder`, wrapping a tiny random conv net.

    The embedding is the 4x4 average-pooled feature map, flattened and L2-normalised, so
    different images get clearly different vectors. ``calls`` counts forward passes and
    ``images_seen`` the images embedded (for the resume tests).
    """

    def __init__(self, seed: int = 0, img_size: int = 32, channels: int = 8) -> None:
        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, channels, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(channels, channels, 3, padding=1, stride=2),
        ).eval()
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.adapter = torch.nn.Conv2d(channels, channels, 1).eval()
        self.img_size = img_size
        self.dim = channels * 16
        self.transform = T.Compose([
            T.Resize(img_size), T.CenterCrop(img_size), T.ToTensor(),
            T.Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]),
        ])
        h = hashlib.sha256()
        for p in self.net.parameters():
            h.update(p.detach().numpy().tobytes())
        self.fingerprint = h.hexdigest()[:16]
        self.calls = 0
        self.images_seen = 0

    @torch.no_grad()
    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images_seen += x.shape[0]
        f = torch.nn.functional.adaptive_avg_pool2d(self.net(x), 4).flatten(1)
        return torch.nn.functional.normalize(f, dim=1)

    def embed_pil(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_tensor(torch.stack([self.transform(im.convert("RGB")) for im in images])).numpy()

    def embed_paths(self, paths, batch_size=64, num_workers=0, progress=True) -> np.ndarray:
        return self.embed_pil([Image.open(p) for p in paths])

    @torch.no_grad()
    def activation_maps(self, x: torch.Tensor, adapted: bool = True) -> torch.Tensor:
        f = self.net(x)
        if adapted:
            f = f + self.adapter(f)
        m = f.relu().sum(1)
        lo = m.flatten(1).min(1).values[:, None, None]
        hi = m.flatten(1).max(1).values[:, None, None]
        return (m - lo) / (hi - lo).clamp_min(1e-6)


@pytest.fixture
def embedder() -> TinyEmbedder:
    return TinyEmbedder(seed=0)


@pytest.fixture
def make_embedder():
    """Factory for stand-in embedders with other weights (other fingerprints)."""
    return TinyEmbedder


def make_image(path: Path, seed: int, label: int, size: tuple[int, int] = (40, 36)) -> Path:
    """A random-textured image whose dominant colour depends on ``label``."""
    rng = np.random.default_rng(seed)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]][label % 4])
    arr = np.clip(base + rng.normal(0, 50, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def gallery(tmp_path: Path) -> tuple[list[Path], list[int]]:
    """24 PNGs in 3 classes (8 each) under tmp_path/gallery/class_k/."""
    paths, labels = [], []
    for i in range(24):
        lab = i % 3
        paths.append(make_image(tmp_path / "gallery" / f"class_{lab}" / f"img_{i:02d}.png", i, lab))
        labels.append(lab)
    return paths, labels
