"""The default pipeline, YAML configuration, and resuming an interrupted pipeline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import yaml
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.methods.selection.erase import ErasePoint, erase_bisect
from autodrs.models.backbones import backbone_spec
from autodrs.pipeline import (
    DEFAULT_PIPELINE,
    RETRAIN_SHARE,
    STAGE_WEIGHTS,
    ValidationGuard,
    stage_weights,
)
from autodrs.search.base import METHODS, Method, SearchContext, StageResult, get_method
from autodrs.search.stages import run_stages, stage_budget
from autodrs.train.trainer import TrainConfig

DATA = "synthetic?rows=3000&seed=1"
COMMON = ["--data", DATA, "--seed", "0", "--epochs", "1", "--threads", "1", "--no-progress"]


def test_default_pipeline_runs_every_stage_and_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--fast", "--baselines", "fm",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert [s["method"] for s in r["stages"]] == list(DEFAULT_PIPELINE)
    assert r["methods"] == list(DEFAULT_PIPELINE)
    assert r["skipped_baselines"] == []  # named baselines are never left out
    for name in ("result.json", "spec.json", "model.pt", "schema.json", "manifest.json",
                 "report.html", "config.yaml"):
        assert (out / name).exists(), name
    # each stage's cost is reported, and the search cost covers them; the optim stage
    # reuses the fits of its start's tuning as a baseline (the same search, done already)
    assert all(s["seconds"] > 0 for s in r["stages"] if s["method"] != "optim")
    assert r["stages"][0]["candidates"] == r["tuned_baselines"]["fm"]["candidates"]
    assert r["stages"][0]["seconds"] < r["tuned_baselines"]["fm"]["seconds"]
    assert r["cost"]["search_seconds"] >= sum(s["seconds"] for s in r["stages"]) * 0.99
    assert "searched" in (out / "report.html").read_text()
    # the interaction stage chose its head between DeepFM and FM on retrains
    heads = r["stages"][-1]["heads"]
    assert heads["chosen"] in ("deepfm", "fm") and heads["retrained"]


def test_yaml_config_with_flags_winning_and_effective_config_saved(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"methods": ["hparams"], "strategy": "random", "trials": 2,
                                   "epochs": 1, "baselines": "none", "fast": True,
                                   "seed": 5}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "--data", DATA, "--config", str(cfg),
                                      "--seed", "3", "--threads", "1", "--no-progress",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert r["seed"] == 3  # the flag wins over the file
    assert r["stages"][0]["strategy"] == "random" and len(r["stages"][0]["trials"]) == 2
    assert r["baselines"] == {}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["seed"] == 3 and saved["trials"] == 2 and saved["strategy"] == "random"


def test_unknown_config_key_is_rejected(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("colour: red\n")
    result = CliRunner().invoke(app, ["search", "--data", DATA, "--config", str(cfg),
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown key 'colour' in" in result.output


def test_killed_pipeline_resumes_without_redoing_finished_stages(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "autodrs", "search", *COMMON, "--methods",
            "lasso,hparams", "--baselines", "none", "--out", str(out)]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*argv, "--trials", "200"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = out / "stages" / "00-lasso" / "stage.json"
    second_db = out / "stages" / "01-hparams" / "search.db"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and not (first.exists() and second_db.exists()):
            time.sleep(0.2)
        assert first.exists() and second_db.exists(), "the pipeline never reached stage 2"
        time.sleep(2.0)  # let stage 2 get under way
        assert proc.poll() is None, "stage 2 finished before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "result.json").exists()
    finished_at = first.stat().st_mtime_ns
    before = json.loads(first.read_text())
    done = subprocess.run([*argv, "--trials", "2", "--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert first.stat().st_mtime_ns == finished_at  # the finished stage was not redone
    r = json.loads((out / "result.json").read_text())
    assert [s["method"] for s in r["stages"]] == ["lasso", "hparams"]
    assert r["stages"][0]["ranking"] == before["result"]["ranking"]


# ------------------------------------------------------------------ budgets
class _Probe(Method):
    """Records the budget its stage was given and spends ``spend`` of it."""

    name = "probe"
    component = "test"
    strategies = ("none",)
    budgets: list[float | None] = []
    spend = 0.0

    def search(self, ctx: SearchContext) -> StageResult:
        type(self).budgets.append(ctx.budget_seconds)
        time.sleep(self.spend * (ctx.budget_seconds or 0.0))
        return StageResult(method=self.name, strategy="none", spec=ctx.spec.copy())


def test_stage_budget_follows_the_weights_after_the_reserve() -> None:
    assert stage_budget(None, [1.0, 1.0], 0) is None
    assert stage_budget(100.0, [3.0, 2.0, 1.0], 0, reserve=40.0) == pytest.approx(30.0)
    assert stage_budget(30.0, [3.0, 2.0, 1.0], 1, reserve=10.0) == pytest.approx(20 * 2 / 3)
    assert stage_budget(5.0, [1.0], 0, reserve=10.0) == 0.0
    assert stage_weights(list(DEFAULT_PIPELINE)) == [STAGE_WEIGHTS[m] for m in DEFAULT_PIPELINE]
    assert stage_weights(["hparams"]) == [sum(STAGE_WEIGHTS.values()) / len(STAGE_WEIGHTS)]


def test_stages_get_their_share_and_unused_time_passes_on(
        monkeypatch: pytest.MonkeyPatch, tiny_synthetic: Dataset,
        fast_config: TrainConfig) -> None:
    monkeypatch.setitem(METHODS, "probe", _Probe)
    monkeypatch.setattr(_Probe, "budgets", [])
    ctx = SearchContext(tiny_synthetic, backbone_spec("fm", 4), fast_config,
                        budget_seconds=6.0)
    run_stages(ctx, ["probe"] * 3, weights=[2.0, 1.0, 1.0], reserve=2.0)
    first, second, third = _Probe.budgets
    # 4 s for the stages: half to the first; the first spent nothing, so the second gets
    # half of what is left, and the third all the rest
    assert first == pytest.approx(2.0, abs=0.2)
    assert second == pytest.approx(2.0, abs=0.2)
    assert third == pytest.approx(4.0, abs=0.3)
    monkeypatch.setattr(_Probe, "budgets", [])
    monkeypatch.setattr(_Probe, "spend", 1.0)
    ctx = SearchContext(tiny_synthetic, backbone_spec("fm", 4), fast_config,
                        budget_seconds=1.0)
    run_stages(ctx, ["probe"] * 2, weights=[1.0, 1.0], reserve=0.5)
    # the first stage spent its whole share: the second gets the rest of the stages' time,
    # never the reserve
    assert _Probe.budgets[0] == pytest.approx(0.25, abs=0.05)
    assert _Probe.budgets[1] < 0.3


def test_a_guard_s_judging_time_comes_off_each_stage_s_share(
        monkeypatch: pytest.MonkeyPatch, tiny_synthetic: Dataset,
        fast_config: TrainConfig) -> None:
    monkeypatch.setitem(METHODS, "probe", _Probe)
    monkeypatch.setattr(_Probe, "budgets", [])
    monkeypatch.setattr(_Probe, "spend", 0.0)

    class Judge:
        calls = 0

        def expected_seconds(self) -> float:
            return 1.5

        def __call__(self, before, result):  # noqa: ANN001, ANN204
            Judge.calls += 1
            return result.spec

    ctx = SearchContext(tiny_synthetic, backbone_spec("fm", 4), fast_config,
                        budget_seconds=6.0)
    run_stages(ctx, ["probe"] * 2, weights=[1.0, 1.0], reserve=2.0, guard=Judge())
    # 4 s for the stages, half each, less the 1.5 s the guard expects to need
    assert _Probe.budgets[0] == pytest.approx(0.5, abs=0.2)
    assert Judge.calls == 2
    # a method whose spec is one of its own retrains is judged on that fit: no time off
    monkeypatch.setattr(_Probe, "retrains_its_choice", True)
    _Probe.budgets.clear()
    ctx = replace(ctx, started=time.monotonic())
    run_stages(ctx, ["probe"] * 2, weights=[1.0, 1.0], reserve=2.0, guard=Judge())
    assert _Probe.budgets[0] == pytest.approx(2.0, abs=0.2)
    for name in ("autofield", "frequency", "autodis"):
        assert METHODS[name].retrains_its_choice
    for name in ("autodim", "autofis", "adafs", "fieldsearch"):
        assert not METHODS[name].retrains_its_choice
    # AutoFIS choosing its head retrains its choice; with a fixed head it does not
    assert get_method("autofis").retrains_choice({"backbone": "auto"})
    assert not get_method("autofis").retrains_choice({"backbone": "fm"})
    assert not get_method("autofis").retrains_choice({})


@pytest.mark.parametrize("method", ["autofis", "autofield"])
def test_a_gradient_search_stops_its_epochs_when_the_budget_is_spent(
        method: str, tiny_synthetic: Dataset) -> None:
    config = TrainConfig(epochs=50, batch_size=256, patience=50, progress=False, threads=1,
                         seed=0)
    options = {"search_epochs": 50, "k": 4}
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), config, seed=0,
                        options=options, budget_seconds=0.0)
    stopped = get_method(method).search(ctx)
    stopped.spec.validate(tiny_synthetic.schema)
    if method == "autofis":
        assert stopped.extra["search_steps"] == 1  # one step, then the budget stops it
    else:
        assert stopped.extra["arch_steps"] <= 1
    free = get_method(method).search(
        SearchContext(tiny_synthetic, backbone_spec("deepfm", 4),
                      TrainConfig(epochs=2, batch_size=256, patience=5, progress=False,
                                  threads=1, seed=0),
                      seed=0, options={"search_epochs": 2, "k": 4}))
    steps_per_epoch = -(-len(tiny_synthetic.train) // 256)
    if method == "autofis":
        assert free.extra["search_steps"] == 2 * steps_per_epoch
    else:
        assert free.extra["arch_steps"] > 1


def _fake_erase_fits(monkeypatch: pytest.MonkeyPatch, aucs: dict[int, float]) -> list[int]:
    """ERASE retrains replaced by a curve of validation AUC against k (1 s each); returns
    the list the measured ks are appended to, in order."""
    import autodrs.methods.selection.erase as erase

    measured: list[int] = []

    def fake_fit(ds, spec, config, hooks=None):  # noqa: ANN001, ANN202  (for fit_spec)
        measured.append(len(spec.fields))
        auc = {"auc": aucs[len(spec.fields)], "logloss": 0.5}

        class Outcome:
            metrics = {"valid": auc, "test": auc}
            seconds = 1.0
        return Outcome()

    monkeypatch.setattr(erase, "fit_spec", fake_fit)
    monkeypatch.setattr(erase, "in_schema_order", lambda schema, fields: list(fields))
    monkeypatch.setattr(erase, "with_fields", lambda spec, fields: spec.copy(fields=fields))
    return measured


def test_erase_bisection_measures_log_n_points_and_stops_at_the_budget(
        monkeypatch: pytest.MonkeyPatch, tiny_synthetic: Dataset) -> None:
    ranking = [f"f{i}" for i in range(16)]
    # flat from k = 10
    measured = _fake_erase_fits(monkeypatch, {k: min(0.80, 0.60 + 0.02 * k)
                                              for k in range(1, 17)})
    spec = backbone_spec("fm", 4)
    curve = erase_bisect(tiny_synthetic, ranking, spec, TrainConfig(), tolerance=0.0)
    assert curve.chosen.k == 10
    assert len(measured) <= 6 and measured[0] == 16  # all fields, then log2(16) + 1
    measured.clear()
    left = iter([1.5, 0.5])  # time for one more retrain of 1 s, then not
    curve = erase_bisect(tiny_synthetic, ranking, spec, TrainConfig(), tolerance=0.0,
                         remaining=lambda: next(left))
    assert measured == [16, 8]
    assert [p.k for p in curve.points] == [8, 16] and curve.chosen.k == 16
    assert isinstance(curve.points[0], ErasePoint)


def test_erase_bisection_finds_a_peaked_curve_from_the_rankings_own_cut(
        monkeypatch: pytest.MonkeyPatch, tiny_synthetic: Dataset) -> None:
    """Noise fields make the AUC-against-k curve peak at the relevant fields and fall after
    them; a bisection alone reads the fall as "more fields are needed" and keeps noise."""
    import autodrs.methods.selection.erase as erase

    ranking = [f"f{i}" for i in range(12)]
    aucs = {k: 0.70 + 0.02 * k if k <= 7 else 0.84 - 0.006 * (k - 7) for k in range(1, 13)}
    aucs[10] = 0.83  # a noisy point after the peak, above the all-fields one
    measured = _fake_erase_fits(monkeypatch, aucs)
    spec = backbone_spec("fm", 4)
    blind = erase_bisect(tiny_synthetic, ranking, spec, TrainConfig(), tolerance=0.0)
    assert blind.chosen.k != 7  # misses the peak
    scores = [0.58, 0.575, 0.57, 0.566, 0.565, 0.564, 0.563, 0.52, 0.5, 0.495, 0.49, 0.485]
    assert erase.gap_cuts(scores) == [7, 8]  # drops of 0.043, then 0.02
    assert erase.gap_cuts(scores, count=1) == [7]
    assert erase.gap_cuts([0.5]) == [] and erase.gap_cuts([0.5, 0.5, 0.5]) == []
    measured.clear()
    curve = erase_bisect(tiny_synthetic, ranking, spec, TrainConfig(), tolerance=0.0,
                         anchors=erase.gap_cuts(scores))
    assert measured[:3] == [12, 7, 8] and curve.chosen.k == 7
    assert len(measured) <= 6  # then only the bisection below the peak
    with pytest.raises(ValueError, match="outside"):
        erase_bisect(tiny_synthetic, ranking, spec, TrainConfig(), anchors=[13])


def test_selection_keeps_every_field_when_its_budget_cannot_pay_for_a_retrain(
        tiny_synthetic: Dataset) -> None:
    config = TrainConfig(epochs=50, batch_size=256, progress=False, threads=1, seed=0)
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 4), config, seed=0,
                        options={"redundancy": 0}, budget_seconds=0.0)
    result = get_method("autofield").search(ctx)
    assert "erase_skipped" in result.extra and "erase" not in result.extra
    assert result.spec.fields == tiny_synthetic.schema.field_names
    assert len(result.ranking) == len(result.spec.fields)


def test_budgeted_pipeline_shares_its_budget_and_reports_each_share(tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--budget", "20s", "--baselines",
                                      "none", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    shares = [s["budget_seconds"] for s in r["stages"]]
    # the first stage's share is fixed before anything runs: its weight of the budget less
    # the retrain's reserve; the later ones get what is left, never more than the stages' part
    weights = [STAGE_WEIGHTS[m] for m in DEFAULT_PIPELINE]
    assert shares[0] == pytest.approx(20 * (1 - RETRAIN_SHARE) * weights[0] / sum(weights),
                                      abs=0.5)
    assert all(s <= 20 * (1 - RETRAIN_SHARE) + 0.01 for s in shares)
    # each stage's cost is printed against its share
    n = len(DEFAULT_PIPELINE)
    printed = re.findall(rf"stage \d/{n} \w+ \((?:gradient|grid)\): [\d.]+s of [\d.]+s",
                         result.output)
    assert len(printed) == n


def _guard_case(ds: Dataset) -> tuple:
    truth = ds.info["truth"]
    relevant = [f for f in ds.schema.field_names if f in truth["relevant"]]
    noise = [f for f in ds.schema.field_names
             if f not in truth["relevant"] and not f.endswith("_copy")]
    spec = backbone_spec("deepfm", 4)
    return spec.copy(fields=relevant), spec.copy(fields=noise)


def test_validation_guard_keeps_the_input_when_a_stage_validates_worse(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    good, bad = _guard_case(tiny_synthetic)
    guard = ValidationGuard(tiny_synthetic, fast_config)
    worse = StageResult(method="probe", strategy="none", spec=bad)
    kept = guard(good, worse)
    assert kept.fields == good.fields  # the stage's noise-only spec is rejected
    assert worse.extra["guard"]["kept"] is False
    assert worse.extra["guard"]["stage_valid_auc"] < worse.extra["guard"]["input_valid_auc"]
    assert kept.provenance[-1]["method"] == "guard"
    # the other way round the stage improves on its input and its spec goes on
    better = StageResult(method="probe", strategy="none", spec=good)
    assert guard(bad, better).fields == good.fields
    assert better.extra["guard"]["kept"] is True
    # both specs were trained once: the second decision reused the cached retrains, and
    # the cache serves the rejected stage's returned spec too (provenance is not the model)
    assert len(guard.outcomes) == 2
    assert guard.outcome(kept) is guard.outcome(good)
    # a stage that changed nothing costs no retrain
    same = StageResult(method="probe", strategy="none", spec=good.copy())
    assert ValidationGuard(tiny_synthetic, fast_config)(good, same) is same.spec
    assert "left the spec" in same.extra["guard"]["reason"]


def test_validation_guard_prefers_the_smaller_model_when_both_validate_alike(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    """Within ``shrink_tolerance`` a stage's spec is kept only if it has fewer embedding
    parameters; beyond it, or without the saving, the input is kept."""
    big = backbone_spec("deepfm", 8)
    small, smaller_worse, bigger = big.copy(embed_dim=4), big.copy(embed_dim=2), big.copy(
        embed_dim=16)
    figures = {8: (0.800, 800), 4: (0.7995, 400), 2: (0.797, 200), 16: (0.7995, 1600)}

    class Fixed(ValidationGuard):
        def fit(self, spec):  # noqa: ANN001, ANN202
            auc, params = figures[spec.embed_dim]

            class Outcome:
                metrics = {"valid": {"auc": auc, "logloss": 0.5}}
            Outcome.params = {"embedding": params}
            return Outcome()

    guard = Fixed(tiny_synthetic, fast_config, tolerance=0.0, shrink_tolerance=0.001)
    shrunk = StageResult(method="probe", strategy="none", spec=small)
    assert guard(big, shrunk) is small
    record = shrunk.extra["guard"]
    assert record["kept"] and record["tolerance"] == 0.001 and "fewer" in record["reason"]
    assert (record["input_embedding_params"], record["stage_embedding_params"]) == (800, 400)
    too_far = StageResult(method="probe", strategy="none", spec=smaller_worse)
    assert guard(big, too_far).embed_dim == 8 and not too_far.extra["guard"]["kept"]
    grown = StageResult(method="probe", strategy="none", spec=bigger)
    assert guard(big, grown).embed_dim == 8 and grown.extra["guard"]["tolerance"] == 0.0


def test_validation_guard_tolerance_does_not_add_up_over_stages(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    """Each shrinking step within the tolerance of its own input, but the second beyond it
    from the best kept so far: only the first is kept."""
    figures = {8: (0.800, 800, 0.500), 4: (0.7994, 400, 0.501), 2: (0.7988, 200, 0.501),
               1: (0.7999, 100, 0.5015), 16: (0.7996, 50, 0.505)}

    class Fixed(ValidationGuard):
        def fit(self, spec):  # noqa: ANN001, ANN202
            auc, params, logloss = figures[spec.embed_dim]

            class Outcome:
                metrics = {"valid": {"auc": auc, "logloss": logloss}}
            Outcome.params = {"embedding": params}
            return Outcome()

    guard = Fixed(tiny_synthetic, fast_config, tolerance=0.0, shrink_tolerance=0.001)
    d8, d4, d2, d1 = (backbone_spec("deepfm", d) for d in (8, 4, 2, 1))
    first = StageResult(method="a", strategy="none", spec=d4)
    assert guard(d8, first) is d4
    second = StageResult(method="b", strategy="none", spec=d2)
    # 0.0006 below its input (0.7994), 0.0012 below the best kept so far (0.800)
    assert guard(d4, second).embed_dim == 4
    assert second.extra["guard"]["kept"] is False
    assert second.extra["guard"]["best_valid_auc"] == 0.800
    # a resumed run reads the first stage back instead of running it: replaying its recorded
    # verdict gives the second stage the verdict of the uninterrupted run
    resumed = Fixed(tiny_synthetic, fast_config, tolerance=0.0, shrink_tolerance=0.001)
    resumed.replay(StageResult(method="a", strategy="none", spec=d4, extra=first.extra))
    again = StageResult(method="b", strategy="none", spec=d2)
    assert resumed(d4, again).embed_dim == 4 and again.extra["guard"]["kept"] is False
    fresh = StageResult(method="b", strategy="none", spec=d2)
    assert Fixed(tiny_synthetic, fast_config, tolerance=0.0,
                 shrink_tolerance=0.001)(d4, fresh) is d2  # without the replay it would pass
    # a later shrinking stage within the tolerance of that best still goes on
    third = StageResult(method="c", strategy="none", spec=d1)
    assert guard(d4, third) is d1 and third.extra["guard"]["kept"]
    # alike in AUC but not in logloss (0.005 above the best's, tolerance 0.002): rejected
    d16 = backbone_spec("deepfm", 16)
    fourth = StageResult(method="d", strategy="none", spec=d16)
    assert guard(d1, fourth) is not d16 and not fourth.extra["guard"]["kept"]
    assert fourth.extra["guard"]["best_valid_logloss"] == 0.5
    assert fourth.extra["guard"]["logloss_tolerance"] == 0.002


def test_validation_guard_skips_retrains_the_budget_cannot_pay_for(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    good, bad = _guard_case(tiny_synthetic)
    clock = {"left": 100.0}
    guard = ValidationGuard(tiny_synthetic, fast_config, remaining=lambda: clock["left"])
    guard(good, StageResult(method="probe", strategy="none", spec=bad))  # measured
    assert guard.longest > 0
    clock["left"] = 0.0
    third = backbone_spec("deepfm", 4).copy(fields=good.fields[:2])
    unchecked = StageResult(method="probe", strategy="none", spec=third)
    # an unverified change is not taken: the stage's input goes on
    assert guard(good, unchecked).fields == good.fields
    assert unchecked.extra["guard"]["checked"] is False
    assert unchecked.extra["guard"]["kept"] is False
    assert len(guard.outcomes) == 2  # no retrain was started
    # a first retrain (no estimate yet) that runs past the time left is stopped, and the
    # stage's input goes on rather than a spec judged by a half-trained model
    ticks = iter([0.5] + [0.0] * 100_000)
    fresh = ValidationGuard(tiny_synthetic, fast_config, remaining=lambda: next(ticks))
    cut = StageResult(method="probe", strategy="none", spec=bad)
    assert fresh(good, cut).fields == good.fields
    assert cut.extra["guard"]["checked"] is False and "ran out" in cut.extra["guard"]["reason"]
    assert not fresh.outcomes


def test_default_pipeline_guards_its_stages_and_reuses_the_guard_retrains(tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", *COMMON, "--fast", "--baselines", "fm,deepfm",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    # the search starts from the baseline that validates best once tuned
    valid = {n: b["valid"]["auc"] for n, b in r["tuned_baselines"].items()}
    assert r["start"]["model"] == r["model"] == max(valid, key=valid.get)
    assert r["start"]["valid_auc"] == pytest.approx(valid, abs=1e-6)
    assert f"starting from {r['model']}" in result.output
    guards = [s["guard"] for s in r["stages"]]
    assert all("kept" in g for g in guards)
    checked = [g for g in guards if g.get("checked")]
    assert checked, guards
    # the pipeline's model validates at least as well as its start, and that baseline is
    # the very retrain the guard judged the first stage against
    start_valid = valid[r["model"]]
    assert r["metrics"]["valid"]["auc"] >= start_valid
    first = next(g for g in guards if g.get("checked"))
    if first is guards[0]:  # optim's input: the start as the command's --lr trains it
        untuned = r["baselines"][r["model"]]["valid"]["auc"]
        assert first["input_valid_auc"] == pytest.approx(untuned, abs=1e-6)
        assert first["stage_valid_auc"] == pytest.approx(start_valid, abs=1e-6)
    # rejected stages' specs are kept out of the final spec and named in its provenance
    for stage, g in zip(r["stages"], guards, strict=True):
        if g["kept"] is False:
            assert any(p.get("rejected") == stage["method"] for p in r["spec"]["provenance"])
    assert "Validation guard" in (out / "report.html").read_text()
    # with --no-guard the stages' specs go through unchecked
    out2 = tmp_path / "unguarded"
    result = CliRunner().invoke(app, ["search", *COMMON, "--fast", "--baselines", "none",
                                      "--no-guard", "--out", str(out2)])
    assert result.exit_code == 0, result.output
    r2 = json.loads((out2 / "result.json").read_text())
    assert all("guard" not in s for s in r2["stages"])


def test_shared_fits_train_a_fit_once_and_never_reuse_one_a_hook_cut_short(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    from autodrs.experiment import fit_spec, shared_fits
    from autodrs.train.trainer import TimeLimit

    spec = backbone_spec("fm", 4)
    with shared_fits():
        first = fit_spec(tiny_synthetic, spec, fast_config)
        # the same model (provenance aside) and config: the remembered outcome
        relabelled = spec.copy()
        relabelled.provenance.append({"method": "elsewhere"})
        assert fit_spec(tiny_synthetic, relabelled, fast_config) is first
        other_seed = fit_spec(tiny_synthetic, spec, TrainConfig(**{**vars(fast_config),
                                                                   "seed": 1}))
        assert other_seed is not first
        cut = fit_spec(tiny_synthetic, backbone_spec("deepfm", 4), fast_config,
                       hooks=[TimeLimit(lambda: 0.0)])
        assert cut.fit.stopped_by_hook
        assert fit_spec(tiny_synthetic, backbone_spec("deepfm", 4), fast_config) is not cut
    again = fit_spec(tiny_synthetic, spec, fast_config)
    assert again is not first  # outside the block nothing is remembered
    assert again.metrics == first.metrics  # and the fit is deterministic, so reuse is exact


def test_default_pipeline_drops_the_numerical_encoder_stage_without_numerical_fields(
        tmp_path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    n = 1500
    user, item = rng.integers(0, 40, n), rng.integers(0, 30, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(np.sin(user) + np.cos(item))))).astype(int)
    csv = tmp_path / "clicks.csv"
    csv.write_text("user,item,label\n" + "".join(
        f"u{u},i{i},{y}\n" for u, i, y in zip(user, item, label, strict=True)))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "--data", str(csv), "--categorical",
                                      "user,item", "--label", "label", "--seed", "0",
                                      "--epochs", "1", "--threads", "1", "--no-progress",
                                      "--fast", "--baselines", "fm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    # (on data with numerical fields, test_default_pipeline_runs_every_stage runs all stages)
    assert [s["method"] for s in r["stages"]] == [m for m in DEFAULT_PIPELINE if m != "autodis"]
