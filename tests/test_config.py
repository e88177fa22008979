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
    (["--train.epochs", "-3"], "train.epochs=-3 must be >= 1"),
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
    for name in ("demo", "cub200_vitb16"):
        load_config(name)
    for dev in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert load_config(None, ["--train.device", dev]).train.device == dev


def test_resolve_device_refuses_what_is_not_here():
    import torch

    from dva.utils import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu"):
        resolve_device("tpu")
