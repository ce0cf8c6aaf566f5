"""Training search: AutoLoss and lambda-Opt learn what their papers say they learn."""

from __future__ import annotations

import pytest
import torch

from autodrs.data.dataset import load_dataset
from autodrs.experiment import fit_spec
from autodrs.methods.training.lambdaopt import LambdaOptModel
from autodrs.models import backbone_spec, build_model
from autodrs.nn.regularization import field_l2_penalty
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec, LossSpec, SpecError
from autodrs.train.losses import (
    LossController,
    controller_params,
    load_controller,
    mixture_weights,
)


def _ctx(ds, config, **options):
    return SearchContext(ds, backbone_spec("deepfm"), config, options=options)


def test_autoloss_controller_learns_to_avoid_a_harmful_loss(tiny_synthetic, fast_config):
    fast_config.epochs, fast_config.batch_size, fast_config.lr = 3, 256, 1e-2
    fast_config.patience = 5
    opts = {"candidates": ["bce", "flipped"], "every": 2}
    frozen = get_method("autoloss").search(_ctx(tiny_synthetic, fast_config, controller_lr=0.0,
                                                **opts))
    learned = get_method("autoloss").search(_ctx(tiny_synthetic, fast_config,
                                                 controller_lr=5e-2, **opts))
    assert learned.ranking[0] == "bce"
    assert learned.scores["bce"] > 0.9
    assert learned.scores["bce"] > frozen.scores["bce"] + 0.2
    # avoiding the flipped loss makes a better model than the untrained mixture
    assert (learned.extra["metrics"]["test"]["auc"]
            > frozen.extra["metrics"]["test"]["auc"] + 0.05)
    assert learned.extra["controller_steps"] > 0
    # the delivered loss is the controller itself (per-example selection), not its top pick
    loss = learned.spec.loss
    assert loss.name == "autoloss" and loss.params["candidates"] == ["bce", "flipped"]
    controller, _, tau = load_controller(ArchSpec.from_json(learned.spec.to_json()).loss.params)
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    logits = torch.tensor([-2.0, 2.0, -2.0, 2.0])
    weights = mixture_weights(controller, tau, logits, y)
    assert float(weights[:, 0].mean()) > 0.9
    # its retrain learns the way the search did: far better than the untrained mixture's
    refit = fit_spec(tiny_synthetic, learned.spec, fast_config)
    assert refit.metrics["test"]["auc"] > frozen.extra["metrics"]["test"]["auc"] + 0.05


def _controller_favouring(index: int, candidates: list[str]) -> dict:
    """AutoLoss params whose controller gives candidate ``index`` almost all the weight."""
    controller = LossController(len(candidates))
    with torch.no_grad():
        controller.net[2].weight.zero_()
        controller.net[2].bias.fill_(-10.0)
        controller.net[2].bias[index] = 10.0
    return controller_params(controller, candidates, temperature=1.0)


def test_an_autoloss_spec_retrains_with_its_controllers_selection(tiny_synthetic,
                                                                   fast_config):
    fast_config.lr = 1e-2
    base = backbone_spec("deepfm")
    good = base.copy(loss=LossSpec("autoloss", _controller_favouring(0, ["bce", "flipped"])))
    bad = base.copy(loss=LossSpec("autoloss", _controller_favouring(1, ["bce", "flipped"])))
    assert fit_spec(tiny_synthetic, good, fast_config).metrics["test"]["auc"] > 0.6
    # a controller that selects the flipped loss trains a model that ranks backwards
    assert fit_spec(tiny_synthetic, bad, fast_config).metrics["test"]["auc"] < 0.45
    broken = base.copy(loss=LossSpec("autoloss", {"candidates": ["bce", "nope"]}))
    with pytest.raises(SpecError, match="unknown autoloss candidates"):
        broken.validate(tiny_synthetic.schema)
    wrong = dict(_controller_favouring(0, ["bce", "flipped"]), candidates=["bce"])
    with pytest.raises(SpecError, match="does not fit 1 candidates"):
        base.copy(loss=LossSpec("autoloss", wrong)).validate(tiny_synthetic.schema)


def test_autoloss_rejects_unknown_candidates(tiny_synthetic, fast_config):
    with pytest.raises(ValueError, match="unknown AutoLoss candidates"):
        get_method("autoloss").search(_ctx(tiny_synthetic, fast_config, candidates=["nope"]))


def test_lambdaopt_reduces_overfitting(tiny_synthetic, fast_config):
    # 3,200 rows, a high learning rate and no early stop: plain DeepFM overfits. A test
    # split of 400 rows is noisy, so the gain is measured over four splits of the data.
    fast_config.epochs, fast_config.batch_size, fast_config.lr = 6, 256, 1e-2
    fast_config.patience = 10
    gains = []
    for seed in range(4):
        ds = tiny_synthetic if seed == 0 else load_dataset("synthetic?rows=4000&seed=1",
                                                           seed=seed)
        plain = fit_spec(ds, backbone_spec("deepfm"), fast_config)
        result = get_method("lambdaopt").search(_ctx(ds, fast_config, lambda_lr=1e-2))
        gains.append(result.extra["metrics"]["test"]["auc"] - plain.metrics["test"]["auc"])
        assert all(v >= 0 for v in result.scores.values())
        assert max(result.scores.values()) > 0
    assert sum(gains) / len(gains) > 0.01
    # the spec carries lambda-Opt's rule, not its last strengths as constants: a fit of the
    # spec learns its strengths again alongside the weights, so under the same seed and
    # config it is the model the search trained
    spec = ArchSpec.from_json(result.spec.to_json())
    assert spec.adaptive_l2 is not None and spec.adaptive_l2.lr == pytest.approx(1e-2)
    assert spec.l2_fields == {}
    refit = fit_spec(ds, spec, fast_config)
    assert refit.metrics["test"]["auc"] == pytest.approx(
        result.extra["metrics"]["test"]["auc"], abs=1e-9)
    constant = fit_spec(ds, spec.copy(adaptive_l2=None, l2_fields=result.scores),
                        fast_config)
    assert constant.metrics["test"]["auc"] != pytest.approx(
        refit.metrics["test"]["auc"], abs=1e-6)
    with pytest.raises(SpecError, match="drop the constant l2_fields"):
        spec.copy(l2_fields=result.scores).validate(ds.schema)


def test_lambdaopt_lookahead_gradient_matches_finite_differences(tiny_synthetic):
    """d valid_loss(theta'(lambda)) / d lambda, checked numerically on a small model."""
    torch.manual_seed(0)
    # float64: the embeddings start at N(0, 1e-4), too small for float32 differences
    model = build_model(tiny_synthetic.schema, backbone_spec("fm").copy(embed_dim=4)).double()
    wrapper = LambdaOptModel(model, init=0.3).double()
    owned = wrapper.owned
    params = [p for p, _ in owned]
    theta = {id(p): p.detach().clone() for p in params}

    def lookahead(lam: torch.Tensor) -> torch.Tensor:
        # one SGD step on the penalty alone, then the penalty-free size of the result
        penalty = field_l2_penalty(owned, lam)
        grads = torch.autograd.grad(penalty, params, create_graph=True)
        stepped = {id(p): theta[id(p)] - 0.1 * g for p, g in zip(params, grads, strict=True)}
        return field_l2_penalty(owned, torch.ones_like(lam), stepped)

    lam = wrapper.lam.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lookahead(lam), lam)
    eps = 1e-3
    for i in (0, 3):
        up, down = lam.detach().clone(), lam.detach().clone()
        up[i] += eps
        down[i] -= eps
        numeric = (lookahead(up) - lookahead(down)).detach() / (2 * eps)
        assert float(grad[i]) == pytest.approx(float(numeric), rel=1e-2)


def test_l2_fields_validated(tiny_synthetic):
    spec = backbone_spec("fm").copy(fields=["r0"], l2_fields={"r1": 0.1})
    with pytest.raises(SpecError, match="l2_fields names 'r1'"):
        spec.validate(tiny_synthetic.schema)
    with pytest.raises(SpecError, match="must be >= 0"):
        backbone_spec("fm").copy(l2_fields={"r0": -1.0}).validate(tiny_synthetic.schema)


def test_optim_raises_a_learning_rate_too_low_to_learn_and_the_spec_trains_at_it(
        tiny_synthetic, fast_config):
    fast_config.lr = 1e-5  # two epochs at this rate leave DeepFM near chance
    result = get_method("optim").search(_ctx(tiny_synthetic, fast_config,
                                             lr_factors="1,300,0.5"))
    assert result.extra["start"] == "lr=1e-05, batch=512"
    assert result.ranking[0] == "lr=0.003, batch=512"
    assert result.extra["lr"] == pytest.approx(3e-3)
    assert set(result.scores) == {"lr=1e-05, batch=512", "lr=0.003, batch=512",
                                  "lr=5e-06, batch=512"}
    assert result.scores["lr=0.003, batch=512"] > result.scores["lr=1e-05, batch=512"] + 0.05
    assert result.spec.training.lr == pytest.approx(3e-3)
    assert result.spec.provenance[-1]["method"] == "optim"
    # the spec carries its rate: a fit under the run's (too low) config trains at 3e-3
    refit = fit_spec(tiny_synthetic, result.spec, fast_config)
    assert refit.metrics["valid"]["auc"] == pytest.approx(result.scores["lr=0.003, batch=512"])


def test_optim_keeps_the_spec_when_no_rate_validates_better(tiny_synthetic, fast_config):
    fast_config.lr = 3e-3
    # rates 1000x off either way cannot beat a rate that learns
    result = get_method("optim").search(_ctx(tiny_synthetic, fast_config,
                                             lr_factors="1,0.001,1000"))
    assert result.ranking[0] == "lr=0.003, batch=512"
    assert result.spec.training.lr is None  # the spec as it came: the command's setting
    assert len(result.scores) == 3


def test_optim_batch_sizes_and_bad_options(tiny_synthetic, fast_config):
    result = get_method("optim").search(_ctx(tiny_synthetic, fast_config, lr_factors="1",
                                             batch_sizes="512,128"))
    assert set(result.scores) == {"lr=0.001, batch=512", "lr=0.001, batch=128"}
    chosen = result.ranking[0]
    assert result.scores[chosen] == max(result.scores.values())
    assert result.spec.training.batch_size == (128 if chosen.endswith("batch=128") else None)
    for bad in ("0,1", "fast", ""):
        with pytest.raises(ValueError, match="lr_factors must be positive numbers"):
            get_method("optim").search(_ctx(tiny_synthetic, fast_config, lr_factors=bad))
    with pytest.raises(SearchError, match="option search_epochs='many' is not a valid int"):
        get_method("optim").search(_ctx(tiny_synthetic, fast_config, search_epochs="many"))
