"""The Python API: ``search``, ``train`` and ``load``, and the runs behind the commands.

``autodrs.search(data, ...)`` and ``autodrs.train(data, ...)`` take a file path, a built-in
dataset name, or a pandas or Polars DataFrame or an Arrow table, and return a result with
the model (``.predict(frame)``), its spec and metrics, a leaderboard, the report and
``.save(folder)``. ``autodrs.load(folder)`` reads a saved model back. Keyword settings are
the command line's flags (``epochs=3`` is ``--epochs 3``, see ``autodrs.config``).

The command line is a thin layer over ``run_search``, ``run_train`` and ``run_bench``:
they take the settings object, write the run folder and return what they found; errors are
ordinary exceptions (``autodrs.errors``), messages go to the ``autodrs`` logger.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from autodrs.config import (
    BenchSettings,
    ConfigError,
    RunSettings,
    SearchSettings,
    TrainSettings,
)
from autodrs.logs import log, quiet_optuna, run_log

if TYPE_CHECKING:
    import polars as pl

    from autodrs.data.dataset import Dataset
    from autodrs.data.schema import Schema
    from autodrs.experiment import Outcome
    from autodrs.pipeline import TunedBaseline
    from autodrs.search.base import StageResult
    from autodrs.serve.predictor import Predictor
    from autodrs.spec import ArchSpec

__all__ = ["Model", "RunResult", "SearchResult", "load", "run_bench", "run_search",
           "run_train", "search", "train"]

CONFIG_FILE = "config.yaml"


# ---------------------------------------------------------------- data
def frame_path(frame: Any) -> Path:
    """A pandas or Polars DataFrame or an Arrow table as a Parquet file in the cache,
    named by its content: the same frame maps to the same file, so its encoding is cached
    like a file's and the run's saved ``config.yaml`` can run it again."""

    from autodrs.data.dataset import default_cache_dir
    from autodrs.data.errors import DataError

    df = _polars(frame)
    if df.height == 0:
        raise DataError("the DataFrame has no rows")
    buffer = io.BytesIO()
    df.write_parquet(buffer)
    data = buffer.getvalue()
    folder = default_cache_dir() / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"frame-{hashlib.sha256(data).hexdigest()[:24]}.parquet"
    if not path.exists():
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


# the column that carries each row's split when the validation and test rows are given
SPLIT_COLUMN = "_autodrs_split"


def _polars(frame: Any) -> pl.DataFrame:
    import polars as pl

    from autodrs.data.errors import DataError

    if isinstance(frame, pl.DataFrame):
        return frame
    if type(frame).__module__.startswith(("pandas", "pyarrow")):
        df = pl.from_pandas(frame) if type(frame).__module__.startswith("pandas") else (
            pl.from_arrow(frame))
        assert isinstance(df, pl.DataFrame)
        return df
    raise DataError(f"data of type {type(frame).__name__} is not supported; give a file "
                    "path, a built-in name, a pandas or Polars DataFrame or an Arrow table")


def data_argument(data: Any, valid: Any = None, test: Any = None) -> dict[str, Any]:
    """The data settings for ``data``: a path or name as given, a frame as its file. With
    ``valid`` and ``test`` frames, the three are one file whose ``SPLIT_COLUMN`` says each
    row's split (``split: given``), so the model validates and tests on exactly those rows."""
    import polars as pl

    from autodrs.data.errors import DataError

    if valid is None and test is None:
        if isinstance(data, str | Path):
            return {"data": str(data)}
        return {"data": str(frame_path(data))}
    if valid is None or test is None:
        raise DataError("give both valid and test frames (or neither, for a split by seed)")
    parts = {name: _polars(f) for name, f in (("data", data), ("valid", valid), ("test", test))
             if not isinstance(f, str | Path)}
    if len(parts) < 3:
        raise DataError("with valid and test, data, valid and test must all be frames")
    columns = parts["data"].columns
    for name in ("valid", "test"):
        if sorted(parts[name].columns) != sorted(columns):
            missing = sorted(set(columns) - set(parts[name].columns))
            extra = sorted(set(parts[name].columns) - set(columns))
            raise DataError(f"the {name} frame's columns differ from data's: missing "
                            f"{missing or 'none'}, extra {extra or 'none'}")
    whole = pl.concat([df.select(columns).with_columns(pl.lit(k, pl.Int8).alias(SPLIT_COLUMN))
                       for k, df in enumerate(parts.values())], how="vertical_relaxed")
    return {"data": str(frame_path(whole)), "split": "given", "time": SPLIT_COLUMN}


def load_data(settings: RunSettings, seed: int | None = None) -> Dataset:
    """The dataset ``settings`` describe (``seed`` overrides the split's seed)."""
    from autodrs.data.dataset import load_dataset

    return load_dataset(
        settings.data, label=settings.label, labels=settings.labels, fmt=settings.format,
        categorical=settings.categorical, numerical=settings.numerical,
        sequence=settings.sequence, schema_file=settings.schema, group=settings.group,
        time=settings.time, split=settings.split,
        seed=settings.seed if seed is None else seed, min_count=settings.min_count,
        rows=settings.rows, progress=True)


def _train_config(settings: RunSettings, seed: int | None = None, **extra: Any) -> Any:
    import sys

    from autodrs.train.trainer import TrainConfig

    return TrainConfig(epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr,
                       patience=settings.patience,
                       seed=settings.seed if seed is None else seed, device=settings.device,
                       threads=settings.threads, lazy_tables=settings.lazy_tables,
                       progress=settings.progress and sys.stderr.isatty(), **extra)


# ---------------------------------------------------------------- results
class Model:
    """A trained model and its fitted encoders: ``predict`` scores raw rows."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    @property
    def spec(self) -> ArchSpec:
        return self.predictor.model.spec  # type: ignore[no-any-return]

    @property
    def schema(self) -> Schema:
        return self.predictor.schema

    @property
    def feature_names(self) -> list[str]:
        return self.predictor.feature_names

    def predict(self, frame: Any) -> np.ndarray:
        """Click probabilities of raw rows (a pandas or Polars DataFrame, an Arrow table or
        a mapping of column names to values), one per row."""
        import polars as pl

        if isinstance(frame, dict):
            frame = pl.DataFrame(frame)
        elif type(frame).__module__.startswith("pandas"):
            frame = pl.from_pandas(frame)
        return self.predictor.predict_frame(frame)

    def save(self, folder: str | Path) -> Path:
        """Write the model files (``model.pt``, ``spec.json``, ``schema.json``,
        ``manifest.json``) to ``folder``."""
        from autodrs.runfolder import save_model

        save_model(folder, self.predictor.model, self.schema)  # type: ignore[arg-type]
        return Path(folder)


@dataclass
class RunResult:
    """What a run found: ``result`` is its ``result.json``, ``folder`` its run folder."""

    result: dict[str, Any]
    folder: Path
    model: Model
    _temporary: bool = field(default=False, repr=False)

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Validation and test metrics of the model (``{"valid": {"auc": ...}, ...}``)."""
        return self.result["metrics"]  # type: ignore[no-any-return]

    def predict(self, frame: Any) -> np.ndarray:
        """Click probabilities of raw rows; see ``Model.predict``."""
        return self.model.predict(frame)

    def leaderboard(self) -> pl.DataFrame:
        """One row per model (this run's and each baseline, a tuned baseline as a row of its
        own), best test AUC first: whether its training was searched (``tuned``: the optim
        stage's learning rate; False for a baseline at the command's ``lr``), the learning
        rate, validation and test AUC and logloss, parameters, embedding parameters, bytes,
        seconds, the training rows and whether the epoch cap ended it while it was still
        improving. A Polars DataFrame (``.to_pandas()`` for pandas)."""
        import polars as pl

        r = self.result
        search = r.get("command") == "search"
        name = "searched" if search else str(r.get("model", "model"))
        lr = (r.get("config") or {}).get("lr")
        improving = set(r.get("still_improving") or [])
        if not search:
            improving = {name} if r.get("still_improving") is True else set()
        rows = [_board_row(name, r["metrics"], r.get("params", {}), r.get("bytes"),
                           r.get("cost", {}).get("retrain_seconds",
                                                 r.get("cost", {}).get("train_seconds")),
                           (r.get("rows") or {}).get("retrain"),
                           tuned="optim" in (r.get("methods") or []), lr=lr,
                           still_improving=name in improving)]
        tuned = r.get("tuned_baselines") or {}
        for other, entry in (r.get("baselines") or {}).items():
            rows.append(_board_row(other, entry, entry.get("params", {}), entry.get("bytes"),
                                   entry.get("seconds"), entry.get("train_rows"), tuned=False,
                                   lr=entry.get("lr"), still_improving=other in improving))
            if other in tuned:
                t = tuned[other]
                rows.append(_board_row(other, t, t.get("params", {}), t.get("bytes"),
                                       t.get("seconds"), t.get("train_rows"), tuned=True,
                                       lr=t.get("lr"),
                                       still_improving=bool(t.get("still_improving"))))
        return pl.DataFrame(rows).sort("test_auc", descending=True, nulls_last=True)

    def report(self, path: str | Path | None = None) -> Path:
        """Write the HTML report (to ``path``, or ``report.html`` in the run folder)."""
        from autodrs.report.html import build_report

        target = Path(path) if path is not None else self.folder / "report.html"
        build_report(self.result, target)
        return target

    def save(self, folder: str | Path) -> Path:
        """Copy the run folder (model files, ``result.json``, ``config.yaml``, ``run.log``,
        stages) to ``folder``, which ``autodrs.load`` reads back."""
        folder = Path(folder)
        if folder.resolve() != self.folder.resolve():
            shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return folder


@dataclass
class SearchResult(RunResult):
    """What ``search`` found: the retrained searched model, the baselines, the stages."""

    @property
    def stages(self) -> list[dict[str, Any]]:
        return self.result["stages"]  # type: ignore[no-any-return]


def _board_row(name: str, metrics: dict[str, Any], params: dict[str, Any], size: Any,
               seconds: Any, rows: Any, tuned: bool = False, lr: Any = None,
               still_improving: bool = False) -> dict[str, Any]:
    valid, test = metrics.get("valid", {}), metrics.get("test", {})
    return {"model": name, "tuned": tuned, "lr": None if lr is None else float(lr),
            "valid_auc": valid.get("auc"), "valid_logloss": valid.get("logloss"),
            "test_auc": test.get("auc"), "test_logloss": test.get("logloss"),
            "params": params.get("total"), "embedding_params": params.get("embedding"),
            "bytes": size.get("total") if isinstance(size, dict) else size,
            "seconds": None if seconds is None else float(seconds), "train_rows": rows,
            "still_improving": still_improving}


def _run_folder(out: str | None) -> tuple[Path, bool]:
    """The run folder: ``out``, or a temporary one removed with the result."""
    if out is not None:
        return Path(out), False
    return Path(tempfile.mkdtemp(prefix="autodrs-run-")), True


def _finish(cls: type[RunResult], result: dict[str, Any], folder: Path, outcome: Outcome,
            schema: Schema, temporary: bool) -> Any:
    from autodrs.serve.predictor import Predictor

    outcome.model.eval()
    done = cls(result=result, folder=folder, model=Model(Predictor(outcome.model, schema)),
               _temporary=temporary)
    if temporary:
        weakref.finalize(done, shutil.rmtree, str(folder), True)
    return done


def write_report(result: dict[str, Any], path: Path) -> bool:
    """Build the report; a failure costs only the report (result.json and the model are
    written before it) and is logged as one warning."""
    from autodrs.report.html import build_report

    try:
        build_report(result, path)
    except Exception as e:  # the run's work is saved: never end it with a traceback here
        first = str(e).strip().splitlines()
        log.warning(f"{path.name} could not be built ({type(e).__name__}: "
                    f"{first[0] if first else 'no message'}); result.json and the model are "
                    f"saved, and `autodrs report {path.parent}` tries again")
        return False
    return True


def send_to_trackers(settings: RunSettings, folder: Path) -> None:
    """Send the finished run to ``settings.track``'s trackers (``autodrs.tracking``); a
    tracker that fails costs only that export (the run is saved), with one warning."""
    if not settings.track:
        return
    from autodrs.tracking import export_run, parse_targets

    try:
        for line in export_run(folder, parse_targets(settings.track)):
            log.info(line)
    except Exception as e:  # the run's work is saved: `autodrs track` can send it again
        log.warning(f"sending the run to {', '.join(settings.track)} failed "
                    f"({type(e).__name__}: {e}); `autodrs track {folder} --to ...` tries again")


def result_skeleton(command: str, ds: Dataset, seed: int) -> dict[str, Any]:
    from autodrs.provenance import versions

    return {"command": command, "data": dict(ds.info), "seed": seed, "spec": None,
            "metrics": {}, "baselines": {}, "params": {}, "cost": {}, "stages": [],
            "versions": versions()}


def note_scale(ds: Dataset, spec: ArchSpec) -> None:
    """Warn before training when the model this data implies is unreasonable for it."""
    from autodrs.experiment import scale_warning

    text = scale_warning(ds, spec)
    if text is not None:
        log.warning(text)


def check_out(out: Path, overwrite: bool, resume: bool = False,
              can_resume: bool = False) -> None:
    """``out`` can be written and holds no run this command would replace unasked."""
    from autodrs.runfolder import check_run_folder
    from autodrs.validation import check_out_folder

    check_out_folder(out)
    check_run_folder(out, resume=resume, overwrite=overwrite, can_resume=can_resume)


def save_settings(folder: Path, settings: RunSettings) -> None:
    (folder / CONFIG_FILE).write_text(settings.to_yaml())


# ---------------------------------------------------------------- train
def run_train(settings: TrainSettings, report: bool = True) -> RunResult | None:
    """Train one model (``settings.spec`` file, or the backbone ``settings.model``), write
    the run folder and return the result; None on a data-parallel rank other than 0."""
    from autodrs.data.errors import DataError
    from autodrs.experiment import fit_spec, machine_info
    from autodrs.models.backbones import backbone_spec
    from autodrs.models.builder import count_bytes
    from autodrs.runfolder import prepare_run_folder, save_model, write_json
    from autodrs.spec import ArchSpec
    from autodrs.train import distributed

    folder, temporary = _run_folder(settings.out)
    check_out(folder, settings.overwrite)
    if settings.spec is None:
        _check_backbone(settings.model, "model", DataError)
    rank = distributed.init_from_env(settings.device)
    spec = (ArchSpec.from_json(settings.spec) if settings.spec
            else backbone_spec(settings.model, settings.embed_dim))
    ds = load_data(settings)
    spec.validate(ds.schema)
    config = _train_config(settings, precision="bf16" if settings.bf16 else "fp32")
    if rank.main:
        note_scale(ds, spec)
        prepare_run_folder(folder, settings.overwrite)
    if not rank.main:
        fit_spec(ds, spec, config)
        distributed.finish()
        return None
    with run_log(folder):
        log.debug(f"settings: {settings.to_dict()}")
        log.info(f"training {settings.model if settings.spec is None else settings.spec} on "
                 f"{ds.info['name']} ({len(ds.train):,} training rows)")
        outcome = fit_spec(ds, spec, config)
        save_model(folder, outcome.model, ds.schema)
        save_settings(folder, settings)
        result = result_skeleton("train", ds, settings.seed)
        result |= {
            "model": settings.model if settings.spec is None else str(settings.spec),
            "spec": spec.to_dict(),
            "metrics": outcome.metrics,
            "params": outcome.params,
            "bytes": count_bytes(outcome.model),
            "cost": {"train_seconds": round(outcome.seconds, 3),
                     "train_samples_per_second": round(outcome.fit.samples_per_second, 1)},
            "rows": {"retrain": len(ds.train)},
            "history": outcome.fit.history,
            "best_epoch": outcome.fit.best_epoch,
            "still_improving": outcome.fit.still_improving,
            "config": {"epochs": settings.epochs, "batch_size": settings.batch_size,
                       "lr": settings.lr, "patience": settings.patience,
                       "precision": config.precision, "lazy_tables": config.lazy_tables,
                       "world_size": rank.size},
            "settings": settings.to_dict(),
            "machine": machine_info(config),
        }
        write_json(folder / "result.json", result)
        if report:
            write_report(result, folder / "report.html")
        send_to_trackers(settings, folder)
    distributed.finish()
    return _finish(RunResult, result, folder, outcome, ds.schema, temporary)  # type: ignore[no-any-return]


def _backbones() -> list[str]:
    from autodrs.models.backbones import BACKBONES

    return list(BACKBONES)


def _check_backbone(name: str, what: str, error: type[Exception]) -> None:
    """``name`` is a backbone (or one of its aliases), else ``error`` naming it."""
    from autodrs.models.backbones import backbone_spec

    try:
        backbone_spec(name)
    except ValueError:
        raise error(f"unknown {what} {name!r}; choose from {', '.join(_backbones())}"
                    + (", or none" if what == "baseline" else "")) from None


# ---------------------------------------------------------------- bench
def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """A leaderboard of backbones over seeds; writes the run folder and returns
    ``result.json``'s content (``baselines`` is the leaderboard)."""
    from autodrs.data.errors import DataError
    from autodrs.experiment import fit_spec, machine_info
    from autodrs.models.backbones import backbone_spec
    from autodrs.runfolder import prepare_run_folder, write_json

    folder = Path(settings.out or "runs/bench")
    check_out(folder, settings.overwrite)
    names = settings.baselines or _backbones()
    for name in names:
        _check_backbone(name, "baseline", DataError)
    specs = {n: backbone_spec(n, settings.embed_dim) for n in names}
    prepare_run_folder(folder, settings.overwrite)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    t0 = time.perf_counter()
    first: Dataset | None = None
    with run_log(folder):
        log.debug(f"settings: {settings.to_dict()}")
        for k in range(settings.seeds):
            s = settings.seed + k
            ds = load_data(settings, seed=s)
            first = first or ds
            config = _train_config(settings, seed=s)
            config.progress = False
            for name, spec in specs.items():
                outcome = fit_spec(ds, spec, config)
                runs[name].append(outcome.summary())
                t = outcome.metrics["test"]
                log.info(f"seed {s} {name:>9}: test AUC {t['auc']:.4f} "
                         f"logloss {t['logloss']:.4f} ({outcome.seconds:.1f}s)")
        assert first is not None
        board = bench_leaderboard(runs)
        result = result_skeleton("bench", first, settings.seed)
        result |= {"seeds": [settings.seed + k for k in range(settings.seeds)],
                   "baselines": board, "runs": runs,
                   "cost": {"seconds": round(time.perf_counter() - t0, 2)},
                   "settings": settings.to_dict(), "machine": machine_info()}
        save_settings(folder, settings)
        write_json(folder / "result.json", result)
        (folder / "leaderboard.md").write_text(leaderboard_markdown(board, first.info["name"]))
        write_report(result, folder / "leaderboard.html")
    return result


def bench_leaderboard(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Mean test metrics over seeds per backbone (their spread where there are several
    seeds), best test AUC first."""
    board = {}
    for name, items in runs.items():
        aucs = np.array([r["metrics"]["test"]["auc"] for r in items])
        lls = np.array([r["metrics"]["test"]["logloss"] for r in items])
        board[name] = {
            "test": {"auc": float(aucs.mean()), "logloss": float(lls.mean())},
            "spread": {"auc_std": float(aucs.std()), "logloss_std": float(lls.std())},
            "params": items[0]["params"],
            "seconds": float(np.mean([r["seconds"] for r in items])),
        }
    return dict(sorted(board.items(), key=lambda kv: -kv[1]["test"]["auc"]))


def leaderboard_markdown(board: dict[str, dict[str, Any]], data_name: str) -> str:
    lines = [f"# Leaderboard: {data_name}", "",
             "| model | test AUC | ± | test logloss | ± | parameters | embedding | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in board.items():
        lines.append(
            f"| {name} | {row['test']['auc']:.4f} | {row['spread']['auc_std']:.4f} | "
            f"{row['test']['logloss']:.4f} | {row['spread']['logloss_std']:.4f} | "
            f"{row['params']['total']:,} | {row['params']['embedding']:,} | {row['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- search
def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``, ``0.5`` -> ``0.5s``: a budget as a user writes one."""
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def plan_line(names: list[str], baselines: list[str], seconds: float | None,
              baseline_seconds: float | None, search_rows: int | None,
              tuned: bool = False) -> str:
    """The first line of a search: what will run, in order, and for about how long."""
    rows = f" on at most {search_rows:,} training rows" if search_rows else ""
    parts = []
    if baselines:
        within = f" within {duration(baseline_seconds)}" if baseline_seconds is not None else ""
        how = (", each also tuned by the searched model's optim stage (same candidates and "
               "budget rule; that time included)" if tuned else "")
        parts.append(f"{len(baselines)} baseline(s) ({', '.join(baselines)}){how}{within}")
    parts.append(f"{len(names)} stage(s) ({', '.join(names)}){rows}")
    parts.append("a retrain of the result on all rows")
    when = (f"about {duration(seconds)} in all (--budget; the retrain ends with it)"
            if seconds is not None else
            "no --budget, so each stage runs its full trials and the time is not bounded")
    return f"search: {', then '.join(parts)}; {when}"


def baseline_line(name: str, outcome: Outcome, tuned: TunedBaseline | None = None) -> str:
    """The console line of a trained baseline (``tuned``: of its tuning), flagging a fit
    its part of the budget cut short and one the epoch cap ended while still improving."""
    cut = " (cut short by its share of the budget)" if outcome.fit.stopped_by_hook else ""
    if outcome.fit.still_improving:
        cut += f" (still improving at its last epoch, {outcome.fit.best_epoch})"
    if tuned is None:
        return (f"baseline {name}: validation AUC {outcome.metrics['valid']['auc']:.4f} "
                f"({outcome.seconds:.1f}s){cut}")
    extra = tuned.stage.extra
    tried = len(extra["candidates"])
    return (f"baseline {name} tuned: {extra['start']} -> lr={extra['lr']:g}, "
            f"batch={extra['batch_size']}, validation AUC "
            f"{outcome.metrics['valid']['auc']:.4f} ({tried} of {tried + extra['untried']} "
            f"candidates, {tuned.seconds:.1f}s){cut}")


def tuned_name(name: str) -> str:
    """How a tuned baseline is named where one list holds both (``still_improving``)."""
    return f"{name} (tuned)"


def tuned_entry(tuned: TunedBaseline, ds: Dataset, size: Any) -> dict[str, Any]:
    """A tuned baseline's ``result.json`` entry: the untuned entry's keys, plus the setting
    chosen and every candidate the search tried (validation figures only)."""
    o, extra = tuned.outcome, tuned.stage.extra
    return {**o.metrics, "params": o.params, "bytes": size,
            "seconds": round(tuned.seconds, 3), "fit_seconds": round(o.seconds, 3),
            "train_rows": len(ds.train), "cut_short": o.fit.stopped_by_hook,
            "lr": extra["lr"], "batch_size": extra["batch_size"],
            "best_epoch": o.fit.best_epoch, "still_improving": o.fit.still_improving,
            "candidates": extra["candidates"], "untried": extra["untried"]}


def tuning_note(plan: _Plan, names: list[str],
                not_tuned: dict[str, str] | None = None) -> dict[str, Any]:
    """Whether the baselines were tuned like the searched model, and why not when not
    (``not_tuned``: the baselines the budget left untuned, each with the reason)."""
    if plan.tune_baselines:
        return {"tuned": True, "method": "optim",
                "reason": "each baseline got the searched model's optim stage (same "
                          "candidates and budget rule); both its untuned and tuned fits "
                          "are reported", "not_tuned": dict(not_tuned or {})}
    if not plan.baselines:
        reason = "no baselines"
    elif "optim" not in names:
        reason = ("the searched model's training was not searched (no optim stage), so "
                  "neither were the baselines'")
    else:
        reason = ("--no-tune-baselines: the baselines train at --lr while the searched "
                  "model's learning rate was searched; their comparison favours it")
    return {"tuned": False, "reason": reason}


def stage_line(index: int, total: int, stage: StageResult,
               used: float | None = None, budget: float | None = None) -> str:
    """The console line of a finished stage: its time against its share, the budget used
    and left, its ranking's head, the candidate it chose among those it retrained, and the
    guard's verdict (or why it failed)."""
    share = stage.extra.get("budget_seconds")
    of = f" of {share:.1f}s" if share is not None else ""
    spent = ""
    if used is not None and budget is not None:
        spent = (f" [budget: {duration(used)} used, {duration(max(0.0, budget - used))} "
                 "left]")
    if stage.extra.get("no_result"):
        return (f"stage {index + 1}/{total} {stage.method} ({stage.strategy}) found nothing "
                f"after {stage.seconds:.1f}s ({stage.extra['no_result']}); the run goes on "
                f"from the spec the stage was given{spent}")
    if stage.extra.get("failed"):
        return (f"stage {index + 1}/{total} {stage.method} ({stage.strategy}) failed after "
                f"{stage.seconds:.1f}s ({stage.extra.get('error')}); the run goes on from "
                f"the spec the stage was given{spent}")
    line = (f"stage {index + 1}/{total} {stage.method} ({stage.strategy}): "
            f"{stage.seconds:.1f}s{of}; best first: {stage.ranking[:3]}")
    heads = stage.extra.get("heads")
    if isinstance(heads, dict) and heads.get("retrained"):
        tried = heads["retrained"]
        best = max(tried, key=lambda t: t["valid_auc"])
        weights = "gated" if best.get("gates") else "plain"
        line += (f"; chose the {best['backbone']} head, {best.get('pairs', '?')} pairs "
                 f"{weights} (validation {best['valid_auc']:.4f}) of {len(tried)} retrained")
    guard = stage.extra.get("guard")
    if isinstance(guard, dict) and "stage_valid_auc" in guard:
        verdict = "kept" if guard.get("kept") else "rejected"
        line += (f"; guard: {verdict} ({guard['stage_valid_auc']:.4f} against "
                 f"{guard['input_valid_auc']:.4f})")
    elif isinstance(guard, dict) and not guard.get("kept", True):
        line += "; guard: rejected"
    return line + spent


@dataclass
class _Plan:
    """A search's choices, resolved from its settings before any work."""

    names: list[str]
    baselines: list[str]
    model: str
    guard: bool
    seconds: float | None
    baseline_seconds: float | None
    default_pipeline: bool
    default_baselines: bool
    # the baselines get the searched model's training search (its ``optim`` stage)
    tune_baselines: bool = False


def plan_search(settings: SearchSettings) -> _Plan:
    """Resolve the defaults (the default pipeline and its baselines, the start model, the
    guard) and check every choice, before any data is read."""
    import autodrs.methods  # noqa: F401  (fills the registry)
    from autodrs.pipeline import (
        BASELINE_SHARE,
        DEFAULT_BASELINES,
        DEFAULT_PIPELINE,
        TUNED_BASELINE_SHARE,
    )
    from autodrs.search.base import METHODS, SearchError, parse_budget
    from autodrs.search.strategies import STRATEGIES

    chosen = bool(settings.methods)
    names = list(settings.methods or DEFAULT_PIPELINE)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise SearchError(f"unknown method {unknown[0]!r}; available: "
                          f"{', '.join(sorted(METHODS))}")
    if settings.strategy is not None and settings.strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {settings.strategy!r}; choose from "
                          f"{', '.join(STRATEGIES)}")
    if settings.trials is not None and settings.trials <= 0:
        raise SearchError(f"--trials must be > 0, got {settings.trials}")
    for name in names:  # a method with its own command, before any work
        command = METHODS[name].command
        if command is not None:
            raise SearchError(f"method {name!r} needs its own command: run `autodrs {command}` "
                              f"(see `autodrs {command} --help`)")
    for name in names:  # a strategy a method does not take, before any work
        accepted = METHODS[name].strategies
        if settings.strategy is not None and settings.strategy not in accepted:
            raise SearchError(f"method {name!r} does not support strategy "
                              f"{settings.strategy!r}; it supports {', '.join(accepted)}")
        # --objectives a method cannot honour: refused now, not after the baselines trained
        METHODS[name]().resolve_objectives(
            SimpleNamespace(options={"objectives": tuple(settings.objectives or ["auc"])}),
            settings.strategy or accepted[0])
    baselines = settings.baselines
    if baselines == ["all"]:
        baselines = _backbones()
    if baselines is None:
        baselines = ["deepfm"] if chosen else DEFAULT_BASELINES.split(",")
    for name in baselines:
        _check_backbone(name, "baseline", SearchError)
    model = settings.model or ("deepfm" if chosen else "auto")
    if model == "auto" and not baselines:
        model = "deepfm"  # no baselines to choose from
    if model != "auto":
        _check_backbone(model, "model", SearchError)
    seconds = parse_budget(settings.budget)
    baseline_seconds = parse_budget(settings.baseline_budget)
    tune = bool(baselines) and "optim" in names and settings.tune_baselines
    if seconds is not None and baselines:
        if baseline_seconds is None:
            baseline_seconds = (TUNED_BASELINE_SHARE if tune else BASELINE_SHARE) * seconds
        elif baseline_seconds >= seconds:
            raise SearchError(f"--baseline-budget {settings.baseline_budget} leaves nothing "
                              f"of --budget {settings.budget} for the search; give the "
                              "baselines less")
    return _Plan(names=names, baselines=list(baselines), model=model,
                 guard=settings.guard if settings.guard is not None else not chosen,
                 seconds=seconds, baseline_seconds=baseline_seconds,
                 default_pipeline=not chosen, default_baselines=settings.baselines is None,
                 tune_baselines=tune)


def choose_baselines(plan: _Plan, schema: Schema, embed_dim: int) -> list[dict[str, str]]:
    """Leave out of the default baselines those too costly for the data's width
    (``pipeline.wide_baselines``), saying so; baselines a user named all stay. Returns what
    was left out, with the reasons."""
    from autodrs.pipeline import wide_baselines

    if not plan.default_baselines:
        return []
    wide = wide_baselines(plan.baselines, schema, embed_dim)
    for name, reason in wide.items():
        log.info(f"leaving out baseline {name}: {reason}; name it in --baselines to train it")
    plan.baselines = [b for b in plan.baselines if b not in wide]
    if plan.model == "auto" and not plan.baselines:
        plan.model = "deepfm"
    return [{"model": name, "reason": reason} for name, reason in wide.items()]


def reuses_stage_fit(names: list[str], same_rows: bool, guard: bool, resume: bool,
                     start_fit: Any) -> bool:
    """Whether the retrain of the search's result is sure to be a fit its only stage made
    (``Method.fits_its_choice``, e.g. AutoCTR's full fit at ``--seed``), so the budget need
    keep no time for it: the stage searches on every row (no ``--search-rows`` sample), no
    guard replaces its spec, it is not resumed from disk (its fits are then not in memory),
    and the start's baseline fit finished (what a stage that finds nothing passes on). Held
    back otherwise, the retrain's share (3.5-4.5 minutes of 20) went unused."""
    from autodrs.search.base import get_method

    return (len(names) == 1 and get_method(names[0]).fits_its_choice and same_rows
            and not guard and not resume and start_fit is not None
            and not start_fit.fit.stopped_by_hook)


def run_search(settings: SearchSettings, report: bool = True) -> SearchResult:
    """Train the baselines, search on (a sample of) the data in stages, retrain the result
    on all rows, compare it with the baselines, write the run folder and return it all."""
    from autodrs.data.dataset import scored_on_sample
    from autodrs.experiment import (
        fit_spec,
        machine_info,
        shared_fits,
        still_improving,
        with_training,
    )
    from autodrs.models.backbones import backbone_spec
    from autodrs.models.builder import count_bytes
    from autodrs.pipeline import (
        PIPELINE_OPTIONS,
        RETRAIN_SHARE,
        SHRINK_LOGLOSS_TOLERANCE,
        SHRINK_TOLERANCE,
        ValidationGuard,
        fit_baselines,
        inapplicable_stages,
        sample_rows,
        search_sample,
        stage_weights,
        tune_baseline,
    )
    from autodrs.runfolder import (
        check_same_data,
        data_identity,
        prepare_run_folder,
        save_data_identity,
        save_model,
        write_json,
    )
    from autodrs.search.base import SearchContext
    from autodrs.search.stages import run_stages
    from autodrs.train.trainer import TimeLimit

    started = time.monotonic()  # the budget bounds the whole run, from here
    plan = plan_search(settings)
    names = plan.names
    out_dir, temporary = _run_folder(settings.out)
    check_out(out_dir, settings.overwrite, resume=settings.resume, can_resume=True)
    log.info(plan_line(names, plan.baselines, plan.seconds, plan.baseline_seconds,
                       settings.search_rows, plan.tune_baselines))
    model = plan.model
    base = backbone_spec("deepfm" if model == "auto" else model, settings.embed_dim)
    ds = load_data(settings)
    base.validate(ds.schema)
    left_out = choose_baselines(plan, ds.schema, settings.embed_dim)
    base_specs = {n: backbone_spec(n, settings.embed_dim) for n in plan.baselines}
    identity = data_identity(settings.to_dict(), ds.info)
    if settings.resume:  # finished stages are reused only on the data they were searched on
        check_same_data(out_dir, identity)
    skipped: list[dict[str, str]] = []
    if plan.default_pipeline:  # the default pipeline leaves out what has nothing to work on
        for name, reason in inapplicable_stages(names, ds.schema).items():
            log.info(f"skipping {name}: {reason}")
            skipped.append({"method": name, "reason": reason})
        names = [n for n in names if n not in {s["method"] for s in skipped}]
    config = _train_config(settings)
    note_scale(ds, base)
    sample = search_sample(ds, settings.search_rows, settings.seed)
    if sample is not ds:
        log.info(f"the stages search on {len(sample.train):,} of {len(ds.train):,} training "
                 "rows (--search-rows); the retrain and the baselines train on all of them")
        # ... and are validated and tested on the sample's held-out rows (all on the same)
        ds = scored_on_sample(ds, sample)
    prepare_run_folder(out_dir, settings.overwrite)
    save_settings(out_dir, settings)
    save_data_identity(out_dir, identity)
    options: dict[str, Any] = {"pruner": settings.pruner,
                               "fast": settings.fast, "estimation": settings.estimation,
                               "objectives": tuple(settings.objectives or ["auc"]),
                               "per_method": settings.options}
    if settings.warm_start is not None:  # unset: each method's own default (AutoCTR's)
        options["warm_start"] = settings.warm_start
    if settings.subsample is not None:
        options["subsample"] = settings.subsample
    if settings.trial_epochs is not None:
        options["epochs"] = settings.trial_epochs
    if settings.memory_budget is not None:
        options["memory_budget"] = settings.memory_budget
    if settings.backend == "ray":
        from autodrs.search.raytune import check_resources

        check_resources(settings.cpus_per_trial, settings.gpus_per_trial, settings.concurrency)
        options |= {"ray_cpus_per_trial": settings.cpus_per_trial,
                    "ray_gpus_per_trial": settings.gpus_per_trial,
                    "ray_concurrency": settings.concurrency,
                    "ray_storage": settings.ray_storage}
    if plan.guard:  # stages choose as the guard judges: the smallest model within tolerance
        options["tolerance"] = SHRINK_TOLERANCE
        options["logloss_tolerance"] = SHRINK_LOGLOSS_TOLERANCE
    if plan.default_pipeline:  # the default pipeline's interaction stage chooses its head
        options.update(PIPELINE_OPTIONS)
    with run_log(out_dir), quiet_optuna(), shared_fits():  # a fit asked for twice runs once
        log.debug(f"settings: {settings.to_dict()}")
        # the baselines train first, on all rows, within their share of the budget; each
        # is then tuned as the searched model's optim stage will tune it (same options)
        tuned: dict[str, TunedBaseline] = {}
        optim_options = {**options, **settings.options.get("optim", {})}

        not_tuned: dict[str, str] = {}

        def tune(name: str, spec: ArchSpec, left: Any) -> None:
            done = tune_baseline(sample, ds, spec, config, optim_options, left)
            if done is None:
                not_tuned[name] = "its part of the baselines' budget ran out before tuning"
                log.info(f"baseline {name} not tuned: {not_tuned[name]}")
                return
            tuned[name] = done
            log.info(baseline_line(name, done.outcome, done))

        t_base = time.perf_counter()
        fits = fit_baselines(ds, base_specs, config, plan.baseline_seconds,
                             on_fit=lambda n, o: log.info(baseline_line(n, o)),
                             tune=tune if plan.tune_baselines else None)
        baseline_time = time.perf_counter() - t_base
        if plan.tune_baselines:
            for name in fits.keys() - tuned.keys() - not_tuned.keys():
                not_tuned[name] = "its fit at --lr used its whole part of the baselines' budget"
                log.info(f"baseline {name} not tuned: {not_tuned[name]}")
        start: dict[str, Any] = {"model": model}
        start_name = model
        if model == "auto":  # the search starts from the baseline that validates best
            # (each at its better fit: tuned, or at --lr where the budget left it untuned)
            valid = {n: max(o.metrics["valid"]["auc"], tuned[n].outcome.metrics["valid"]["auc"]
                            if n in tuned else float("-inf")) for n, o in fits.items()}
            start_name = max(valid, key=lambda n: (valid[n], n == "deepfm"))
            base = base_specs[start_name].copy()
            which = "tuned baselines" if tuned else "baselines"
            start = {"model": start_name, "chosen_by": f"validation AUC of the {which}",
                     "valid_auc": {n: round(v, 6) for n, v in valid.items()}}
            log.info(f"starting from {start_name} (best validation AUC of the {which}, "
                     f"{valid[start_name]:.4f})")
        known = fits.get(start_name)
        if known is not None and not known.fit.stopped_by_hook:
            # what a retrain of the start costs on the stages' rows: the stages' and the
            # guard's estimate
            options["retrain_seconds"] = round(
                known.seconds * len(sample.train) / len(ds.train), 3)
        left = (None if plan.seconds is None
                else max(0.0, plan.seconds - (time.monotonic() - started)))
        ctx = SearchContext(dataset=sample, spec=base, train=config, seed=settings.seed,
                            out_dir=out_dir, budget_seconds=left, trials=settings.trials,
                            strategy=settings.strategy, options=options,
                            resume=settings.resume, backend=settings.backend,
                            ray_address=settings.ray_address)

        def starting(index: int) -> None:
            used = time.monotonic() - started
            spent = ("" if plan.seconds is None else
                     f" [budget: {duration(used)} used, "
                     f"{duration(max(0.0, plan.seconds - used))} left]")
            log.info(f"stage {index + 1}/{len(names)} {names[index]}: running{spent}")

        def progress(index: int, stage: StageResult) -> None:
            used = time.monotonic() - started
            log.info(stage_line(index, len(names), stage, used, plan.seconds))
            if index + 1 < len(names):
                starting(index + 1)

        # what is left of the budget covers the stages and the retrain: the stages stop in
        # time to leave a share of it for the retrain (at least what the start's fit on all
        # rows took, at most half), which ends with the budget
        reserve = 0.0
        if left is not None:
            full = known.seconds if known is not None else 0.0
            reserve = max(RETRAIN_SHARE * left, min(full, 0.5 * left))
            if reuses_stage_fit(names, sample is ds, plan.guard, settings.resume, known):
                reserve = 0.0  # the retrain is the stage's own fit (shared_fits): no time
        t0 = time.perf_counter()
        checker = (ValidationGuard(sample, config, remaining=ctx.remaining, reserve=reserve,
                                   retrain_seconds=options.get("retrain_seconds", 0.0))
                   if plan.guard else None)
        # a stage that fails is recorded and the run goes on from its input spec
        starting(0)
        stages = run_stages(ctx, names, on_stage=progress, weights=stage_weights(names),
                            reserve=reserve, guard=checker, keep_going=True)
        search_seconds = time.perf_counter() - t0
        spec = stages[-1].spec
        log.info(f"retraining the result on all {len(ds.train):,} training rows")
        # under a budget the retrain ends with it (its scoring included), flagged cut_short
        final = fit_spec(ds, spec, config, hooks=None if plan.seconds is None else [TimeLimit(
            lambda: plan.seconds - (time.monotonic() - started))])  # type: ignore[operator]
        save_model(out_dir, final.model, ds.schema)
        compared: dict[str, Any] = {
            name: {**o.metrics, "params": o.params, "bytes": count_bytes(o.model),
                   "seconds": round(o.seconds, 3), "train_rows": len(ds.train),
                   "cut_short": o.fit.stopped_by_hook,
                   "lr": with_training(config, base_specs[name]).lr,
                   "best_epoch": o.fit.best_epoch, "still_improving": o.fit.still_improving}
            for name, o in fits.items()}
        tuned_rows = {name: tuned_entry(t, ds, count_bytes(t.outcome.model))
                      for name, t in tuned.items()}
        result = result_skeleton("search", ds, settings.seed)
        result |= {
            "methods": names, "strategy": settings.strategy, "backend": settings.backend,
            "model": start["model"], "start": start,
            "spec": spec.to_dict(),
            "metrics": final.metrics,
            "baselines": compared,
            # the same baselines after the searched model's training search (optim)
            "tuned_baselines": tuned_rows,
            "baseline_tuning": tuning_note(plan, names, not_tuned),
            "params": final.params,
            "bytes": count_bytes(final.model),
            "cost": {"search_seconds": round(search_seconds, 3),
                     "retrain_seconds": round(final.seconds, 3),
                     "retrain_cut_short": final.fit.stopped_by_hook,
                     "baseline_seconds": round(baseline_time, 3),
                     "baseline_tuning_seconds": round(sum(t.seconds for t in tuned.values()), 3),
                     "total_seconds": round(time.monotonic() - started, 3),
                     "train_samples_per_second": round(final.fit.samples_per_second, 1),
                     "budget_seconds": plan.seconds,
                     "baseline_budget_seconds": plan.baseline_seconds,
                     "trials_per_stage": settings.trials},
            # the rows each part trained on: the stages on a sample of a large table, the
            # retrain and the baselines on all rows
            "rows": {"search_rows": settings.search_rows or None,
                     "stages": sample_rows(sample), "retrain": len(ds.train),
                     "baselines": len(ds.train),
                     # the held-out rows the retrain and the baselines were scored on
                     "scored": {"valid": len(ds.valid), "test": len(ds.test)}},
            "stages": [{**s.to_dict(), "train_rows": len(sample.train)} for s in stages],
            "skipped_stages": skipped,
            "skipped_baselines": left_out,
            # fits that validated best at their last epoch: the epoch cap stopped them
            "still_improving": still_improving(
                {"searched": final, **fits,
                 **{tuned_name(n): t.outcome for n, t in tuned.items()}}),
            "config": {**vars(with_training(config, spec)), "progress": False},
            "settings": settings.to_dict(),
            "history": final.fit.history,
            "machine": machine_info(config),
        }
        write_json(out_dir / "result.json", result)
        if report:
            write_report(result, out_dir / "report.html")
        send_to_trackers(settings, out_dir)
        cut = [name for name, row in compared.items() if row["cut_short"]] + [
            tuned_name(name) for name, row in tuned_rows.items() if row["cut_short"]]
        if cut:
            log.warning(f"baseline(s) {', '.join(cut)} were cut short by their share of the "
                        "budget (result.json flags them cut_short); a larger "
                        "--baseline-budget trains them out")
        failed = [s for s in stages if s.extra.get("failed")]
        if failed:
            log.warning(f"{len(failed)} of {len(stages)} stages failed ("
                        + "; ".join(f"{s.method}: {s.extra['error']}" for s in failed)
                        + "); the model is the best spec the other stages gave, and "
                        "result.json records each failure")
    return _finish(SearchResult, result, out_dir, final, ds.schema, temporary)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- public functions
def _settings(cls: type[Any], data: Any, given: dict[str, Any],
              options: dict[str, Any], valid: Any = None, test: Any = None) -> Any:
    clash = sorted(set(given) & set(options))
    if clash:
        raise ConfigError(f"{clash[0]!r} given twice")
    values = {k: v for k, v in {**given, **options}.items() if v is not None}
    source = data_argument(data, valid, test)
    if "split" in source and ({"split", "time"} & set(values)):
        raise ConfigError("split and time cannot be set with valid and test frames: those "
                          "frames are the split")
    return cls.from_mapping({**values, **source}, where="the arguments")


def search(data: Any = "movielens-100k", label: str | None = None,
           budget: str | float | None = None, methods: list[str] | str | None = None,
           seed: int = 2026, out: str | Path | None = None, valid: Any = None,
           test: Any = None, **settings: Any) -> SearchResult:
    """Search a CTR model's design on ``data`` and return the retrained result.

    ``data`` is a file path, a built-in dataset name, a pandas or Polars DataFrame or an
    Arrow table (its ``label`` column holds 0/1 clicks), split 80/10/10 by ``seed`` unless
    ``valid`` and ``test`` frames are given; ``budget`` bounds the whole run
    (``"10m"``, or seconds); ``methods`` are search methods run as stages in order (default:
    the default pipeline); ``out`` a run folder to write (default: a temporary one, see
    ``SearchResult.save``). Other keywords are ``autodrs search``'s flags (``epochs=3``,
    ``baselines=["fm"]``, ``options={"autoctr": {"fidelity": "full"}}``)."""
    values = _settings(SearchSettings, data,
                       {"label": label, "budget": budget, "methods": methods, "seed": seed,
                        "out": None if out is None else str(out)}, settings, valid, test)
    values.progress = settings.get("progress", False)
    return run_search(values, report=out is not None)


def train(data: Any = "movielens-100k", label: str | None = None, model: str = "deepfm",
          spec: str | Path | None = None, seed: int = 2026, out: str | Path | None = None,
          valid: Any = None, test: Any = None, **settings: Any) -> RunResult:
    """Train one model (a backbone by name, or an ArchSpec JSON file) on ``data`` (as for
    ``search``) and return it with its metrics: ``autodrs train`` in Python. Other keywords
    are that command's flags."""
    values = _settings(TrainSettings, data,
                       {"label": label, "model": model,
                        "spec": None if spec is None else str(spec), "seed": seed,
                        "out": None if out is None else str(out)}, settings, valid, test)
    values.progress = settings.get("progress", False)
    done = run_train(values, report=out is not None)
    if done is None:
        raise RuntimeError("train() ran on a data-parallel rank other than 0, which writes "
                           "nothing; use the result on rank 0")
    return done


def load(folder: str | Path) -> Model:
    """The model saved in ``folder`` (by ``save``, ``autodrs train`` or ``autodrs search``),
    checked against its manifest; ``.predict(frame)`` scores raw rows."""
    from autodrs.serve.predictor import Predictor

    return Model(Predictor.from_folder(folder))
