"""What the comprehensive compression methods (DeepLight, UMEC) share: structured pruning
of the MLP's hidden neurons, the derived spec's MLP widths, a trainer hook that keeps the
last epoch's weights, and the inference latency of a model against the dense one.

A hidden neuron is pruned by zeroing its row of the layer's weight and its bias, its batch
norm's scale and shift (so it outputs exactly 0 in evaluation) and its column in the next
layer (or the read-out head). A model whose pruned neurons are removed then computes the
same outputs, which is the model the derived ``spec.mlp`` builds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.models.builder import CTRModel
from autodrs.train.trainer import Trainer, TrainHook


@dataclass
class HiddenLayer:
    linear: nn.Linear
    norm: nn.BatchNorm1d | None
    following: nn.Linear  # the next hidden layer, or the read-out head


def hidden_layers(model: CTRModel) -> list[HiddenLayer]:
    """The MLP's hidden layers with the layer that reads each one. The MLP must be the
    deep head's only part (its outputs are the head's whole input)."""
    if model.mlp is None:
        return []
    if model.cross is not None or model.attention is not None or model.head is None:
        raise ValueError("structured MLP pruning needs the MLP as the deep head's only part")
    mods = list(model.mlp.net)
    linears = [(i, m) for i, m in enumerate(mods) if isinstance(m, nn.Linear)]
    out = []
    for k, (i, lin) in enumerate(linears):
        norm = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1],
                                                                nn.BatchNorm1d) else None
        following = linears[k + 1][1] if k + 1 < len(linears) else model.head
        out.append(HiddenLayer(lin, norm, following))
    return out


@torch.no_grad()
def zero_neurons(layer: HiddenLayer, drop: torch.Tensor) -> None:
    """Zero the neurons ``drop`` (a bool mask over the layer's outputs)."""
    layer.linear.weight[drop] = 0.0
    if layer.linear.bias is not None:
        layer.linear.bias[drop] = 0.0
    if layer.norm is not None and layer.norm.affine:
        layer.norm.weight[drop] = 0.0
        layer.norm.bias[drop] = 0.0
    layer.following.weight[:, drop] = 0.0


def neuron_norms(layer: HiddenLayer) -> torch.Tensor:
    """A neuron's magnitude: the L2 norm of its incoming weights and bias."""
    w = layer.linear.weight.detach()
    norms = w.pow(2).sum(1)
    if layer.linear.bias is not None:
        norms = norms + layer.linear.bias.detach().pow(2)
    return norms.sqrt()


@torch.no_grad()
def prune_neurons(model: CTRModel, fraction: float) -> list[int]:
    """Zero the ``fraction`` of each hidden layer's neurons with the smallest norms (always
    keeping one); returns the kept width per layer."""
    kept = []
    for layer in hidden_layers(model):
        norms = neuron_norms(layer)
        n_drop = min(len(norms) - 1, int(round(fraction * len(norms))))
        drop = torch.zeros(len(norms), dtype=torch.bool)
        if n_drop > 0:
            drop[torch.argsort(norms)[:n_drop]] = True
            zero_neurons(layer, drop)
        kept.append(int(len(norms) - n_drop))
    return kept


def live_widths(model: CTRModel) -> list[int]:
    """Per hidden layer, the neurons not pruned (a non-zero row or bias), at least 1."""
    return [max(1, int((neuron_norms(layer) > 0).sum())) for layer in hidden_layers(model)]


@torch.no_grad()
def magnitude_threshold(values: torch.Tensor, fraction: float) -> float:
    """The magnitude below which ``fraction`` of ``values`` lie (0 for none)."""
    n = int(round(fraction * values.numel()))
    if n <= 0:
        return 0.0
    return float(values.abs().flatten().kthvalue(min(n, values.numel())).values)


class KeepLast(TrainHook):
    """Holds the weights of the last epoch: a pruning schedule's last epoch is its sparsest
    model, which the trainer's best-epoch restore would otherwise replace."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: Trainer, model: nn.Module, epoch: int,
                     metrics: dict[str, float]) -> None:
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def latency(models: dict[str, nn.Module], batch: Batch, repeats: int = 30) -> dict[str, Any]:
    """Milliseconds of one forward pass of each model on ``batch`` (evaluation mode, no
    gradients): the fastest of ``repeats`` passes, the models run in turn within each
    repeat. The minimum, as ``timeit`` advises: on a shared machine other processes only
    ever add time, and the median still moved by several times between runs there."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        m.eval()
        m(batch)  # warm-up
    for _ in range(repeats):
        for name, m in models.items():
            t0 = time.perf_counter()
            m(batch)
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: round(float(np.min(t)), 4) for name, t in times.items()}


def choose_level(points: list[dict[str, Any]], tolerance: float, fixed: bool) -> float:
    """The largest ``sparsity`` of ``points`` (the dense run first, at 0) whose validation
    AUC is within ``tolerance`` of the dense run's (0.0 when none is); with a fixed target,
    the one pruned point's."""
    pruned = [p for p in points if p["sparsity"] > 0]
    if fixed:
        return float(pruned[-1]["sparsity"])
    dense = points[0]["valid_auc"]
    good = [p["sparsity"] for p in pruned if p["valid_auc"] >= dense - tolerance]
    return float(max(good)) if good else 0.0
