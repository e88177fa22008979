"""The project's shared real photo sets read by the dataset readers: cars196 (Stanford Cars,
numbered class folders) and aircraft47 (read by ``folder``). Skipped when the data are absent
(``$DVA_CARS196`` / ``$DVA_AIRCRAFT47`` or ``../shared/data/<name>`` beside the checkout)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from dva.data import load_split
from dva.data.locate import shared_candidates


def _shared(name: str) -> Path:
    root = next((c for c in shared_candidates(f"data/{name}", f"DVA_{name.upper()}")
                 if (c / "images").is_dir()), None)
    if root is None:
        pytest.skip(f"{name} not found (set DVA_{name.upper()} or place it at ../shared/data/{name})")
    return root


@pytest.fixture(scope="module")
def cars196() -> Path:
    return _shared("cars196")


@pytest.fixture(scope="module")
def aircraft47() -> Path:
    return _shared("aircraft47")


def test_cars196_open_counts_and_class_order(cars196):
    s = load_split("stanford_cars", str(cars196), "open")
    assert (len(s.train), len(s.test)) == (4_043, 4_090)
    assert s.train_classes == list(range(98)) and s.test_classes == list(range(98, 196))
    # ids are the folders' official NNN prefixes, names the rest with "_" read as " "
    assert s.class_names[0] == "AM General Hummer SUV 2000"
    assert s.class_names[97] == "Eagle Talon Hatchback 1998"
    assert s.class_names[98] == "FIAT 500 Abarth 2012"
    assert s.class_names[195] == "smart fortwo Convertible 2012"
    per_class = Counter(r.label for r in s.train + s.test)
    assert min(per_class.values()) == 24 and max(per_class.values()) == 68
    assert all(f"/images/{r.label + 1:03d}_" in r.path for r in s.train + s.test)
    # the one warning: the official training half holds fewer images than the published split
    assert len(s.warnings) == 1 and "4,043 train / 4,090 test images instead of the published" in s.warnings[0]
    with pytest.raises(ValueError, match="closed protocol needs the official train/test split"):
        load_split("cars196", str(cars196), "closed")


def test_cars196_data_info(cars196, capsys):
    from dva_cli.cli import main

    assert main(["data-info", "--dataset", "cars196", "--root", str(cars196), "--protocol", "open",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["train_images"], out["test_images"]) == (4_043, 4_090)
    assert (out["train_classes"], out["test_classes"]) == (98, 98)


def test_aircraft47_open_counts_via_folder(aircraft47):
    s = load_split("folder", str(aircraft47), "open")  # root/images/<NN>_<Type>/: the NN_ prefix sorts
    assert (len(s.train), len(s.test)) == (1_517, 1_551)
    assert (len(s.train_classes), len(s.test_classes)) == (23, 24)
    assert s.class_names[0] == "01_Airbus_A318" and s.class_names[22] == "23_Vought_F4U_Corsair"
    assert s.class_names[23] == "24_Airbus_A220" and s.class_names[46].startswith("47_")
    assert s.warnings == []
