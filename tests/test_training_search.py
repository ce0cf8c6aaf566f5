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
from autodrs.spec import SpecError


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
    assert learned.spec.loss.name == "bce"
    assert learned.extra["controller_steps"] > 0


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
    # the learned strengths are in the spec and a model built from it is regularised by them
    spec = result.spec
    assert spec.l2_fields == result.scores
    model = build_model(ds.schema, spec)
    assert float(model.regularization().detach()) > 0


def test_lambdaopt_lookahead_gradient_matches_finite_differences(tiny_synthetic):
    """d valid_loss(theta'(lambda)) / d lambda, checked numerically on a small model."""
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, backbone_spec("fm").copy(embed_dim=4))
    wrapper = LambdaOptModel(model, init=0.3)
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
    with pytest.raises(SearchError, match="option epochs='many' is not a valid int"):
        get_method("optim").search(_ctx(tiny_synthetic, fast_config, epochs="many"))
