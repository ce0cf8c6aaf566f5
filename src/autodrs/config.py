"""One configuration model for ``train``, ``search`` and ``bench``.

Each command's settings are a dataclass whose field names are the command's flag names
(``--batch-size`` is ``batch_size``; YAML files may write either spelling). A YAML file
given with ``--config`` holds any of them; flags given on the command line win. Values are
checked by type and by the flag rules of ``autodrs.validation``, and an unknown key or a
bad value is a ``ConfigError`` naming it. A run saves its settings as ``config.yaml`` in its
run folder (``to_yaml``), which ``--config`` reads back to run it again exactly (where to
write, ``--out``, and whether to replace or resume are not part of a run and are left out).

Per-method search options come from the ``options`` mapping of a YAML file
(``options: {autoctr: {fidelity: full}}``) or from ``--set autoctr.fidelity=full``; each
reaches that method's stage only (``SearchContext.options``).
"""

from __future__ import annotations

import ast
import difflib
import inspect
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from autodrs.data.errors import DataError

__all__ = ["BenchSettings", "ConfigError", "RunSettings", "SearchSettings", "TrainSettings",
           "load_yaml", "parse_set"]

# training rows the stages search on: a search compares designs, which a million rows rank
# as a larger table would, while each trial costs far less
DEFAULT_SEARCH_ROWS = 1_000_000
# the part of --budget the baselines train in, when --baseline-budget is not given
BASELINE_SHARE = 0.25
# ... when each is also tuned by the optim stage (about four fits instead of one; the
# searched model's own optim stage then reuses its start's tuning, so costs next to nothing)
TUNED_BASELINE_SHARE = 0.4
# the baselines of the default pipeline (a search of chosen methods compares with deepfm)
DEFAULT_BASELINES = "deepfm,fm,widedeep,dcnv2,ipnn"
# the epoch cap of every fit a command makes: a cap for early stopping (``--patience``) to
# end training before, not a stop of its own. At 10, four of the five default baselines on
# movielens-100k validated best at their last epoch, still improving (docs/benchmarks.md)
DEFAULT_EPOCHS = 50
# where to write and whether to replace or resume: not part of what a run computes
NOT_SAVED = ("out", "overwrite", "resume", "progress", "track")


class ConfigError(DataError):
    """A configuration key is unknown or its value is unusable; the message names it."""


S = TypeVar("S", bound="RunSettings")


@dataclass(kw_only=True)
class RunSettings:
    """Settings every command that trains shares: the data, how it is read and split, and
    how models train on it."""

    data: str = "movielens-100k"
    label: str | None = None
    labels: list[str] | None = None  # several 0/1 label columns: one task each
    format: str | None = None
    categorical: list[str] | None = None
    numerical: list[str] | None = None
    sequence: list[str] | None = None
    schema: str | None = None
    group: str | None = None
    time: str | None = None
    split: str = "random"
    min_count: int = 1
    rows: int | None = None
    seed: int = 2026
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 1024
    lr: float = 1e-3
    patience: int = 2
    embed_dim: int = 16
    # embedding tables step only the rows in each batch (lazy Adam; see docs/training.md)
    lazy_tables: bool = False
    device: str = "auto"
    threads: int | None = None
    progress: bool = True
    out: str | None = None
    overwrite: bool = False
    track: list[str] | None = None  # experiment trackers the finished run is sent to

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_mapping(cls: type[S], values: dict[str, Any], where: str = "config") -> S:
        """Settings from ``values`` (keys in either spelling), each checked by type and by
        its flag rule; a ``ConfigError`` names an unknown key or a bad value."""
        hints = typing.get_type_hints(cls)
        known = cls.keys()
        clean: dict[str, Any] = {}
        for raw, value in values.items():
            key = str(raw).replace("-", "_")
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown key {raw!r} in {where}{hint}; the keys are the "
                                  f"command's flag names: {', '.join(known)}")
            clean[key] = _coerce(key, value, hints[key], where)
        settings = cls(**clean)
        settings.check()
        return settings

    def check(self) -> None:
        """The flag rules of ``autodrs.validation`` for every value set here, plus the
        choices a command makes among fixed names."""
        from autodrs.validation import check_flags

        check_flags(**{k: getattr(self, k) for k in _RULED if hasattr(self, k)})
        if self.split not in ("random", "time", "given"):
            raise ConfigError(f"split: unknown split {self.split!r}; use random, time or "
                              "given")
        if self.rows is not None and self.rows < 10:
            raise ConfigError(f"rows must be at least 10 (to split 80/10/10), got {self.rows}")
        if self.track:  # an unknown or uninstalled tracker fails before any work
            from autodrs.tracking import parse_targets

            parse_targets(self.track)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        """The settings that decide what the run computes, as YAML that ``--config`` reads
        back (keys as flag names)."""
        data = {k: v for k, v in self.to_dict().items() if k not in NOT_SAVED}
        return yaml.safe_dump(data, sort_keys=False)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes``, checked like ``from_mapping``."""
        return type(self).from_mapping({**self.to_dict(), **changes})


@dataclass(kw_only=True)
class TrainSettings(RunSettings):
    """``autodrs train``: one model (a backbone or a spec file)."""

    model: str = "deepfm"
    spec: str | None = None
    bf16: bool = False
    nproc: int = 1
    backend: str = "local"
    workers: int = 2
    gpus_per_worker: float = 0.0


@dataclass(kw_only=True)
class BenchSettings(RunSettings):
    """``autodrs bench``: backbones over seeds (``baselines`` None for all of them)."""

    baselines: list[str] | None = None
    seeds: int = 3

    def __post_init__(self) -> None:
        if self.baselines == ["all"]:
            self.baselines = None


@dataclass(kw_only=True)
class SearchSettings(RunSettings):
    """``autodrs search``: stages, the budget, the baselines and the search engine."""

    methods: list[str] | None = None
    strategy: str | None = None
    budget: str | None = None
    baseline_budget: str | None = None
    search_rows: int = DEFAULT_SEARCH_ROWS
    trials: int | None = None
    backend: str = "local"
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    concurrency: int = 2
    ray_storage: str | None = None
    resume: bool = False
    model: str | None = None
    baselines: list[str] | None = None
    subsample: float | None = None
    trial_epochs: int | None = None
    pruner: str = "none"
    warm_start: bool | None = None
    fast: bool = False
    estimation: str = "train"
    objectives: list[str] = field(default_factory=lambda: ["auc"])
    memory_budget: str | None = None
    guard: bool | None = None
    tune_baselines: bool = True
    options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.baselines == ["none"]:
            self.baselines = []

    def check(self) -> None:
        super().check()
        from autodrs.search.base import METHODS, parse_budget

        parse_budget(self.budget)
        parse_budget(self.baseline_budget)
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"backend: unknown backend {self.backend!r}; use local or ray")
        if self.estimation not in ("train", "weight_sharing"):
            raise ConfigError(f"estimation: unknown estimation {self.estimation!r}; use "
                              "train or weight_sharing")
        if self.options:
            import autodrs.methods  # noqa: F401  (fills the registry)

            for name, opts in self.options.items():
                if name not in METHODS:
                    raise ConfigError(f"options: unknown method {name!r}; available: "
                                      f"{', '.join(sorted(METHODS))}")
                if not isinstance(opts, dict):
                    raise ConfigError(f"options.{name} must be a mapping of option names to "
                                      f"values, got {opts!r}")
                allowed = method_options(name)
                for key in opts:
                    if key not in allowed:
                        raise ConfigError(
                            f"options.{name}: method {name!r} has no option {key!r}; its "
                            f"options: {', '.join(sorted(allowed)) or 'none'}")


# the settings ``autodrs.validation.check_flags`` has a rule for
_RULED = ("epochs", "batch_size", "lr", "patience", "threads", "seed", "seeds", "embed_dim",
          "min_count", "trials", "subsample", "trial_epochs", "search_rows", "device")


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` as the type ``hint`` asks for (numbers widen to float; a list may be
    written as a comma-separated string), or a ``ConfigError`` naming ``key``."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str | Path):
            return str(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith(
                "budget"):
            return str(value)  # a budget in plain seconds
    elif origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
    elif origin is dict:
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    wanted = names.get(hint) or ("a list of names" if origin is list else "a mapping")
    raise ConfigError(f"{key} in {where}: expected {wanted}, got {value!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML settings file holds (``ConfigError`` when it holds none)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must be a mapping of option names to values")
    return data


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["autoctr.fidelity=full", "erase.k=3"]`` -> ``{"autoctr": {"fidelity": "full"},
    ...}``; values read as YAML scalars (``3`` a number, ``true`` a bool)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, text = item.partition("=")
        method, dot, key = target.strip().partition(".")
        if not eq or not dot or not method or not key:
            raise ConfigError(f"--set {item!r}: write it as METHOD.OPTION=VALUE, e.g. "
                              "autoctr.fidelity=full")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        out.setdefault(method, {})[key] = value
    return out


def merge_options(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-method options, later layers winning option by option."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for method, opts in layer.items():
            out.setdefault(method, {}).update(opts if isinstance(opts, dict) else {})
    return out


def defaults_of(cls: type[RunSettings]) -> dict[str, Any]:
    """Each setting's default value."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def method_options(name: str) -> dict[str, Any]:
    """The options method ``name`` may be given: those its module reads (``options_read``),
    those the modules of its package read (helpers it shares), and the search engine's own
    (``autodrs.search``: trial epochs, subsample, pruner, ...), each with the default the code
    states (None where it states none)."""
    from autodrs.search.base import METHODS

    cls = METHODS[name]
    module = Path(inspect.getsourcefile(cls) or "")
    import autodrs.search as search_pkg

    out: dict[str, Any] = {}
    for folder in (Path(search_pkg.__file__).parent, module.parent):
        for path in sorted(folder.glob("*.py")):
            for key, default in options_read(path).items():
                out.setdefault(key, default)
    out.update(options_read(module))
    out.pop("per_method", None)  # the carrier of these options, not one of them
    return out


def options_read(path: Path) -> dict[str, Any]:
    """The option names the code in ``path`` reads from a search context's options:
    ``option(ctx, "name", default)``, ``….options.get("name", default)`` and
    ``….options["name"]``, with the default as written (a literal, or its source text)."""
    tree = ast.parse(path.read_text())
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        key, default = None, None
        if isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id == "option" and len(node.args) >= 2:
                key = _literal(node.args[1])
                default = _default(node.args[2]) if len(node.args) > 2 else None
            elif (isinstance(fn, ast.Attribute) and fn.attr == "get" and node.args
                  and _is_options(fn.value)):
                key = _literal(node.args[0])
                default = _default(node.args[1]) if len(node.args) > 1 else None
        elif isinstance(node, ast.Subscript) and _is_options(node.value):
            key = _literal(node.slice)
        if isinstance(key, str) and (key not in found or found[key] is None):
            found[key] = default
    return found


def _is_options(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "options") or (
        isinstance(node, ast.Name) and node.id == "options")


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _default(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)
