"""Every backbone starts as the reference libraries start theirs: embedding tables
N(0, 1e-4), linear layers xavier-normal, zero biases (``autodrs.nn.init``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autodrs.models import BACKBONES, backbone_spec, build_model
from autodrs.nn.init import EMBEDDING_STD, init_embedding, linear
from autodrs.nn.layers import MLP, CrossNetV2, SelfAttentionInteraction


def _xavier_std(weight: torch.Tensor) -> float:
    fan_out, fan_in = weight.shape
    return math.sqrt(2.0 / (fan_in + fan_out))


def _tower_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The linear layers of the backbone's towers (the MLP, cross and attention layers)."""
    out = []
    for part in ("mlp", "cross", "attention"):
        module = getattr(model, part, None)
        if module is not None:
            out += [(f"{part}.{n}", m) for n, m in module.named_modules()
                    if isinstance(m, nn.Linear)]
    return out


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_starts_with_the_reference_init(name, tiny_synthetic):
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, backbone_spec(name))
    tables = torch.cat([t.weight.flatten() for t in model.embedding.tables])
    assert tables.numel() > 10_000
    assert abs(float(tables.mean())) < 0.05 * EMBEDDING_STD
    assert float(tables.std()) == pytest.approx(EMBEDDING_STD, rel=0.05)
    linears = _tower_linears(model)
    if model.mlp is not None or model.cross is not None or model.attention is not None:
        assert linears, f"{name} has a deep tower but no linear layer was found"
    for where, layer in linears:
        w = layer.weight.detach()
        if w.numel() < 1000:
            continue  # too few draws to measure a spread
        assert float(w.std()) == pytest.approx(_xavier_std(w), rel=0.1), where
        assert float(w.abs().max()) < 6 * _xavier_std(w), where  # a normal, not a heavy tail
        if layer.bias is not None:
            assert torch.count_nonzero(layer.bias) == 0, where


def test_attention_projections_are_xavier_normal_per_projection():
    torch.manual_seed(0)
    att = SelfAttentionInteraction(32, n_fields=6, layers=1, heads=2)
    attn = att.blocks[0]["attn"]
    for chunk in attn.in_proj_weight.detach().chunk(3):  # query, key, value: each [d, d]
        assert float(chunk.std()) == pytest.approx(_xavier_std(chunk), rel=0.1)
    assert torch.count_nonzero(attn.in_proj_bias) == 0
    assert torch.count_nonzero(attn.out_proj.bias) == 0
    assert float(attn.out_proj.weight.std()) == pytest.approx(
        _xavier_std(attn.out_proj.weight), rel=0.1)


def test_the_init_differs_from_pytorch_default():
    """PyTorch's default Linear draws Kaiming-uniform weights (bounded by 1/sqrt(fan_in)) and
    non-zero biases; these layers must not."""
    torch.manual_seed(0)
    mlp, cross = MLP(128, [256, 128]), CrossNetV2(128, 2)
    for layer in [*(m for m in mlp.net if isinstance(m, nn.Linear)), *cross.layers]:
        fan_in = layer.weight.shape[1]
        assert float(layer.weight.abs().max()) > 1.0 / math.sqrt(fan_in)  # beyond the default's bound
        assert torch.count_nonzero(layer.bias) == 0
    assert torch.count_nonzero(linear(4, 3, bias=False).weight) == 12


def test_init_embedding_keeps_the_padding_row_zero():
    torch.manual_seed(0)
    table = init_embedding(nn.Embedding(5000, 8, padding_idx=0))
    assert torch.count_nonzero(table.weight[0]) == 0
    assert float(table.weight[1:].std()) == pytest.approx(EMBEDDING_STD, rel=0.05)


def test_sequence_and_bucket_tables_share_the_embedding_init(movielens, tiny_synthetic):
    torch.manual_seed(0)
    model = build_model(movielens.schema, backbone_spec("dnn"))
    genres = model.embedding.sequences["genres"].weight.detach()
    assert torch.count_nonzero(genres[0]) == 0  # padding
    assert float(genres[1:].abs().max()) < 10 * EMBEDDING_STD
    spec = backbone_spec("deepfm").copy(numerical={"num0": "bucket"})
    bucket = build_model(tiny_synthetic.schema, spec).embedding.numericals["num0"].table.weight
    assert float(bucket.abs().max()) < 10 * EMBEDDING_STD


@pytest.mark.parametrize("name", list(BACKBONES))
def test_the_read_out_head_starts_xavier_normal_with_zero_bias(name, tiny_synthetic):
    """FuxiCTR's init covers the output layer too; PyTorch's default head would have a
    standard deviation 0.41 times the xavier one and a non-zero bias."""
    torch.manual_seed(0)
    model = build_model(tiny_synthetic.schema, backbone_spec(name))
    if name in ("lr", "fm"):
        assert model.head is None  # no deep part: the logit is the linear and FM terms
        return
    w = model.head.weight.detach()
    assert w.numel() >= 16, name
    assert float(w.std()) == pytest.approx(_xavier_std(w), rel=0.3), name
    assert torch.count_nonzero(model.head.bias) == 0, name
