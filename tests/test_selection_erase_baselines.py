"""ERASE's other selection baselines (rf, xgb, sfs, shark, lpfs, optfs, mvfs) and FSTD: each
recovers the planted fields of synthetic data, which a random ranking does not (it puts
every relevant field above every noise field once in 792 draws), each runs standalone
through ``autodrs search --methods X``, and bad options are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset
from autodrs.methods.selection.gates import GatedModel, ProbeGate
from autodrs.methods.selection.lpfs import polarizing_gate
from autodrs.methods.selection.truth import planted_recovery
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec
from autodrs.train.losses import make_loss
from autodrs.train.trainer import TrainConfig

METHODS = ("rf", "xgb", "sfs", "shark", "lpfs", "optfs", "mvfs", "fstd")


def planted_spec() -> ArchSpec:
    spec = backbone_spec("dnn", 8)
    spec.numerical = {"num0": "bucket", "num_noise": "bucket"}
    return spec


def search(method: str, ds: Dataset, config: TrainConfig, **options: object):
    return get_method(method).search(SearchContext(ds, planted_spec(), config, seed=0,
                                                   options={"k": 7, **options}))


def recovered(result, truth: dict) -> dict:
    rec = planted_recovery(result.ranking, truth, result.extra["selected"])
    assert rec["copy_adjacent"] == {"r0_copy": True}, result.ranking
    assert result.extra["redundant"] == {"r0_copy": "r0"}
    assert len(result.spec.fields) == 7
    return rec


# the gated searches run one epoch; at batch 128 that is ~125 gate steps on 16k rows
GATED = TrainConfig(epochs=2, batch_size=128, patience=1, progress=False, threads=1, seed=0)


@pytest.mark.parametrize("method,options,batch", [
    ("rf", {"rf_rows": 8_000}, None),
    ("xgb", {"xgb_rows": 8_000}, None),
    ("sfs", {}, None),
    ("shark", {}, None),
    ("lpfs", {}, 128),
    ("optfs", {"level": "field"}, 128),
    ("mvfs", {}, 128),
    ("fstd", {"episodes": 10, "fstd_rows": 8_000}, None),
])
def test_method_puts_every_planted_field_above_every_noise_field(
        method: str, options: dict, batch: int | None, synthetic_20k: Dataset,
        fast_config: TrainConfig) -> None:
    config = GATED if batch else fast_config
    result = search(method, synthetic_20k, config, **options)
    rec = recovered(result, synthetic_20k.info["truth"])
    assert rec["separated"], (result.ranking, result.scores)
    assert rec["selected_precision"] == 1.0 and rec["selected_recall"] == 1.0
    assert all(np.isfinite(v) for v in result.scores.values())


def test_optfs_value_masks_favour_the_planted_fields(synthetic_20k: Dataset) -> None:
    # per-value masks (OptFS's own level): the strongest field first, six of the top seven
    # planted; the rarely seen values of large planted vocabularies close like noise
    result = search("optfs", synthetic_20k, GATED)
    rec = recovered(result, synthetic_20k.info["truth"])
    truth = synthetic_20k.info["truth"]
    assert result.ranking[0] == "num0" and rec["top_precision"] >= 6 / 7, result.ranking
    relevant = np.mean([result.scores[f] for f in truth["relevant"]])
    noise = np.mean([result.scores[f] for f in truth["noise"]])
    assert relevant > noise, result.scores
    kept = result.extra["kept_values"]
    assert set(kept) == set(synthetic_20k.schema.field_names) - {"r0_copy"}
    assert all(0.0 <= v <= 1.0 for v in kept.values())
    assert result.extra["temperature"] == pytest.approx(2000.0)


def test_lpfs_gate_and_proximal_step() -> None:
    x = torch.tensor([-1.0, 0.0, 1.0])
    eps = 0.1
    g = polarizing_gate(x, eps)
    slope = 10 * eps ** 0.5 * torch.atan(x)
    assert torch.allclose(g, slope + torch.sign(x) * x * x / (x * x + eps))
    assert float(g[1]) == 0.0


def test_shark_gate_gradient_is_the_taylor_term(tiny_synthetic: Dataset) -> None:
    # d loss_i / d g_if at g = 1 equals sum_d dL_i/de_fd (e_fd - E[e_f]), per example
    schema = tiny_synthetic.schema
    spec = planted_spec()
    torch.manual_seed(0)
    model = build_model(schema, spec).eval()
    fields = ["r0", "n0", "num0"]
    gate = ProbeGate(len(fields))
    gated = GatedModel(schema, spec, fields, gate, model=model).eval()
    gated.set_mean_base(tiny_synthetic.valid, 512, len(tiny_synthetic.valid))
    batch = tiny_synthetic.valid.batch(slice(0, 16))
    loss_fn = make_loss("bce")
    gate.value = torch.ones(16, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(loss_fn(gated(batch), batch.label) * 16, gate.value)
    gate.value = None
    # the same term by hand: embeddings with their gradient, then the product with the gap
    outputs = gated.embedding.inner(batch)
    names = gated.embedding.names
    leaves = [e.detach().requires_grad_(True) for e in outputs]
    gated.embedding.inner = _Fixed(leaves, gated.embedding.inner)
    loss = loss_fn(gated(batch), batch.label) * 16
    grads = torch.autograd.grad(loss, leaves)
    for j, f in enumerate(fields):
        k = names.index(f)
        base = gated.embedding.base[k]
        expected = (grads[k] * (leaves[k] - base)).sum(1).detach()
        assert torch.allclose(grad[:, j], expected, atol=1e-6), f


class _Fixed(torch.nn.Module):
    """Returns given outputs (a probe's leaves) in place of a ``FieldEmbedding``'s."""

    def __init__(self, outputs: list[torch.Tensor], inner: torch.nn.Module) -> None:
        super().__init__()
        self.outputs = outputs
        self.names, self.dims = inner.names, inner.dims

    def forward(self, batch) -> list[torch.Tensor]:
        return self.outputs


def test_bad_options_are_named(tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    for method, options, match in [
        ("rf", {"rf_trees": 0}, "rf_trees"),
        ("xgb", {"xgb_rounds": 0}, "xgb_rounds"),
        ("sfs", {"batches": 0}, "batches"),
        ("lpfs", {"epsilon": 0}, "epsilon"),
        ("optfs", {"level": "row"}, "level"),
        ("mvfs", {"threshold": 2}, "threshold"),
        ("fstd", {"evaluator": "svm"}, "evaluator"),
        ("fstd", {"alpha": 0}, "alpha"),
    ]:
        with pytest.raises(SearchError, match=match):
            get_method(method).search(SearchContext(tiny_synthetic, planted_spec(),
                                                    fast_config, seed=0, options=options))


def test_fstd_with_no_subset_evaluated_found_nothing(tiny_synthetic: Dataset,
                                                    fast_config: TrainConfig) -> None:
    spec = planted_spec()
    result = get_method("fstd").search(SearchContext(
        tiny_synthetic, spec, fast_config, seed=0, budget_seconds=0.0, options={"fast": True}))
    assert result.no_result is not None and "fstd evaluated no subset" in result.no_result
    assert result.spec.to_dict() == spec.to_dict() and result.ranking == []


def test_fstd_trials_cap_the_subsets_evaluated(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, planted_spec(), fast_config, seed=0, trials=9,
                        options={"fast": True, "k": 3})
    result = get_method("fstd").search(ctx)
    assert result.extra["subsets_evaluated"] == 9
    assert len(result.extra["best_subset"]) >= 1


@pytest.mark.parametrize("method", METHODS)
def test_search_runs_the_method_standalone(method: str, tmp_path: Path,
                                           tiny_synthetic: Dataset) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--data", "synthetic?rows=4000&seed=1", "--seed", "0", "--epochs", "2",
        "--threads", "1", "--no-progress", "--fast", "--baselines", "none",
        "--methods", method, "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    stage = r["stages"][0]
    assert stage["method"] == method
    assert set(stage["ranking"]) == set(tiny_synthetic.schema.field_names)
    assert set(stage["scores"]) == set(stage["ranking"])
    # the ERASE cut chose the subset from the ranking, and the retrain used it
    assert stage["erase"]["chosen_k"] == len(stage["selected"])
    spec = ArchSpec.from_dict(r["spec"]).validate(tiny_synthetic.schema)
    assert spec.fields == stage["selected"]
    assert 0.5 < r["metrics"]["test"]["auc"] <= 1.0
    report = (out / "report.html").read_text()
    assert method in report


def test_methods_lists_every_new_method() -> None:
    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    listed = {line.split("│")[1].strip() for line in result.output.splitlines()
              if line.startswith("│")}
    assert set(METHODS) <= listed
