"""The CUDA paths of the Trainer, checked where they can run without a GPU: bfloat16
autocast (CPU autocast takes bf16 too), the pinned-batch prefetch thread, and a clear error
for a CUDA device that is not there."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.dataset import Batch, Dataset
from autodrs.models import backbone_spec, build_model
from autodrs.train.trainer import TrainConfig, Trainer, device_batches, resolve_device


def _last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_autocast_trains_and_keeps_float32_weights(
        tiny_synthetic: Dataset, fast_config: TrainConfig, precision: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, backbone_spec("deepfm", 8))
    dtypes: list[torch.dtype] = []
    _last_linear(model).register_forward_hook(
        lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
    fast_config.precision = precision
    fast_config.batch_size = 256
    result = Trainer(fast_config).fit(model, tiny_synthetic.train, tiny_synthetic.valid)
    want = torch.bfloat16 if precision == "bf16" else torch.float32
    assert dtypes and set(dtypes) == {want}  # the training steps ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.valid["auc"] > 0.6


def test_unknown_precision_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="precision 'fp8'"):
        Trainer(TrainConfig(precision="fp8"))


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def _batches(n: int) -> Iterator[Batch]:
    for i in range(n):
        yield Batch(torch.full((2, 1), i), torch.zeros(2, 0), {}, torch.zeros(2))


def test_pinned_prefetch_keeps_order_and_pins_every_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pinned: list[int] = []

    def fake_pin(self: Batch) -> Batch:  # pinning needs CUDA; record it instead
        pinned.append(int(self.cat[0, 0]))
        return self

    monkeypatch.setattr(Batch, "pin_memory", fake_pin)
    got = [int(b.cat[0, 0]) for b in device_batches(_batches(7), torch.device("cpu"), True)]
    assert got == list(range(7)) and pinned == list(range(7))
    # a consumer that stops early leaves no thread blocked on the queue
    it = device_batches(_batches(50), torch.device("cpu"), True, depth=1)
    assert int(next(it).cat[0, 0]) == 0
    it.close()


def test_pinned_prefetch_raises_the_producers_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Batch, "pin_memory", lambda self: self)

    def broken() -> Iterator[Batch]:
        yield from _batches(2)
        raise OSError("shard 3 is truncated")

    with pytest.raises(OSError, match="shard 3"):
        list(device_batches(broken(), torch.device("cpu"), True))


def test_train_bf16_flag_is_recorded(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", "synthetic?rows=3000&seed=1",
                                      "--model", "fm", "--epochs", "1", "--bf16",
                                      "--no-progress", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["precision"] == "bf16"
