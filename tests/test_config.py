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
