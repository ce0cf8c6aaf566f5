"""The one Trainer: early stopping, best weights, NaN guard, determinism, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autodrs.experiment import fit_spec
from autodrs.models import backbone_spec, build_model
from autodrs.train.losses import PER_SAMPLE_LOSSES, make_loss
from autodrs.train.metrics import group_auc
from autodrs.train.trainer import Trainer, TrainHook, TrainingDiverged


def test_same_seed_gives_same_metrics(tiny_synthetic, fast_config):
    a = fit_spec(tiny_synthetic, backbone_spec("deepfm"), fast_config)
    b = fit_spec(tiny_synthetic, backbone_spec("deepfm"), fast_config)
    assert a.metrics == b.metrics
    fast_config.seed = 1
    c = fit_spec(tiny_synthetic, backbone_spec("deepfm"), fast_config)
    assert c.metrics != a.metrics


def test_early_stopping_restores_the_best_epoch(tiny_synthetic, fast_config):
    # a big DNN with a high learning rate overfits 3,200 rows quickly
    fast_config.epochs, fast_config.patience, fast_config.lr = 12, 2, 3e-2
    spec = backbone_spec("dnn").copy(mlp=[512, 512])
    model = build_model(tiny_synthetic.schema, spec)
    trainer = Trainer(fast_config)
    result = trainer.fit(model, tiny_synthetic.train, tiny_synthetic.valid)
    aucs = [h["auc"] for h in result.history]
    assert result.stopped_early and len(aucs) < 12
    assert result.best_epoch == int(np.argmax(aucs)) + 1
    assert len(aucs) - result.best_epoch == 2
    # the restored weights are the best epoch's, not the last epoch's
    assert trainer.evaluate(model, tiny_synthetic.valid)["auc"] == pytest.approx(max(aucs))


def test_still_improving_flags_a_fit_the_epoch_cap_ended(tiny_synthetic, fast_config):
    # FM at a small learning rate on 3,200 rows: every one of 3 epochs validates better
    fast_config.epochs, fast_config.patience, fast_config.lr = 3, 2, 1e-3
    capped = fit_spec(tiny_synthetic, backbone_spec("fm"), fast_config)
    aucs = [h["auc"] for h in capped.fit.history]
    assert len(aucs) == 3 and aucs == sorted(aucs)
    assert capped.fit.still_improving and capped.summary()["still_improving"]
    # the overfitting DNN of the test above stops early: not flagged
    fast_config.epochs, fast_config.lr = 12, 3e-2
    stopped = fit_spec(tiny_synthetic, backbone_spec("dnn").copy(mlp=[512, 512]), fast_config)
    assert stopped.fit.stopped_early and not stopped.fit.still_improving
    # nor is a fit whose last epoch did not validate best, though every epoch ran
    fast_config.epochs, fast_config.patience = len(stopped.fit.history), 99
    again = fit_spec(tiny_synthetic, backbone_spec("dnn").copy(mlp=[512, 512]), fast_config)
    assert again.fit.best_epoch < fast_config.epochs and not again.fit.still_improving


def test_divergence_raises_a_clear_error(tiny_synthetic, fast_config):
    class Poison(TrainHook):
        def on_step(self, trainer, model, step, batch, loss):
            with torch.no_grad():
                model.embedding.tables[0].weight.fill_(float("nan"))

    trainer = Trainer(fast_config, hooks=[Poison()])
    model = build_model(tiny_synthetic.schema, backbone_spec("fm"))
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        trainer.fit(model, tiny_synthetic.train, tiny_synthetic.valid)


def test_checkpoint_written_after_each_improvement(tiny_synthetic, fast_config, tmp_path):
    fast_config.checkpoint = str(tmp_path / "best.pt")
    outcome = fit_spec(tiny_synthetic, backbone_spec("lr"), fast_config)
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    for k, v in outcome.model.state_dict().items():
        torch.testing.assert_close(state[k], v)


def test_max_steps_limits_training(tiny_synthetic, fast_config):
    fast_config.max_steps = 3
    result = fit_spec(tiny_synthetic, backbone_spec("lr"), fast_config).fit
    assert result.samples == 3 * fast_config.batch_size


@pytest.mark.parametrize("name", list(PER_SAMPLE_LOSSES))
def test_losses_prefer_correct_predictions(name):
    loss = make_loss(name)
    y = torch.tensor([1.0, 0.0])
    assert loss(torch.tensor([3.0, -3.0]), y) < loss(torch.tensor([-3.0, 3.0]), y)


def test_group_auc_weights_groups_by_size():
    labels = np.array([1, 0, 1, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.3, 0.5, 0.5])
    groups = np.array([0, 0, 1, 1, 1, 2, 2])  # group 2 has one class only: skipped
    assert group_auc(labels, scores, groups) == pytest.approx((1.0 * 2 + 0.0 * 3) / 5)


def test_l2_on_embeddings_shrinks_them(tiny_synthetic, fast_config):
    plain = fit_spec(tiny_synthetic, backbone_spec("fm"), fast_config).model
    reg = fit_spec(tiny_synthetic, backbone_spec("fm").copy(l2_embedding=1.0), fast_config).model
    def norm(model: torch.nn.Module) -> float:
        return float(model.embedding.tables[0].weight.detach().norm())

    assert norm(reg) < norm(plain)


def test_a_training_batch_never_holds_a_single_row(tiny_synthetic, fast_config):
    """Batch norm cannot normalise one row: a lone last row joins the batch before it."""
    n = len(tiny_synthetic.train)
    sizes = [len(b.label) for b in tiny_synthetic.train.batches(n - 1, shuffle=True)]
    assert sizes == [n]
    sizes = [len(b.label) for b in tiny_synthetic.train.batches(n - 2, shuffle=True)]
    assert sizes == [n - 2, 2]
    spec = backbone_spec("deepfm", 4).copy(batch_norm=True)
    fast_config.batch_size = n - 1
    fit_spec(tiny_synthetic, spec, fast_config)  # would raise on a batch of one
