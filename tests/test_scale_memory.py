"""What keeps memory bounded on large tables: pair products taken a slice of pairs at a
time give the very products of the one-shot path (and its gradients, up to the order of a sum)."""

from __future__ import annotations

import itertools

import torch

from autodrs.nn.layers import PairProducts


def test_pair_products_in_slices_equal_one_shot(monkeypatch):
    torch.manual_seed(0)
    fields, dim, rows = 9, 5, 7
    pairs = list(itertools.combinations(range(fields), 2))  # 36 pairs
    layer = PairProducts(pairs)
    x = torch.randn(rows, fields, dim, requires_grad=True)
    whole = layer(x)
    (g_whole,) = torch.autograd.grad(whole.square().sum(), x)
    expected = torch.stack([(x[:, i] * x[:, j]).sum(-1) for i, j in pairs], 1)
    assert torch.equal(whole, expected)
    # 3 pairs a slice: 12 slices, the last one short
    monkeypatch.setattr(PairProducts, "CHUNK_ELEMENTS", rows * dim * 3)
    sliced = layer(x)
    (g_sliced,) = torch.autograd.grad(sliced.square().sum(), x)
    assert sliced.shape == (rows, len(pairs))
    assert torch.equal(sliced, whole)
    # the gradient sums the same terms in another order
    assert torch.allclose(g_sliced, g_whole, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(layer(x), whole)


def test_autodim_tables_hold_only_the_ids_the_training_rows_use():
    from autodrs.data.dataset import Batch, EncodedData
    from autodrs.data.schema import Field, Schema
    from autodrs.methods.embedding.autodim import AutoDimEmbedding, used_ids
    from autodrs.search.gradient import Temperature
    from autodrs.spec import ArchSpec

    big = Field("big", "categorical", vocab=[str(i) for i in range(997)])  # 1,000 ids
    small = Field("small", "categorical", vocab=["a", "b"])  # 5 ids
    schema = Schema([big, small], label="y", fitted=True)
    spec = ArchSpec(embed_dim=4)
    rng = torch.Generator().manual_seed(0)
    rows = 64
    cat = torch.stack([torch.randint(10, 30, (rows,), generator=rng),
                       torch.randint(0, 5, (rows,), generator=rng)], 1)
    train = EncodedData(cat=cat, num=torch.zeros(rows, 0), seq={},
                        label=torch.zeros(rows))
    used = used_ids(train, schema, ["big", "small"])
    assert torch.equal(used["big"], torch.unique(cat[:, 0]))
    assert used["small"] is None  # most of its ids are used: a full table
    candidates = [2, 4]
    torch.manual_seed(0)
    emb = AutoDimEmbedding(schema, spec, ["big", "small"], candidates, Temperature(),
                           used=used)
    big_table = emb.fields[0].table.weight
    assert big_table.shape == (len(used["big"]) + 1, 4)  # the used ids and one shared row
    assert emb.fields[1].table.weight.shape == (5, 4)
    # a used id reads its own row, every unused id the shared last row
    seen = int(used["big"][3])
    probe = torch.tensor([seen, 0, 500, 999])
    rows_of = emb.rows_0[probe].long()
    assert rows_of.tolist() == [3, len(used["big"]), len(used["big"]), len(used["big"])]
    emb.eval()
    batch = Batch(torch.stack([probe, torch.zeros(4, dtype=torch.long)], 1),
                  torch.zeros(4, 0), {}, torch.zeros(4))
    out = emb(batch)
    assert torch.equal(out[0][1], out[0][2]) and torch.equal(out[0][1], out[0][3])
    assert not torch.equal(out[0][0], out[0][1])
    # without ``used`` every field has its full table
    full = AutoDimEmbedding(schema, spec, ["big", "small"], candidates, Temperature())
    assert full.fields[0].table.weight.shape == (1000, 4)


def test_predict_fills_one_array_batch_by_batch():
    from autodrs.data.dataset import load_dataset
    from autodrs.models.backbones import backbone_spec
    from autodrs.models.builder import build_model
    from autodrs.train.trainer import TrainConfig, Trainer

    ds = load_dataset("synthetic?rows=2000", cache=False)
    torch.manual_seed(0)
    model = build_model(ds.schema, backbone_spec("deepfm"))
    trainer = Trainer(TrainConfig(eval_batch_size=64, threads=1, progress=False))
    probs = trainer.predict(model, ds.valid)
    with torch.no_grad():
        model.eval()
        whole = torch.cat([torch.sigmoid(model(b)) for b in ds.valid.batches(len(ds.valid))])
    assert probs.shape == (len(ds.valid),) and probs.dtype == "float64"
    assert torch.allclose(torch.from_numpy(probs).float(), whole, atol=1e-6)
    prefix = trainer.predict(model, ds.valid, until=lambda: True)  # ends after one batch
    assert prefix.shape == (64,) and (prefix == probs[:64]).all()
