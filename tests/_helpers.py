"""Helpers shared by test modules (importable: tests/conftest.py puts this folder on sys.path)."""
from __future__ import annotations

import torch


def perturb_trainable(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Move every trainable tensor off its start (zero ``up``, identity head): a stand-in for a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


class Crash(Exception):
    """A simulated crash of a training run (raised by :func:`crash_at`)."""


def crash_at(step: int):
    """An ``on_step`` hook of ``dva_train.train.train`` that raises :class:`Crash` after ``step``."""
    def hook(s: int) -> None:
        if s == step:
            raise Crash
    return hook


def seeded_mnv2_weights(path):
    """Write a seeded random MobileNetV2-0.5 as a local weights file (the same frozen model in every build)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_050", num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def small_images(folder, n: int = 3) -> list[str]:
    """``n`` small PNGs of different sizes and colours in ``folder``; their paths."""
    from PIL import Image

    paths = []
    for i in range(n):
        p = folder / f"im{i}.png"
        Image.new("RGB", (40 + 10 * i, 30), (i * 50, 0, 0)).save(p)
        paths.append(str(p))
    return paths


def kill_once_written(code: str) -> None:
    """Run ``python -c code``, wait for its ``WRITTEN`` line, then SIGKILL it (a crash mid-commit)."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITTEN", proc.stderr.read()[-3000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
