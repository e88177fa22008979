import json
import subprocess
import sys

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
    assert out["ica_target"] != "auto" and 0 < out["trainable_fraction"] < 0.05


def test_console_script_help():
    r = subprocess.run([sys.executable, "-m", "dva_cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("train", "demo", "params"):
        assert cmd in r.stdout


def test_user_error_is_one_line(capsys, tmp_path):
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err
