"""The cub100 benchmark's plan: ``rows.yaml`` -> the rows to run, their seeds, overrides and run folders.

Every row is the packaged ``demo`` config plus overrides. A profile (``--profile``) names sets of
rows; the validation-split profiles (``val``, ``beta_val``, ``val_adapters*``) are sets whose rows
hold ``--data.val_classes 10`` (train on classes 0-39, retrieve 40-49). Finished runs of earlier
result files can fill rows of this plan (:func:`reuse_runs`). Nothing here trains or reads images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
ROWS_FILE = HERE / "rows.yaml"


# ----------------------------------------------------------------------------- rows (rows.yaml)
class Row(NamedTuple):
    """One row of the benchmark: its table group and label, and its overrides of the ``demo`` config."""

    group: str
    label: str
    overrides: list[str]


class Backbone(NamedTuple):
    """A backbone of the benchmark (``--backbone``): timm model, input size, adapter settings."""

    model: str
    img_size: int
    dva_defaults: list[str]


class RowTable(NamedTuple):
    """Everything ``rows.yaml`` holds, checked."""

    sets: dict[str, dict[str, Row]]
    dva_defaults: list[str]
    half: str
    aliases: dict[str, str]
    run_order: list[str]
    profiles: dict[str, list[str]]
    backbones: dict[str, Backbone]

    def all_rows(self) -> dict[str, Row]:
        """Every row of every set, in table order."""
        return {n: r for rows in self.sets.values() for n, r in rows.items()}

    def rank(self) -> dict[str, int]:
        """Row name -> its position in the tables."""
        return {n: i for i, n in enumerate(self.all_rows())}


def _strict_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (a copied row would silently replace another)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        out = {}
        for k_node, v_node in node.value:
            key = loader.construct_object(k_node, deep=True)
            if key in out:
                raise ValueError(f"rows.yaml line {k_node.start_mark.line + 1}: duplicate key {key!r}")
            out[key] = loader.construct_object(v_node, deep=True)
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass


def _tokens(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise TypeError(f"rows.yaml {where}: expected a list of quoted strings, got {value!r}")
    return list(value)


def preset_backbone(name: str) -> Backbone:
    """A backbone's model, input size and ICA overrides, from the packaged preset ``name`` (src/dva/configs/)."""
    from dva.config import load_config, presets

    if name not in presets():
        raise ValueError(f"rows.yaml: no packaged preset {name!r} (presets: {', '.join(presets())})")
    cfg = load_config(name)
    # The blocks slice YAML-quoted: a bare -2: would parse as a mapping in an override.
    ica = ["--ica.rank", str(cfg.ica.rank), "--ica.target", cfg.ica.target, "--ica.blocks", f"'{cfg.ica.blocks}'"]
    return Backbone(cfg.backbone.name, cfg.backbone.img_size, ica)


def _defaults(value: Any, where: str) -> list[str]:
    """``{preset: NAME}`` -> that preset's ICA overrides; a list of quoted strings as it is."""
    if isinstance(value, dict) and set(value) == {"preset"}:
        return preset_backbone(str(value["preset"])).dva_defaults
    return _tokens(value, where)


def _backbone(value: Any, where: str) -> Backbone:
    """``{preset: NAME}``, or ``{model, img_size, dva_defaults}`` spelled out."""
    if isinstance(value, dict) and set(value) == {"preset"}:
        return preset_backbone(str(value["preset"]))
    return Backbone(str(value["model"]), int(value["img_size"]), _tokens(value["dva_defaults"], f"{where}.dva_defaults"))


def load_rows(path: str | Path = ROWS_FILE) -> RowTable:
    """Read and check the row table.

    Args:
        path: the YAML file (default ``rows.yaml`` beside this module).

    Returns:
        The rows; every override a string, row names unique, every alias, run-order and profile
        entry naming a row or set that exists.
    """
    raw = _strict_yaml(Path(path).read_text())
    sets: dict[str, dict[str, Row]] = {}
    seen: dict[str, str] = {}
    for set_name, spec in raw["sets"].items():
        prefix = _tokens(spec.get("prefix", []), f"sets.{set_name}.prefix")
        rows: dict[str, Row] = {}
        for name, r in spec["rows"].items():
            where = f"sets.{set_name}.rows.{name}"
            if name in seen:
                raise ValueError(f"rows.yaml {where}: row name already used in set {seen[name]!r}")
            seen[name] = set_name
            unknown = set(r) - {"group", "label", "overrides"}
            if unknown:
                raise ValueError(f"rows.yaml {where}: unknown key(s) {sorted(unknown)}")
            group = r.get("group", spec.get("group"))
            if not isinstance(group, str) or not isinstance(r.get("label"), str):
                raise TypeError(f"rows.yaml {where}: needs a string label and group (its own or the set's)")
            rows[name] = Row(group, r["label"], prefix + _tokens(r["overrides"], f"{where}.overrides"))
        sets[set_name] = rows
    table = RowTable(sets=sets, dva_defaults=_defaults(raw["dva_defaults"], "dva_defaults"),
                     half=str(raw["half_marker"]), aliases=dict(raw.get("aliases") or {}),
                     run_order=_tokens(raw["run_order"], "run_order"),
                     profiles={p: _tokens(s, f"profiles.{p}") for p, s in raw["profiles"].items()},
                     backbones={k: _backbone(b, f"backbones.{k}") for k, b in (raw.get("backbones") or {}).items()})
    if not table.backbones:  # a table without the section: the MobileNetV2 rows alone
        table = table._replace(backbones={"mobilenetv2": Backbone("mobilenetv2_100", 224, table.dva_defaults)})
    names = table.all_rows()
    bad = ([f"alias {a}" for a in table.aliases if a not in names]
           + [f"alias target {t}" for t in table.aliases.values() if t not in names]
           + [f"run_order {n}" for n in table.run_order if n not in names]
           + [f"profile {p}: set {s}" for p, ss in table.profiles.items() for s in ss if s not in sets])
    if bad:
        raise ValueError(f"rows.yaml: unknown row or set names: {bad}")
    return table


ROWS = load_rows()


# ----------------------------------------------------------------------------- plan
def frozen_key(overrides: list[str]) -> tuple[int, int, str]:
    """Runs with the same (input size, validation classes, dataset) share the frozen-backbone metrics."""
    from dva.config import load_config

    cfg = load_config("demo", ["--data.val_classes", "0", *overrides])  # the benchmark's split (common_overrides)
    return cfg.backbone.img_size, cfg.data.val_classes, cfg.data.dataset


def expand_half(overrides: list[str], epochs: int, max_steps: int, half: str = ROWS.half) -> list[str]:
    """Replace the ``half`` marker by overrides for half the profile's budget (steps, else epochs)."""
    repl = (["--train.max_steps", str(max_steps // 2)] if max_steps
            else ["--train.epochs", str(max(1, epochs // 2)), "--train.max_steps", "0"])
    return [t for o in overrides for t in (repl if o == half else [o])]


def is_frozen(name: str) -> bool:
    """Rows named ``frozen`` or ``*_frozen_*`` are an embedding pass, not a training run."""
    return "frozen" in name.split("_")


def seeds_of(profile: str, seeds: str | None) -> list[int]:
    """``--seeds`` (comma-separated) as integers; by default 0, 1, 2 for ``full`` and 0 for every other profile."""
    return [int(s) for s in seeds.split(",")] if seeds else ([0, 1, 2] if profile == "full" else [0])


def common_overrides(root: str | Path, cache: Path, threads: int, model: str, img_size: int, epochs: int,
                     max_steps: int) -> list[str]:
    """The overrides of every run: data, shared prefix cache, threads, backbone, input size and budget.

    No evaluation or checkpoints during training (one evaluation at the end of each run). The
    dataset and the split are the benchmark's (cub100, every training class trained on: a row's
    own ``--data.val_classes 10`` holds out the validation classes), not the presets' defaults.
    """
    return ["--data.dataset", "cub100", "--data.val_classes", "0", "--data.root", str(root), "--train.cache_dir", str(cache), "--train.threads", str(threads),
            "--backbone.name", model,
            "--backbone.img_size", str(img_size), "--train.epochs", str(epochs),
            "--train.max_steps", str(max_steps),
            "--train.eval_every", "0", "--train.save_every", "0", "--train.log_every", "20"]


def build_plan(table: RowTable, profile: str, rows: list[str] | None, seeds: list[int],
               seeds_given: bool) -> list[tuple[str, Row, list[int]]]:
    """The rows to run and their seeds, in execution order.

    Args:
        table: the row table.
        profile: its sets run, unless ``rows`` is given.
        rows: explicit row names (``--rows``).
        seeds: the seeds of the run.
        seeds_given: ``--seeds`` was passed: explicit rows then run every seed.

    Returns:
        ``(name, row, seeds)`` triples: main rows run every seed (``frozen``: seed 0), others the first.
    """
    plan: list[tuple[str, Row, list[int]]] = []
    for set_name in table.profiles[profile]:
        for n, row in table.sets[set_name].items():
            if row.group != "main":
                plan.append((n, row, [seeds[0]]))
            else:  # the main rows run every seed; the frozen backbone does not depend on it
                plan.append((n, row, [0] if n == "frozen" else seeds))
    if rows:
        allrows = table.all_rows()
        unknown = [w for w in rows if w not in allrows]
        if unknown:
            raise ValueError(f"unknown row(s) {unknown}; known: {sorted(allrows)}")
        plan = [(n, allrows[n], seeds if (allrows[n].group == "main" or seeds_given) and not is_frozen(n)
                 else [seeds[0]]) for n in rows]
    order = {n: i for i, n in enumerate(table.run_order)}
    plan.sort(key=lambda t: order.get(t[0], len(order)))
    return plan


class RunSpec(NamedTuple):
    """One subprocess of a row: one seed."""

    kind: str  # "train" or "frozen"
    seed: int
    overrides: list[str]
    tag: str  # its run folder
    embed_images: int


def expand_plan(table: RowTable, plan: list[tuple[str, Row, list[int]]], common: list[str], img_size: int,
                epochs: int, max_steps: int, embed_images: int,
                markers: dict[str, str] | None = None) -> list[tuple[str, Row, list[RunSpec]]]:
    """Every run of every row: the full override list, run folder and embedding pass.

    Args:
        table: the row table (DVA defaults, aliases, half marker).
        plan: from :func:`build_plan`.
        common: overrides of every run (data, caches, budget).
        img_size, epochs, max_steps: the profile's input size and budget (folder names, half rows).
        embed_images: test images embedded through the saved model by each row's first seed.
        markers: override tokens replaced in the runs (not in the recorded row), e.g. ``@pets37``
            -> the pets37 images folder; a row naming a marker that is not given is refused.

    Returns:
        ``(name, row, runs)`` with ``row.overrides`` as recorded in the JSON (DVA defaults + the
        row's own, half budget expanded).
    """
    out = []
    donors: set[tuple[int, int, str]] = set()  # frozen_key()s whose frozen metrics are being measured
    for name, row, row_seeds in plan:
        kind = "frozen" if is_frozen(name) else "train"
        dva_ov = [] if kind == "frozen" or "--train.trainable" in row.overrides else list(table.dva_defaults)
        ov = expand_half(row.overrides, epochs, max_steps, table.half)
        missing = [t for t in ov if t.startswith("@") and t not in (markers or {})]
        if missing:
            raise ValueError(f"row {name} needs {missing[0]}: its dataset was not found (see --help)")
        runs = []
        for seed in row_seeds:
            overrides = common + dva_ov + [(markers or {}).get(t, t) for t in ov] + ["--train.seed", str(seed)]
            if kind == "train":
                # The frozen baseline is the same for every row of a size and split: measure it in the
                # first trained run only (a whole extra pass over the test images in uncached rows).
                key = frozen_key(overrides)
                if key in donors:
                    overrides += ["--train.eval_frozen", "false"]
                donors.add(key)
            budget = f"{max_steps}st" if max_steps else f"{epochs}ep"
            tag = f"{table.aliases.get(name, name)}_s{seed}_{img_size}px_{budget}"
            n_embed = -1 if (kind == "frozen" and row.group != "main") else (embed_images if seed == row_seeds[0] else 0)
            runs.append(RunSpec(kind, seed, overrides, tag, n_embed))
        out.append((name, Row(row.group, row.label, dva_ov + ov), runs))
    return out


# ----------------------------------------------------------------------------- reuse
def reuse_runs(results: list[dict[str, Any]], settings: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished runs of earlier result files, keyed by (row name, seed), with their recorded overrides.

    Only files whose backbone, input size and budget equal ``settings`` give runs: a run of another
    size or budget would fill a row it was not measured for.
    """
    keys = ("model", "img_size", "epochs", "max_steps")
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for res in results:
        s = res["settings"]
        if any(s.get(k, "mobilenetv2_100" if k == "model" else None) != settings[k] for k in keys):
            raise ValueError(f"--reuse {res.get('json')}: its settings {({k: s.get(k) for k in keys})} differ from "
                             f"this run's {({k: settings[k] for k in keys})}")
        for row in res["rows"]:
            for run in row["runs"]:
                out.setdefault((row["name"], int(run["seed"])), {"overrides": row["overrides"], "run": run,
                                                                 "json": res.get("json")})
    return out
