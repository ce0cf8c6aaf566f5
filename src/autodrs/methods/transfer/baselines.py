"""The hand-made transfers AutoFT is compared with, on the same target split and trainer:

- ``scratch``: the spec trained on the target domain alone (no source);
- ``finetune_all``: the pre-trained model, every parameter fine-tuned on the target;
- ``freeze_embeddings``: the pre-trained model with its embedding tables (and first-order
  weights) frozen, the rest (MLP, interaction layers, output) fine-tuned.

Each returns an ``Outcome`` of a plain CTR model, servable like any other.
"""

from __future__ import annotations

import time

import torch

from autodrs.data.dataset import Dataset
from autodrs.experiment import Outcome, fit_spec, with_training
from autodrs.methods.transfer.autoft import Pretrained, transferred
from autodrs.models.builder import count_parameters
from autodrs.train.trainer import TrainConfig, Trainer

TRANSFER_BASELINES = ("scratch", "finetune_all", "freeze_embeddings")


def fine_tune(pre: Pretrained, target: Dataset, config: TrainConfig,
              freeze_embeddings: bool = False) -> Outcome:
    """Fine-tune the pre-trained model on ``target`` (all of it, or all but its
    embedding tables and first-order weights)."""
    t0 = time.perf_counter()
    config = with_training(config, pre.model.spec)
    model, _ = transferred(pre, target, config.seed)
    frozen: set[int] = set()
    if freeze_embeddings:
        frozen = {id(p) for p in model.embedding.parameters()}
        if model.linear is not None:
            frozen |= {id(p) for p in model.linear.weights.parameters()}
    params = [p for p in model.parameters() if id(p) not in frozen]
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    trainer = Trainer(config)
    if params:
        fit = trainer.fit(model, target.train, target.valid, parameters=params)
    else:  # nothing left to tune (LR with frozen weights): the pre-trained model as it is
        fit = trainer.fit(model, target.train, target.valid,
                          parameters=[torch.nn.Parameter(torch.zeros(()))])
    metrics = {"valid": fit.valid, "test": trainer.evaluate(model, target.test)}
    model.requires_grad_(True)
    return Outcome(model=model, fit=fit, metrics=metrics, params=count_parameters(model),
                   seconds=time.perf_counter() - t0)


def run_baseline(name: str, pre: Pretrained, target: Dataset, config: TrainConfig) -> Outcome:
    if name == "scratch":
        return fit_spec(target, pre.model.spec, config)
    if name == "finetune_all":
        return fine_tune(pre, target, config)
    if name == "freeze_embeddings":
        return fine_tune(pre, target, config, freeze_embeddings=True)
    raise ValueError(f"unknown transfer baseline {name!r}; choose from "
                     f"{', '.join(TRANSFER_BASELINES)}")
