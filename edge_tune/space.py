"""Search space files: parameters with domains, and templates that refer to them.

A space file (``search_spaces/NAME.yaml``) holds::

    model: resnet20            # zoo name or package.module:function
    weights: resnet20.pt       # optional: trained weights (a state dict), relative to this file
    dataset: digits
    input_size: 32             # optional: H or HxW pixels; default: the dataset's natural size
    mean: [0.2860]             # optional, with std: the normalisation the weights were trained with
    std: [0.3530]
    params:                    # the searched parameters
      stage1: {type: float, low: 0.0, high: 0.8}
      width:  {type: int, low: 1, high: 4}
      int8:   {type: choice, values: [false, true]}
      lr: 0.01                 # a plain value is fixed, not searched
    finetune: {epochs: 3, lr: 0.01}       # TrainConfig fields; may refer to params
    search: {num_samples: 16}             # defaults the CLI can override
    devices: [CPU, ort:CPU]               # optional: kinds every candidate is measured on, the first the target
    schedule: {version: 1, pruners: ...}  # Distiller's schedule format

Anywhere in ``schedule`` or ``finetune`` the string ``${name}`` stands for the
value of parameter ``name``. Every mistake raises ``UserError`` naming the
file and the key. A space whose parameters are all fixed (or that has none)
is one configuration: a run of one trial. ``schedule_space`` wraps a plain
Distiller schedule file (``--schedule FILE``) the same way, unchanged.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from edge_tune.errors import UserError
from edge_tune.outcome import REPEAT
from edge_tune.params import PARAM_TYPES, Param

__all__ = ["Param", "SearchSpace", "find_space", "load_space", "space_names"]

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_TOP_KEYS = {
    "description",
    "model",
    "weights",
    "dataset",
    "input_size",
    "mean",
    "std",
    "params",
    "finetune",
    "search",
    "schedule",
    "devices",
}
_SEARCH_KEYS = {"num_samples", "max_concurrent", "initial_points"}


@dataclass
class SearchSpace:
    name: str
    path: Path
    model: str
    dataset: str
    params: dict[str, Param]
    schedule: dict[str, Any]  # template, with ${param} references
    finetune: dict[str, Any] = field(default_factory=dict)  # template
    search: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    weights: Path | None = None  # trained weights of ``model`` (a path relative to the space file's folder)
    input_size: str = ""  # "H" or "HxW" pixels; "" = the dataset's natural size
    mean: str = ""  # the normalisation the weights want, per channel, comma-separated; "" = the dataset's default
    std: str = ""
    constants: dict[str, Any] = field(default_factory=dict)  # params given a plain value: fixed, not searched
    schedule_file: bool = False  # a plain Distiller schedule (--schedule): its keys have no ``schedule.`` prefix
    devices: tuple[str, ...] = ()  # kinds measured, the target first (--device, --also-device); () = the flags'

    @property
    def fixed(self) -> bool:
        """Nothing to search: one configuration, one trial."""
        return not self.params

    def render(self, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The concrete (schedule, finetune) for one configuration of the params."""
        missing = sorted(set(self.params) - set(config))
        if missing:
            raise UserError(f"{self.path}: configuration lacks parameter(s) {', '.join(missing)}")
        values = {**self.constants, **config}
        return _substitute(self.schedule, values), _substitute(self.finetune, values)

    def searched_finetune(self) -> list[str]:
        """The ``finetune`` keys that refer to a searched parameter: they differ from trial to trial."""
        return sorted(
            k
            for k, v in self.finetune.items()
            if isinstance(v, str) and (m := _REF.match(v)) and (m.group(1) in self.params)
        )

    def to_tune(self) -> dict[str, Any]:
        return {name: p.to_tune() for name, p in self.params.items()}

    def bo_bounds(self) -> dict[str, Any]:
        return {name: p.bo_bounds() for name, p in self.params.items()}

    def corner(self, side: str) -> dict[str, Any]:
        """Every parameter at its ``low`` or ``high`` end (a choice at its first or last value)."""
        return {n: p.corner(side) for n, p in self.params.items()}

    def midpoint(self) -> dict[str, Any]:
        return {name: p.midpoint() for name, p in self.params.items()}


def _substitute(node: Any, config: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, config) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, config) for v in node]
    if isinstance(node, str) and (m := _REF.match(node)):
        return config[m.group(1)]
    return copy.deepcopy(node)


def _references(node: Any, where: str) -> list[tuple[str, str]]:
    """Every (param name, key path) referred to in ``node``."""
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in _references(v, f"{where}.{k}")]
    if isinstance(node, list):
        return [r for i, v in enumerate(node) for r in _references(v, f"{where}[{i}]")]
    if isinstance(node, str) and "${" in node:
        m = _REF.match(node)
        if m is None:
            raise ValueError(f"{where}: {node!r} must be exactly '${{name}}'")
        return [(m.group(1), where)]
    return []


def _parse_param(name: str, spec: Any, where: str) -> Param:
    if name == REPEAT:
        raise ValueError(f"{where}: the name {REPEAT!r} is edge_tune's (a confirmation run's number); rename it")
    if not isinstance(spec, dict):
        raise ValueError(
            f"{where}: expected a mapping like {{type: float, low: 0.0, high: 0.8}}, or a plain value to fix it"
        )
    kind = PARAM_TYPES.get(spec.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ValueError(f"{where}.type: must be {', '.join(PARAM_TYPES)}, got {spec.get('type')!r}")
    extra = set(spec) - {"type", *kind.keys}
    if extra:
        raise ValueError(f"{where}.{sorted(extra)[0]}: unknown key (a {spec['type']} param has {', '.join(kind.keys)})")
    return kind.parse(name, spec, where)


def _parse(name: str, path: Path, doc: Any) -> SearchSpace:
    if not isinstance(doc, dict):
        raise ValueError("the file must be a YAML mapping with params and schedule")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown key; a space file has {', '.join(sorted(_TOP_KEYS))}")
    if not isinstance(doc.get("schedule"), dict):
        raise ValueError("schedule: required, and must be a mapping")
    if not isinstance(doc.get("params") or {}, dict):
        raise ValueError("params: must be a mapping of parameter names to domains or fixed values")
    search = doc.get("search") or {}
    bad = sorted(set(search) - _SEARCH_KEYS)
    if bad:
        raise ValueError(f"search.{bad[0]}: unknown key; allowed: {', '.join(sorted(_SEARCH_KEYS))}")
    for key, value in search.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"search.{key}: {value!r} is not a whole number of at least 1")
    given = doc.get("params") or {}
    constants = {p: v for p, v in given.items() if not isinstance(v, (dict, list))}
    params = {p: _parse_param(p, s, f"params.{p}") for p, s in given.items() if p not in constants}
    finetune = doc.get("finetune") or {}
    refs = _references(doc["schedule"], "schedule") + _references(finetune, "finetune")
    for ref, where in refs:
        if ref not in params and ref not in constants:
            raise ValueError(
                f"{where}: refers to undefined parameter ${{{ref}}}; defined: {', '.join(given) or 'none'}"
            )
    unused = sorted(set(given) - {r for r, _ in refs})
    if unused:
        raise ValueError(f"params.{unused[0]}: defined but never referred to as ${{{unused[0]}}}")
    _check_finetune_keys(finetune)
    return SearchSpace(
        name=name,
        path=path,
        model=str(doc.get("model", "resnet20")),
        dataset=str(doc.get("dataset", "digits")),
        params=params,
        schedule=doc["schedule"],
        finetune=finetune,
        search=search,
        description=str(doc.get("description", "")).strip(),
        weights=_weights(doc.get("weights"), path),
        input_size=_input_size(doc.get("input_size")),
        mean=_stats(doc.get("mean"), "mean"),
        std=_stats(doc.get("std"), "std"),
        constants=constants,
        devices=_devices(doc.get("devices")),
    )


def _devices(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(
            "devices: a list of device kinds, the target first (e.g. [CPU, ort:CPU]), as --device and --also-device"
        )
    return tuple(v.strip() for v in value)


def _weights(value: Any, path: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"weights: a path to a state dict file, got {value!r}")
    return (path.parent / value).resolve()


def _stats(value: Any, key: str) -> str:
    """``mean:``/``std:``: one number or a list, one per channel; kept as the flag's comma-separated text."""
    if value is None:
        return ""
    from edge_tune.data import parse_stats
    from edge_tune.errors import UserError

    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    try:
        parse_stats(text, key)
    except UserError:
        example = "[0.485, 0.456, 0.406]"
        raise ValueError(f"{key}: one number, or a list of one per channel (e.g. {example}): {value!r}") from None
    return text


def _input_size(value: Any) -> str:
    if value is None:
        return ""
    from edge_tune.data import parse_input_size
    from edge_tune.errors import UserError

    try:
        parse_input_size(str(value))
    except UserError:
        raise ValueError(f"input_size: give the height, or HxW, in pixels (e.g. 224 or 96x128): {value!r}") from None
    return str(value)


def _check_finetune_keys(finetune: dict[str, Any]) -> None:
    from edge_tune.train import TrainConfig

    allowed = {f.name for f in fields(TrainConfig)} - {"seed"}
    bad = sorted(set(finetune) - allowed)
    if bad:
        raise ValueError(f"finetune.{bad[0]}: unknown key; allowed: {', '.join(sorted(allowed))}")


def load_space(path: Path, name: str | None = None) -> SearchSpace:
    """Parse and validate a space file; every error names the file and key."""
    text, doc = _read_yaml(path, "the search space")
    try:
        space = _parse(name or path.stem, path, doc)
        from edge_tune.compression import parse_schedule

        for corner in (space.midpoint(), space.corner("low"), space.corner("high")):
            parse_schedule(space.render(corner)[0])  # schedule errors now, not in a trial
    except ValueError as exc:
        raise located(path, text, exc) from exc
    return space


def schedule_space(path: Path) -> SearchSpace:
    """``--schedule FILE``: a Distiller schedule as written, run as one trial (a space with no parameters).

    The model, dataset and fine-tuning come from the flags; every error names the file, the key and
    its line.
    """
    if not path.is_file():
        raise UserError(f"--schedule {path}: no such file")
    text, doc = _read_yaml(path, "the schedule")
    if isinstance(doc, dict) and ("params" in doc or "schedule" in doc):
        raise UserError(f"--schedule {path}: this is a search space (it has params or schedule); use --space {path}")
    space = SearchSpace(path.stem, path, "resnet20", "digits", {}, doc, search={"num_samples": 1}, schedule_file=True)
    try:
        refs = _references(doc, "schedule")
        if refs:
            raise ValueError(
                f"{refs[0][1]}: ${{{refs[0][0]}}} is a parameter, and a schedule given with --schedule runs as "
                "written; put it in a space file's schedule section with params, and pass that with --space"
            )
        from edge_tune.compression import parse_schedule

        parse_schedule(doc)
    except ValueError as exc:
        raise located(path, text, exc, schedule_file=True) from exc
    return space


def _read_yaml(path: Path, what: str) -> tuple[str, Any]:
    try:
        text = path.read_text()
        return text, yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:  # one line: where, and what the parser expected there
        mark = exc.problem_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise UserError(f"{path}{where}: cannot read {what}: {problem}") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read {what}: {exc}") from exc


def located(path: Path, text: str, exc: Exception, schedule_file: bool = False) -> UserError:
    """A ``UserError`` naming ``path`` and the line of the key the message starts with."""
    key = str(exc).split(":", 1)[0]
    if schedule_file:
        key = key.removeprefix("schedule.").removeprefix("schedule")
    line = line_of(text, key)
    return UserError(f"{path}{f', line {line}' if line else ''}: {exc}")


def line_of(text: str, key_path: str) -> int | None:
    """The 1-based line of ``key_path`` (``schedule.pruners.p.class``, ``schedule.policies[2]``) in YAML ``text``.

    The deepest part of the path that exists is given: an unknown key's
    parent, at least.
    """
    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key_path):
        if isinstance(node, yaml.SequenceNode) and part.startswith("["):
            index = int(part[1:-1])
            if index >= len(node.value):
                break
            node = node.value[index]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        else:
            break
    return line


def space_names(spaces_dir: Path = SPACES_DIR) -> list[str]:
    return sorted(p.stem for p in spaces_dir.glob("*.yaml"))


def find_space(name_or_path: str, spaces_dir: Path = SPACES_DIR) -> SearchSpace:
    """``--space``: a name in ``search_spaces/`` or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"--space {name_or_path}: no such file")
        return load_space(path)
    candidate = spaces_dir / f"{name_or_path}.yaml"
    if not candidate.is_file():
        found = ", ".join(space_names(spaces_dir)) or "none"
        raise UserError(
            f"--space {name_or_path}: no search space of that name in {spaces_dir.name}/; "
            f"found: {found}. Pass a name from that list or a path to a .yaml file."
        )
    return load_space(candidate, name_or_path)
