"""The default search pipeline and YAML run configuration.

``autodrs search`` without ``--methods`` runs the default pipeline: the learning rate the
model trains with (``optim``: every later stage's retrains, and the final one, train at it),
then the numerical fields' encoder where there are any, then feature selection (AutoField
ranked, ERASE-chosen k), then the embeddings (frequency pruning of rare values, AutoDim's
per-field dims), then interactions (AutoFIS), each stage refining the spec, then a retrain
from scratch evaluated next to hand-crafted baselines. The encoder comes first because
selection ranks fields by what the model makes of them: a non-monotone numerical field read
linearly looks like noise (on the planted synthetic data AutoField scored it among the noise
fields when linear and among the relevant ones when bucketised). A stage with nothing to
work on in the data (``inapplicable_stages``: no categorical field for the embedding stages)
is skipped with a line saying so, and a stage that fails is recorded as failed, with its
reason, while the run goes on from the spec it was given: finished work is never lost.

``--budget`` covers the whole command: reading the data, the baselines, the stages and the
retrain. The baselines train first, within ``BASELINE_SHARE`` of it (``TUNED_BASELINE_SHARE``
when they are tuned, or ``--baseline-budget``), each given an equal part of what is left of
that share (a baseline its part cuts short keeps its best epoch and is flagged). When the
pipeline searches the training (``optim``) each baseline gets that search too
(``tune_baseline``, within its part), so the leaderboard compares the searched model with
baselines trained as well as it is; the search then starts from the baseline whose tuned
fit validates best, and its own ``optim`` stage reuses that tuning's fits. Of what remains, ``RETRAIN_SHARE`` (at least as long as the
start baseline's fit took, at most half) is kept back for the retrain, which may also use
whatever the stages leave; the rest goes to the stages in proportion to ``STAGE_WEIGHTS``,
each stage's unused time passing to the stages after it. Every fit ends within its part
(``trainer.TimeLimit``, and ``trainer.deadline`` around each stage), its last validation and
test pass included: the limit keeps back what those passes take, timed on the model. The
retrain ends with the budget (``cut_short`` in result.json when it did), so the command ends
within its budget plus what the stop takes (the step under way, one model's scoring beyond
the estimate, writing the run folder). On a sampled table the fits on all rows are scored on
the sample's validation and test rows (``dataset.scored_on_sample``).

On a large table the stages search on a sample (``search_sample``): ``--search-rows``
training rows (``DEFAULT_SEARCH_ROWS`` by default) drawn by the seed, with the validation and
test splits cut by the same fraction but never below ``MIN_EVAL_ROWS``; the final retrain
and the baselines train on every row. The weights follow what each stage
spends its time on: the learning rate retrains the start once per candidate rate, feature
selection retrains the model once per ERASE point (log2 n retrains by bisection under a
budget), frequency pruning retrains once per threshold of its grid, the numerical-encoder
choice once per encoder (two retrains of the full model, before selection has made it
smaller), AutoDim trains a supernet with a table per candidate dim, AutoFIS trains its gated
supernet (at least 400 steps) under two heads and retrains each result. The run itself
(``autodrs.api.run_search``) takes its settings from ``autodrs.config.SearchSettings``.

Each stage of the default pipeline is guarded on validation data (``ValidationGuard``): the
spec a stage proposes is retrained with the run's trainer and kept only when its validation
AUC is at least that of the spec the stage started from, or, with fewer embedding
parameters, within ``SHRINK_TOLERANCE`` of the AUC and ``SHRINK_LOGLOSS_TOLERANCE`` of the
logloss of the best spec kept so far (so the tolerance does not add up over the stages), so
a stage whose search went wrong (an embedding search that shrank every table, a selection
that dropped a useful field) cannot make the pipeline's model worse than its input beyond
noise, and between models that validate alike the smaller one goes on. The stages choose by
the same rule (ERASE's smallest k and frequency pruning's largest threshold within that
tolerance of their best). The retrains are shared with the rest of the run
(``experiment.shared_fits``): the start baseline is the first stage's reference, a stage's
own retrains (ERASE points, frequency thresholds, encoders) serve its judging, and the last
kept spec is the final retrain. The test split is never looked at.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from autodrs.config import (  # noqa: F401  (the pipeline's settings, named here too)
    BASELINE_SHARE,
    DEFAULT_BASELINES,
    DEFAULT_SEARCH_ROWS,
    TUNED_BASELINE_SHARE,
)
from autodrs.data.dataset import Dataset, EncodedData
from autodrs.data.schema import Schema
from autodrs.experiment import Outcome, cached_fit, fit_key, fit_spec
from autodrs.search.base import StageResult, validates_alike
from autodrs.spec import ArchSpec
from autodrs.train.trainer import TimeLimit, TrainConfig, deadline, release_weights

DEFAULT_PIPELINE = ("optim", "autodis", "autofield", "frequency", "autodim", "autofis")
# default stages that only apply to some data: skipped where the data has nothing for them
NEEDS_NUMERICAL = ("autodis",)
NEEDS_CATEGORICAL = ("frequency", "autodim")
NEEDS_TWO_FIELDS = ("autofield", "autofis")
# options of the default pipeline's stages: AutoFIS searches under the DeepFM head and
# under the FM head (no MLP) and keeps the head whose retrain validates best
PIPELINE_OPTIONS = {"backbone": "auto"}
STAGE_WEIGHTS = {"optim": 2.0, "autodis": 2.0, "autofield": 3.0, "frequency": 2.0,
                 "autodim": 2.0, "autofis": 2.0}
RETRAIN_SHARE = 0.2
# the sampled validation and test splits keep at least this many rows (or all they have):
# the stages and the guard choose by validation AUC, which is noisy on small splits
MIN_EVAL_ROWS = 100_000
GUARD_TOLERANCE = 0.0  # a stage's spec may validate this much worse and still be kept
# ... and this much worse when it has fewer embedding parameters: between two models that
# validate alike the smaller is preferred (differences this small are noise on validation
# sets of ~10k rows; on movielens-100k a second fit of one spec moves by about as much)
SHRINK_TOLERANCE = 0.001
# ... provided its validation logloss is also within this of that model's (AUC alone is a
# coarse judge here: on movielens-100k, dropping two fields the model used moved validation
# AUC by 0.0009 and validation logloss by 0.005, and cost 0.007 of test AUC)
SHRINK_LOGLOSS_TOLERANCE = 0.002


# the default baselines whose cost grows with the square of the fields are left out beyond
# these: IPNN's inner products (one per field pair) and DCN-V2's cross layers (width x width
# each, the width being fields x embedding dim). A 74-field table would give IPNN 2,701 pairs
# and DCN-V2 a 1,184-wide input: each slower to train than the whole search's share of time.
MAX_BASELINE_PAIRS = 1000
MAX_CROSS_WIDTH = 1024


def wide_baselines(names: list[str], schema: Schema, embed_dim: int) -> dict[str, str]:
    """The baselines among ``names`` that are too costly for this data's width, each with
    the reason."""
    fields = len(schema.field_names)
    pairs, width = fields * (fields - 1) // 2, fields * embed_dim
    reasons = {}
    if "ipnn" in names and pairs > MAX_BASELINE_PAIRS:
        reasons["ipnn"] = (f"{fields} fields make {pairs:,} pairs for its inner products "
                           f"(more than {MAX_BASELINE_PAIRS:,})")
    if "dcnv2" in names and width > MAX_CROSS_WIDTH:
        reasons["dcnv2"] = (f"its cross layers would be {width:,} wide ({fields} fields x "
                            f"{embed_dim} dims; more than {MAX_CROSS_WIDTH:,})")
    return reasons


def search_sample(ds: Dataset, rows: int | None, seed: int) -> Dataset:
    """``ds`` with its training split cut to about ``rows`` rows drawn by ``seed``, and its
    validation and test splits cut by the same fraction (at least ``MIN_EVAL_ROWS`` each);
    ``ds`` itself when ``rows`` is None or 0 or the training split is no larger. The sample
    is held in memory; ``info["search_sample"]`` records each split's rows."""
    n = len(ds.train)
    if not rows or n <= rows:
        return ds
    frac = rows / n
    parts = {name: _sample_split(ds.split(name), target, seed + k)
             for k, (name, target) in enumerate((
                 ("train", rows),
                 ("valid", max(MIN_EVAL_ROWS, round(frac * len(ds.valid)))),
                 ("test", max(MIN_EVAL_ROWS, round(frac * len(ds.test))))))}
    info = dict(ds.info)
    info["search_sample"] = {"search_rows": rows, "seed": seed,
                             **{name: len(part) for name, part in parts.items()}}
    return Dataset(ds.schema, parts["train"], parts["valid"], parts["test"], info)


def _sample_split(split: Any, rows: int, seed: int) -> Any:
    """About ``rows`` rows of one split, drawn by ``seed`` and kept in their order."""
    if len(split) <= rows:
        return split
    if isinstance(split, EncodedData):
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        return split.subset(order[:rows].sort().values)
    return split.sample(rows, seed)  # on disk: a row-hash sample, read into memory


def fit_baselines(ds: Dataset, specs: dict[str, ArchSpec], config: TrainConfig,
                  seconds: float | None = None,
                  on_fit: Callable[[str, Outcome], Any] | None = None,
                  tune: Callable[[str, ArchSpec, Callable[[], float | None]], Any] | None = None,
                  ) -> dict[str, Outcome]:
    """Train each baseline in turn. Under ``seconds`` each gets an equal part of the time
    left (a fast one passes its unused time on); a fit its part cuts short keeps its best
    epoch and has ``fit.stopped_by_hook`` set. ``on_fit`` is called after each fit; ``tune``
    (``tune_baseline``'s caller) after a fit its part did not cut short, with the baseline
    and a clock of the seconds left of its part (None without ``seconds``), so a baseline's
    part covers its tuning too."""
    end = None if seconds is None else time.monotonic() + seconds
    outcomes: dict[str, Outcome] = {}
    for i, (name, spec) in enumerate(specs.items()):
        hooks: list[Any] = []
        left: Callable[[], float | None] = lambda: None  # noqa: E731
        if end is not None:
            deadline = time.monotonic() + max(0.0, end - time.monotonic()) / (len(specs) - i)
            left = lambda d=deadline: d - time.monotonic()  # noqa: E731
            hooks = [TimeLimit(left)]
        outcomes[name] = fit_spec(ds, spec, config, hooks=hooks)
        if on_fit is not None:
            on_fit(name, outcomes[name])
        if tune is not None and not outcomes[name].fit.stopped_by_hook:
            tune(name, spec, left)  # a fit cut short has spent its part: none to tune in
        if outcomes[name].fit.stopped_by_hook:
            # no later fit is handed a cut-short one (shared fits keep none): only its
            # figures are used, so its weights are freed before the next baseline trains
            release_weights(outcomes[name].model)
    return outcomes


@dataclass
class TunedBaseline:
    """A baseline after the training search the searched model gets: ``stage`` is the
    ``optim`` stage's result on the baseline (its candidates and choice), ``outcome`` the fit
    of the chosen setting on all training rows, ``seconds`` the whole tuning's time."""

    outcome: Outcome
    stage: StageResult
    seconds: float


def tune_baseline(sample: Dataset, ds: Dataset, spec: ArchSpec, config: TrainConfig,
                  options: dict[str, Any],
                  remaining: Callable[[], float | None] = lambda: None) -> TunedBaseline | None:
    """``spec`` tuned as the pipeline's ``optim`` stage tunes the searched model: the same
    method on the same rows (``sample``, the stages' rows), with the same ``options`` (the
    stage's: its candidates) and budget rule (no new candidate once the time ``remaining``
    cannot pay for one). The chosen setting is then fit on all rows ``ds``, as the searched
    model's final retrain is: the candidate's own fit when ``sample`` is ``ds`` (shared
    fits), else a fit within what is left (cut short and flagged when it runs out). Every
    fit ends with what ``remaining`` allows (``trainer.deadline``, as a stage's do); None
    when nothing is left to tune in."""
    from autodrs.search.base import SearchContext, get_method

    t0 = time.perf_counter()
    left = remaining()
    if left is not None and left <= 0:
        return None
    ctx = SearchContext(dataset=sample, spec=spec.copy(), train=config, seed=config.seed,
                        budget_seconds=left, options=options)
    with deadline(None if left is None else time.monotonic() + left):
        stage = get_method("optim").search(ctx)
        hooks = [] if left is None else [TimeLimit(remaining)]
        outcome = fit_spec(ds, stage.spec, config, hooks=hooks)
    return TunedBaseline(outcome, stage, time.perf_counter() - t0)


def sample_rows(ds: Dataset) -> dict[str, int]:
    """The rows of each split of ``ds``."""
    return {name: len(ds.split(name)) for name in ("train", "valid", "test")}


def inapplicable_stages(methods: list[str], schema: Schema) -> dict[str, str]:
    """The default pipeline's stages that have nothing to work on in this data, each with
    the reason (a numerical-only table has no embedding table to size)."""
    fields = schema.field_names
    reasons = {}
    for name in methods:
        if name in NEEDS_NUMERICAL and not schema.numerical:
            reasons[name] = "the data has no numerical fields to encode"
        elif name in NEEDS_CATEGORICAL and not schema.categorical:
            reasons[name] = "the data has no categorical fields, so no embedding table to size"
        elif name in NEEDS_TWO_FIELDS and len(fields) < 2:
            reasons[name] = f"the data has {len(fields)} field; the stage needs two or more"
    return reasons


def stage_weights(methods: list[str]) -> list[float]:
    """Relative budget shares of ``methods`` as stages: ``STAGE_WEIGHTS`` for the default
    pipeline's methods, their mean weight for any other."""
    default = sum(STAGE_WEIGHTS.values()) / len(STAGE_WEIGHTS)
    return [STAGE_WEIGHTS.get(m, default) for m in methods]


class ValidationGuard:
    """Keep a stage's spec only when it validates at least as well as the stage's input,
    or, when it has fewer embedding parameters, when it validates alike the spec kept so
    far with the best validation AUC (the input or an earlier one): within ``shrink_tolerance``
    of its AUC and ``logloss_tolerance`` of its logloss (``validates_alike``). The tolerance
    is measured from that best, not from each stage's input, so it does not add up over the
    stages: on movielens-100k three shrinking stages in a row each gave up 0.0005-0.0009
    within a per-stage tolerance, 0.0022 in all.

    Called by ``run_stages`` with the input spec and the stage's result; returns the spec
    the next stage starts from and records the decision in ``result.extra["guard"]``. Both
    specs are retrained from scratch by ``fit_spec`` with the run's config (so the figures
    are those of the final retrain and of the baselines); outcomes are cached by spec.
    Under a budget the guard does not start retrains the time left (less ``reserve``) cannot
    pay for, judged by the longest retrain so far (before any, by the stage's epoch time),
    and stops a retrain that runs past it; either way the stage's spec is not taken (an
    unverified change could make the model worse) and the reason is recorded. ``run_stages``
    shortens each stage's share by ``expected_seconds()`` so the judging fits in.
    """

    def __init__(self, dataset: Dataset, config: TrainConfig, tolerance: float = GUARD_TOLERANCE,
                 remaining: Callable[[], float | None] | None = None,
                 reserve: float = 0.0, retrain_seconds: float = 0.0,
                 shrink_tolerance: float = SHRINK_TOLERANCE,
                 logloss_tolerance: float | None = SHRINK_LOGLOSS_TOLERANCE) -> None:
        self.dataset = dataset
        self.config = config
        self.tolerance = tolerance
        self.shrink_tolerance = max(tolerance, shrink_tolerance)
        self.remaining = remaining or (lambda: None)
        self.reserve = reserve
        self.outcomes: dict[str, Outcome] = {}
        self.longest = retrain_seconds  # a known retrain's cost, before the guard's own
        self.logloss_tolerance = logloss_tolerance
        # the validation (AUC, logloss) of the spec kept so far with the best AUC
        self.best: tuple[float, float] = (float("-inf"), float("inf"))

    def key(self, spec: ArchSpec) -> str:
        """The spec as the model sees it: provenance dropped, all fields spelt out."""
        return fit_key(self.dataset, spec, self.config)

    def outcome(self, spec: ArchSpec) -> Outcome | None:
        """The cached retrain of ``spec``, if the guard trained it."""
        return self.outcomes.get(self.key(spec))

    def left(self) -> float | None:
        left = self.remaining()
        return None if left is None else left - self.reserve

    def fit(self, spec: ArchSpec) -> Outcome | None:
        """The retrain of ``spec``; None when the budget ended it early (no fair judge)."""
        key = self.key(spec)
        if key not in self.outcomes:  # fit_spec may hand back a fit the run already did
            outcome = fit_spec(self.dataset, spec, self.config, hooks=[TimeLimit(self.left)])
            self.longest = max(self.longest, outcome.seconds)
            if outcome.fit.stopped_by_hook:
                return None
            self.outcomes[key] = outcome
        return self.outcomes[key]

    def __call__(self, before: ArchSpec, result: StageResult) -> ArchSpec:
        proposed = result.spec
        if self.key(before) == self.key(proposed):
            result.extra["guard"] = {"kept": True, "reason": "the stage left the spec as it was"}
            return proposed
        # retrains still to pay for: neither judged yet nor done by the run (shared fits)
        todo = sum(self.key(s) not in self.outcomes
                   and cached_fit(self.dataset, s, self.config) is None
                   for s in (before, proposed))
        left = self.left()
        # before the first retrain, the stage's own epoch time (where it reports one) is
        # the best guess of a retrain's cost
        guess = self.longest or self.config.epochs * float(result.extra.get("epoch_seconds", 0))
        if todo and left is not None and (left <= 0 or left < todo * guess):
            return self._unchecked(result, before, f"{todo} retrain(s) of about {guess:.0f}s "
                                                   f"do not fit in the {max(0.0, left):.0f}s left")
        t0 = time.perf_counter()
        fits = [self.fit(before), None]
        if fits[0] is not None:
            fits[1] = self.fit(proposed)
        if fits[0] is None or fits[1] is None:
            return self._unchecked(result, before, "the budget ran out during the guard's "
                                                   "retrain")
        (base, base_ll), (new, new_ll) = ((f.metrics["valid"]["auc"],
                                           f.metrics["valid"]["logloss"]) for f in fits)
        self._note_kept(base, base_ll)
        sizes = [f.params["embedding"] for f in fits]
        smaller = sizes[1] < sizes[0]
        tolerance = self.shrink_tolerance if smaller else self.tolerance
        kept = new >= base - self.tolerance or (smaller and validates_alike(
            new, new_ll, *self.best, tolerance, self.logloss_tolerance))
        if not kept:
            reason = "the stage's spec validates worse than its input, which is kept"
        elif new >= base - self.tolerance:
            reason = "the stage's spec validates at least as well as its input"
        else:
            reason = ("the stage's spec validates within the tolerance of the best spec kept "
                      "so far, with fewer embedding parameters")
        result.extra["guard"] = {
            "kept": kept, "checked": True, "input_valid_auc": round(base, 6),
            "stage_valid_auc": round(new, 6), "tolerance": tolerance,
            "input_embedding_params": int(sizes[0]), "stage_embedding_params": int(sizes[1]),
            "input_valid_logloss": round(base_ll, 6), "stage_valid_logloss": round(new_ll, 6),
            "best_valid_auc": round(self.best[0], 6),
            "best_valid_logloss": round(self.best[1], 6),
            "logloss_tolerance": self.logloss_tolerance if smaller else None,
            "seconds": round(time.perf_counter() - t0, 3), "reason": reason,
        }
        if kept:
            self._note_kept(new, new_ll)
            return proposed
        result.extra["guard"]["rejected"] = [line for line in before.diff(proposed)
                                             if not line.startswith("provenance")]
        spec = before.copy()
        spec.provenance.append({"method": "guard", "rejected": result.method,
                                "input_valid_auc": round(base, 6),
                                "stage_valid_auc": round(new, 6)})
        # the cached outcome is keyed without provenance, so it still serves this spec
        return spec

    def replay(self, result: StageResult) -> None:
        """Take in the verdict a finished stage recorded (a stage ``--resume`` reads back
        instead of running), so the best spec kept so far, and with it every later verdict,
        is what the uninterrupted run had."""
        guard = result.extra.get("guard")
        if not isinstance(guard, dict) or "input_valid_logloss" not in guard:
            return
        self._note_kept(guard["input_valid_auc"], guard["input_valid_logloss"])
        if guard.get("kept"):
            self._note_kept(guard["stage_valid_auc"], guard["stage_valid_logloss"])

    def _note_kept(self, auc: float, logloss: float) -> None:
        """A kept spec's validation figures: the best so far is the one with the best AUC."""
        if auc > self.best[0]:
            self.best = (auc, logloss)

    def expected_seconds(self) -> float:
        """What judging one more stage is likely to cost: one retrain (the input's is
        usually done already), as long as the longest so far; 0 before any is known."""
        return self.longest

    @staticmethod
    def _unchecked(result: StageResult, before: ArchSpec, reason: str) -> ArchSpec:
        """The stage's spec cannot be judged: keep its input (never take an unverified
        change) and say why."""
        result.extra["guard"] = {"kept": False, "checked": False,
                                 "reason": reason + "; the stage's input is kept"}
        spec = before.copy()
        spec.provenance.append({"method": "guard", "rejected": result.method,
                                "unchecked": reason})
        return spec
