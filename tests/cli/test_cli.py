import json
import subprocess
import sys

import pytest

from dva_cli.cli import main


def test_params_vit_b16_json(capsys):
    assert main(["params", "--backbone", "vit_base_patch16_224", "--ica-rank", "16", "--ica-target", "qk",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["adapter_params"] == 589_824
    assert out["backbone_params"] == 85_798_656
    assert abs(out["trainable_fraction"] - 0.00687) < 1e-4


def test_params_cnn_default_target(capsys):
    assert main(["params", "--backbone", "mobilenetv2_100", "--ica-rank", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    from dva.ica_names import AUTO

    assert out["ica_target"] == AUTO["cnn"]["target"] == "pw+pwl+head" and 0 < out["trainable_fraction"] < 0.05


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "dva_cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("train", "demo", "params"):
        assert cmd in r.stdout


def test_user_error_is_one_line(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err


def test_params_refuses_a_rank_too_large_before_building_it(capsys):
    assert main(["params", "--ica-rank", "100000000"]) == 2
    err = capsys.readouterr().err
    assert "dva params: error: model config: ica.rank=100000000 must be >= 1 and <= 1024" in err


# --------------------------------------------------------------------------- the top-level handler
def _failing(monkeypatch, exc):
    """`dva params` made to raise ``exc`` (what a full disk or too little memory does to any command)."""
    from dva_cli.commands import params

    def run(args):
        raise exc

    monkeypatch.setattr(params, "run", run)


def test_an_os_error_is_one_line_and_exit_2(monkeypatch, capsys):
    _failing(monkeypatch, OSError(28, "No space left on device", "runs/x/last.safetensors"))
    assert main(["params"]) == 2
    err = capsys.readouterr().err
    assert err == ("dva params: error: OSError: [Errno 28] No space left on device: 'runs/x/last.safetensors' "
                   "(--debug shows the traceback)\n")


def test_memory_and_the_projects_own_errors_are_one_line(monkeypatch, capsys):
    _failing(monkeypatch, MemoryError())
    assert main(["params"]) == 2
    assert capsys.readouterr().err.startswith("dva params: error: out of memory (MemoryError): lower the batch size")
    from dva.retrieval.store import ImageLoadError  # an exception class of the project's own

    _failing(monkeypatch, ImageLoadError("/g/a.jpg", "not an image"))
    assert main(["params"]) == 2
    assert capsys.readouterr().err.startswith("dva params: error: ImageLoadError: /g/a.jpg: not an image")


def test_debug_shows_the_traceback_before_or_after_the_command(monkeypatch, capsys):
    _failing(monkeypatch, PermissionError(13, "Permission denied", "out.json"))
    for argv in (["--debug", "params"], ["params", "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and 'raise exc' in err
        assert err.rstrip().endswith("dva params: error: PermissionError: [Errno 13] Permission denied: 'out.json'")


def test_a_bug_keeps_its_traceback(monkeypatch):
    _failing(monkeypatch, KeyError("a bug"))
    with pytest.raises(KeyError, match="a bug"):
        main(["params"])
