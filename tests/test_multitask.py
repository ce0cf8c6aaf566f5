"""Multi-task data, models, GradNorm and the ``mtl`` search on small planted tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Dataset, load_dataset
from autodrs.data.errors import DataError
from autodrs.data.schema import FIRST_ID
from autodrs.experiment import fit_spec
from autodrs.methods.multitask.mtl import MultiTaskSearch, branchings
from autodrs.models.builder import build_model
from autodrs.models.multitask import MultiTaskModel
from autodrs.search.base import SearchContext
from autodrs.spec import ArchSpec, MultiTaskSpec, SpecError
from autodrs.train.metrics import task_metrics
from autodrs.train.trainer import TrainConfig


def _labelled(tmp_path: Path, n: int = 600) -> Path:
    """A field ``k`` that decides both labels: ``y1`` = (k == "p"), ``y2`` = 1 - ``y1``."""
    rng = np.random.default_rng(0)
    k = rng.choice(["p", "n"], n)
    df = pl.DataFrame({"k": k, "z": rng.choice(["a", "b", "c"], n),
                       "y1": (k == "p").astype(np.int8), "y2": (k != "p").astype(np.int8)})
    path = tmp_path / "labels.parquet"
    df.write_parquet(path)
    return path


@pytest.mark.parametrize("in_memory", [True, False])
def test_several_labels_are_encoded_per_row_on_both_data_paths(tmp_path: Path,
                                                               in_memory: bool) -> None:
    ds = load_dataset(str(_labelled(tmp_path)), labels=["y1", "y2"], in_memory=in_memory,
                      cache=False, seed=0)
    assert ds.schema.tasks == ["y1", "y2"] and ds.schema.field_names == ["k", "z"]
    assert ds.info["labels"] == ["y1", "y2"] and len(ds.info["positive_rates"]) == 2
    vocab = ds.schema.field("k").vocab
    col = ds.schema.categorical.index("k")
    for name in ("train", "valid", "test"):
        split = ds.split(name)
        assert split.label.shape == (len(split), 2)
        rows = {"label": [], "k": []}
        for batch in split.batches(64, shuffle=name == "train",
                                   generator=torch.Generator().manual_seed(0)):
            assert batch.label is not None and batch.label.shape[1] == 2
            rows["label"].append(batch.label)
            rows["k"].append(batch.cat[:, col])
        label, ids = torch.cat(rows["label"]), torch.cat(rows["k"])
        is_p = torch.tensor([vocab[i - FIRST_ID] == "p" for i in ids.tolist()])
        assert torch.equal(label[:, 0].bool(), is_p)
        assert torch.equal(label[:, 1].bool(), ~is_p)


def test_single_label_data_keeps_its_shape_and_schema_file(tmp_path: Path) -> None:
    ds = load_dataset(str(_labelled(tmp_path)), label="y1", cache=False, seed=0)
    assert ds.train.label.ndim == 1 and "labels" not in ds.info
    assert "labels" not in ds.schema.to_dict() and ds.schema.tasks == ["y1"]
    assert "y2" in ds.schema.field_names  # one label: the other column is a feature
    assert "multitask" not in ArchSpec().to_dict()


def test_a_label_that_is_not_binary_is_named(tmp_path: Path) -> None:
    df = pl.read_parquet(_labelled(tmp_path)).with_columns(
        (pl.col("y2") * 2).alias("y2"))
    path = tmp_path / "bad.parquet"
    df.write_parquet(path)
    with pytest.raises(DataError, match="'y2'.*not binary"):
        load_dataset(str(path), labels=["y1", "y2"], cache=False)
    with pytest.raises(DataError, match="label column 'nope' not found"):
        load_dataset(str(path), labels=["y1", "nope"], cache=False)


def test_movielens_tasks_option_gives_like_and_love() -> None:
    ds = load_dataset("movielens-100k?tasks=like,love", seed=0, rows=3000)
    assert ds.schema.tasks == ["like", "love"]
    label = ds.train.label
    assert bool((label[:, 1] <= label[:, 0]).all())  # a 5 is also at least a 4
    assert 0 < label[:, 1].mean() < label[:, 0].mean() < 1
    with pytest.raises(DataError, match="unknown task 'hate'"):
        load_dataset("movielens-100k?tasks=like,hate", rows=100)


def test_task_metrics_are_per_task_with_their_means() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2))
    probs = np.stack([y[:, 0] * 0.8 + 0.1, rng.random(400)], axis=1)
    m = task_metrics(y, probs, tasks=["a", "b"])
    assert m["auc:a"] == 1.0 and abs(m["auc:b"] - 0.5) < 0.1
    assert m["auc"] == pytest.approx((m["auc:a"] + m["auc:b"]) / 2)
    assert m["logloss"] == pytest.approx((m["logloss:a"] + m["logloss:b"]) / 2)


# ---------------------------------------------------------------- models and GradNorm
@pytest.fixture(scope="module")
def easy_hard(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """``easy`` = (x0 > 0), learnt in a few steps; ``hard`` a weak coin on x1."""
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(0, 1, (n, 4))
    df = pl.DataFrame({f"x{k}": x[:, k] for k in range(4)}).with_columns(
        pl.Series("easy", (x[:, 0] > 0).astype(np.int8)),
        pl.Series("hard", (rng.random(n) < 1 / (1 + np.exp(-0.5 * x[:, 1]))).astype(np.int8)))
    path = tmp_path_factory.mktemp("mt") / "easy_hard.parquet"
    df.write_parquet(path)
    return load_dataset(str(path), labels=["easy", "hard"], cache=False, seed=0)


CONFIG = TrainConfig(epochs=3, batch_size=128, lr=0.01, progress=False, seed=0, threads=1,
                     patience=5)


@pytest.mark.parametrize("mt", [None, MultiTaskSpec(bottom=[16], tower=[8]),
                                MultiTaskSpec(backbone="mmoe", bottom=[8], experts=3),
                                MultiTaskSpec(bottom=[8, 8], sharing=[[0, 0], [0, 1]])])
def test_multitask_backbones_predict_every_task(easy_hard: Dataset,
                                                mt: MultiTaskSpec | None) -> None:
    spec = ArchSpec(embed_dim=4, mlp=[8], multitask=mt)
    model = build_model(easy_hard.schema, spec)
    assert isinstance(model, MultiTaskModel)
    assert model.kind == (mt.backbone if mt else "separate")
    outcome = fit_spec(easy_hard, spec, CONFIG)
    test = outcome.metrics["test"]
    assert {"auc:easy", "auc:hard", "logloss:easy", "logloss:hard"} <= set(test)
    assert test["auc:easy"] > 0.95 and test["auc:hard"] > 0.55
    # the spec round-trips through JSON and builds the same model
    again = build_model(easy_hard.schema, ArchSpec.from_json(spec.to_json()))
    again.load_state_dict(outcome.model.state_dict())


def test_multitask_spec_errors_name_the_problem(easy_hard: Dataset) -> None:
    with pytest.raises(SpecError, match="sharing"):
        ArchSpec(mlp=[8], multitask=MultiTaskSpec(bottom=[8], sharing=[[0, 2]])).validate(
            easy_hard.schema)
    with pytest.raises(SpecError, match="gradnorm"):
        ArchSpec(mlp=[8], multitask=MultiTaskSpec(backbone="separate", gradnorm=1.0)
                 ).validate(easy_hard.schema)


def _weights(ds: Dataset, alpha: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Task weights after training, and each task's raw gradient norm on the shared
    layer (on one batch)."""
    spec = ArchSpec(embed_dim=4, mlp=[8],
                    multitask=MultiTaskSpec(bottom=[16], tower=[8], gradnorm=alpha))
    model = fit_spec(ds, spec, CONFIG).model
    model.train()
    batch = next(iter(ds.train.batches(1024)))
    norms = model.gradient_norms(model.task_losses(model(batch), batch.label))
    return model.task_weights.clone(), norms


def test_gradnorm_weights_the_slow_task_up_and_balances_gradient_norms(
        easy_hard: Dataset) -> None:
    weights, norms = _weights(easy_hard, 1.5)
    easy, hard = weights.tolist()
    # the easy task trains fast and has the larger gradient: its weight goes down
    assert norms[0] > norms[1]
    assert hard > easy + 0.3, weights
    assert float(weights.sum()) == pytest.approx(2.0, abs=1e-4)
    # weighted gradient norms are closer to each other than the raw ones
    raw = abs(float(torch.log(norms[0] / norms[1])))
    weighted = abs(float(torch.log(weights[0] * norms[0] / (weights[1] * norms[1]))))
    assert weighted < raw - 0.3
    # constant weights (no GradNorm) would fail the checks above
    fixed, _ = _weights(easy_hard, None)
    assert fixed.tolist() == [1.0, 1.0]


def test_gradnorm_step_follows_the_rule_on_planted_losses() -> None:
    """One step by hand: equal gradient norms, task 1's loss fell less (slower), so with
    alpha > 0 its weight rises; with alpha = 0 and equal norms nothing pulls either way
    beyond the renormalisation."""
    torch.manual_seed(0)
    schema_model = _two_task_model(alpha=1.0)
    schema_model.initial_losses.copy_(torch.tensor([1.0, 1.0]))
    schema_model.gradient_norms = lambda losses: torch.tensor([1.0, 1.0])  # type: ignore
    for _ in range(5):
        schema_model.gradnorm_step(torch.tensor([0.2, 0.9]))
    w = schema_model.task_weights
    assert w[1] > w[0] and float(w.sum()) == pytest.approx(2.0)


def _two_task_model(alpha: float) -> MultiTaskModel:
    from autodrs.data.schema import Field, Schema

    schema = Schema(fields=[Field("f", "categorical", vocab=["a", "b"])], label="a",
                    labels=["a", "b"], fitted=True)
    spec = ArchSpec(embed_dim=2, mlp=[2], multitask=MultiTaskSpec(bottom=[4], tower=[2],
                                                                  gradnorm=alpha))
    model = build_model(schema, spec)
    assert isinstance(model, MultiTaskModel)
    return model


# ---------------------------------------------------------------- the mtl search
def test_branchings_are_the_refining_chains_of_task_partitions() -> None:
    assert branchings(2, 2) == [[[0, 0], [0, 0]], [[0, 0], [0, 1]], [[0, 1], [0, 1]]]
    three = branchings(3, 2)
    assert len(three) == 12 and three[0] == [[0, 0, 0], [0, 0, 0]]
    assert [[0, 1, 0], [0, 0, 0]] not in three  # a split never merges again


def _planted_three(tmp_path: Path) -> Dataset:
    """``a`` and ``b`` (``b`` with 42% of its labels flipped) read |x0| + |x1|; ``c`` reads
    |x2| + |x3|. A bottom of 4 units holds one of the two functions: a and b gain from
    sharing theirs, c loses by sharing with either."""
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.normal(0, 1, (n, 4))
    p1 = 1 / (1 + np.exp(-3 * (np.abs(x[:, 0]) + np.abs(x[:, 1]) - 1.6)))
    p2 = 1 / (1 + np.exp(-3 * (np.abs(x[:, 2]) + np.abs(x[:, 3]) - 1.6)))
    df = pl.DataFrame({f"x{k}": x[:, k] for k in range(4)}).with_columns(
        pl.Series("a", (rng.random(n) < p1).astype(np.int8)),
        pl.Series("b", ((rng.random(n) < p1) ^ (rng.random(n) < 0.42)).astype(np.int8)),
        pl.Series("c", (rng.random(n) < p2).astype(np.int8)))
    path = tmp_path / "three.parquet"
    df.write_parquet(path)
    return load_dataset(str(path), labels=["a", "b", "c"], cache=False, seed=0)


def test_mtl_finds_the_planted_sharing_better_than_sharing_all_or_nothing(
        tmp_path: Path) -> None:
    ds = _planted_three(tmp_path)
    config = TrainConfig(epochs=20, batch_size=128, lr=0.01, progress=False, seed=0,
                         threads=1, patience=4)
    ctx = SearchContext(dataset=ds, spec=ArchSpec(embed_dim=4, mlp=[8]), train=config,
                        seed=0, options={"bottom": [4], "tower": [4], "experts": "0"})
    result = MultiTaskSearch().search(ctx)
    assert result.extra["chosen"] == "L1: a+b | c"
    assert result.spec.multitask is not None
    assert result.spec.multitask.sharing == [[0, 0, 1]]
    scores = result.scores
    assert scores["L1: a+b | c"] > scores["L1: a+b+c"] + 0.05  # sharing everything
    assert scores["L1: a+b | c"] > scores["L1: a | b | c"]  # sharing nothing
    result.spec.validate(ds.schema)


def test_mtl_finds_nothing_on_single_label_data(tiny_synthetic: Dataset) -> None:
    ctx = SearchContext(dataset=tiny_synthetic, spec=ArchSpec(mlp=[8]),
                        train=CONFIG, options={"fast": True})
    result = MultiTaskSearch().search(ctx)
    assert result.no_result is not None and "one label" in result.no_result
    assert result.spec.multitask is None


def test_cli_search_with_labels_writes_per_task_results_and_a_report(
        tmp_path: Path, easy_hard: Dataset) -> None:
    rng = np.random.default_rng(1)
    n = 1500
    x = rng.normal(0, 1, (n, 3))
    data = tmp_path / "two.csv"
    pl.DataFrame({f"x{k}": x[:, k] for k in range(3)}).with_columns(
        pl.Series("click", (x[:, 0] > 0).astype(np.int8)),
        pl.Series("buy", (x[:, 0] + x[:, 1] > 1).astype(np.int8))).write_csv(data)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "search", "--data", str(data), "--labels", "click,buy", "--methods", "mtl", "--fast",
        "--epochs", "2", "--threads", "1", "--no-progress", "--seed", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    r = json.loads((out / "result.json").read_text())
    assert r["data"]["labels"] == ["click", "buy"]
    for split in ("valid", "test"):
        assert {"auc:click", "auc:buy", "logloss:click", "logloss:buy"} <= set(
            r["metrics"][split])
    assert "auc:buy" in r["baselines"]["deepfm"]["test"]  # one deepfm per task
    stage = r["stages"][0]
    assert stage["method"] == "mtl" and stage["chosen"] == stage["ranking"][0]
    assert r["spec"]["multitask"]["backbone"] in ("shared_bottom", "mmoe")
    assert "per task: click AUC" in result.output
    assert (out / "report.html").exists()
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    scores = tmp_path / "scores.csv"
    done = CliRunner().invoke(app, ["predict", "--model", str(out), "--data", str(data),
                                    "--out", str(scores)])
    assert done.exit_code == 0, done.output
    probs = pl.read_csv(scores)
    assert probs.columns == ["probability_click", "probability_buy"] and probs.height == n
