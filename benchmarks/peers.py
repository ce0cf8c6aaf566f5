"""autodrs against FuxiCTR, DeepCTR-Torch and a hand-written PyTorch loop on one fixed task.

The task: MovieLens-100k, 8 categorical fields (user_id, item_id, age, gender, occupation,
zip_code, release_year, first genre), label rating >= 4, one fixed 80/10/10 split (a seeded
permutation of the rows, the same rows for every library), embedding 16, MLP 256-128, Adam
1e-3, batch 1024, at most 10 epochs, early stopping on validation AUC with patience 2, the
best epoch's weights evaluated on test. Each (seed, library) fit runs in a process of its
own, seeds outermost and the libraries' order rotated per seed, so load drift spreads over
all of them. Reported per fit: test AUC, training samples/s (training steps only, validation
excluded, the same count for every library), per wall-clock second and per CPU-second of
the process (single-threaded fits: the CPU figure holds steady when other work shares the
machine, the wall-clock one does not), and peak RSS.

The peers live in a virtualenv of their own (never autodrs's dependencies): FuxiCTR 2.3.10
and DeepCTR-Torch 0.3.0 over the same torch build as autodrs's. ``--setup`` creates it
(``python -m venv``, the torch version autodrs runs on first so pip never pulls another
build, then the two libraries without their dependency resolution and their light runtime
dependencies by name). FuxiCTR ships its layers and ``BaseModel`` but keeps its models in the
repository's model zoo, so its DeepFM / DCNv2 / FM / WideDeep are composed here from its own
layers exactly as the zoo composes them. The hand-written baseline is a plain PyTorch model
and loop of its own (no autodrs code).

    python benchmarks/peers.py --setup                   # once: the peers' virtualenv
    nice -n 10 python benchmarks/peers.py [--models deepfm,dcnv2,fm,widedeep] [--seeds 3]
                                          [--threads 1] [--venv PATH] [--work DIR]
    nice -n 10 python benchmarks/peers.py --init-ablation [--seeds 3]

``--init-ablation`` trains autodrs's DeepFM on the same task with each part's start set
explicitly (tables N(0, 0.01) or N(0, 1e-4); MLP and read-out head PyTorch's default or
xavier-normal with zero bias), the same seeds for every variant.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIELDS = ["user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year",
          "first_genre"]
LABEL = "label"
ORDER = "order"  # the fixed split: rows ranked by a seeded permutation, cut at 80% and 90%
SPLIT_SEED = 20260
EMBED_DIM = 16
MLP = [256, 128]
CROSS_LAYERS = 3
LR = 1e-3
BATCH = 1024
EPOCHS = 10
PATIENCE = 2
EVAL_BATCH = 16_384
LIBRARIES = ["autodrs", "handwritten", "fuxictr", "fuxictr-loader", "deepctr"]
MODELS = ["deepfm", "dcnv2", "fm", "widedeep"]
PEER_PACKAGES = ["fuxictr==2.3.10", "deepctr-torch==0.3.0"]
# what the two import at run time (FuxiCTR's layers import its preprocessing, which imports
# ray; DeepCTR-Torch's package import runs a version check through requests)
PEER_DEPENDENCIES = ["numpy", "pandas", "scikit-learn", "tqdm", "pyyaml", "h5py", "pyarrow",
                     "polars", "pydantic", "requests", "ray"]
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the task (autodrs venv)
def write_task(work: Path) -> dict:
    """Writes ``task.csv`` (raw values, label, split order) for autodrs and ``task.npz``
    (ids encoded on the train split, 0 for a value train never saw) for the others."""
    import polars as pl

    from autodrs.data.sources import _recbole_ml100k_dir, movielens_100k

    df = movielens_100k(_recbole_ml100k_dir()).df
    df = df.with_columns(pl.col("genres").list.first().alias("first_genre")).select(
        [*FIELDS, LABEL])
    n = df.height
    rank = np.empty(n, dtype=np.int64)
    rank[np.random.default_rng(SPLIT_SEED).permutation(n)] = np.arange(n)
    df = df.with_columns(pl.Series(ORDER, rank))
    work.mkdir(parents=True, exist_ok=True)
    df.write_csv(work / "task.csv")
    cut = [int(0.8 * n), int(0.9 * n)]
    parts = {"train": rank < cut[0], "valid": (rank >= cut[0]) & (rank < cut[1]),
             "test": rank >= cut[1]}
    arrays: dict[str, np.ndarray] = {}
    vocab = {}
    train = df.filter(pl.Series(parts["train"]))
    for f in FIELDS:
        values = sorted(set(train[f].to_list()), key=str)
        index = {v: i + 1 for i, v in enumerate(values)}
        vocab[f] = len(values) + 1
        col = df[f].to_list()
        ids = np.array([index.get(v, 0) for v in col], dtype=np.int64)
        for split, mask in parts.items():
            arrays[f"{split}/{f}"] = ids[mask]
    labels = df[LABEL].to_numpy().astype(np.float32)
    for split, mask in parts.items():
        arrays[f"{split}/{LABEL}"] = labels[mask]
    np.savez(work / "task.npz", **arrays)
    meta = {"rows": n, "sizes": {s: int(m.sum()) for s, m in parts.items()}, "vocab": vocab,
            "positive_rate": float(labels.mean())}
    (work / "task.json").write_text(json.dumps(meta, indent=1))
    return meta


def autodrs_dataset(work: Path):
    from autodrs.data.dataset import load_dataset

    return load_dataset(str(work / "task.csv"), label=LABEL, categorical=FIELDS, time=ORDER,
                        split="time", cache_dir=work / "cache")


def check_same_split(work: Path, meta: dict) -> None:
    """autodrs reads the csv through its own path; its splits must be the rows the others get."""
    ds = autodrs_dataset(work)
    task = np.load(work / "task.npz")
    for split in ("train", "valid", "test"):
        ours = ds.split(split)
        if len(ours) != meta["sizes"][split] or not np.array_equal(
                ours.label.numpy().astype(np.float32), task[f"{split}/{LABEL}"]):
            raise SystemExit(f"autodrs's {split} split differs from the fixed split")


# ------------------------------------------------------------------------------ the workers
def load_task(work: Path) -> tuple[dict, dict]:
    task = np.load(work / "task.npz")
    meta = json.loads((work / "task.json").read_text())
    return {k: task[k] for k in task.files}, meta


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def run_autodrs(work: Path, model: str, seed: int, threads: int) -> dict:
    from autodrs.experiment import fit_spec
    from autodrs.models import backbone_spec
    from autodrs.train.trainer import TrainConfig, Trainer

    ds = autodrs_dataset(work)
    spec = backbone_spec(model, EMBED_DIM)
    if spec.mlp:
        spec.mlp = list(MLP)
    config = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR, patience=PATIENCE, seed=seed,
                         threads=threads, progress=False, eval_batch_size=EVAL_BATCH)
    # CPU of the training epochs alone: from an epoch's first batch to its validation (what
    # fit_spec spends before the first epoch, building the model and the trainer, is not
    # training, and the other runners do not count theirs either)
    marks = {"start": None, "cpu": 0.0}
    evaluate, batches = Trainer.evaluate, ds.train.batches

    def timed_batches(*args, **kwargs):
        inner = batches(*args, **kwargs)

        def epoch():
            marks["start"] = time.process_time()
            yield from inner
        return epoch()

    def timed_evaluate(self, model, data):
        if marks["start"] is not None:
            marks["cpu"] += time.process_time() - marks["start"]
            marks["start"] = None
        return evaluate(self, model, data)

    ds.train.batches = timed_batches
    Trainer.evaluate = timed_evaluate
    base = rss_mib()
    out = fit_spec(ds, spec, config)
    cpu = marks["cpu"]
    return {"test_auc": out.metrics["test"]["auc"], "valid_auc": out.metrics["valid"]["auc"],
            "epochs": len(out.fit.history), "best_epoch": out.fit.best_epoch,
            "samples": out.fit.samples, "train_seconds": out.fit.train_seconds,
            "train_cpu_seconds": cpu, "base_rss": base}


def run_handwritten(work: Path, model: str, seed: int, threads: int) -> dict:
    """A plain PyTorch model and loop: one offset table, FM / cross / MLP towers by switch."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    task, meta = load_task(work)
    sizes = [meta["vocab"][f] for f in FIELDS]
    offsets = torch.tensor(np.cumsum([0, *sizes[:-1]]), dtype=torch.long)

    def tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.stack([task[f"{split}/{f}"] for f in FIELDS], 1)) + offsets
        return x, torch.from_numpy(task[f"{split}/{LABEL}"])

    use_linear = model in ("deepfm", "fm", "widedeep")
    use_fm = model in ("deepfm", "fm")
    use_mlp = model in ("deepfm", "dcnv2", "widedeep")
    cross = CROSS_LAYERS if model == "dcnv2" else 0

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            total, flat = int(sum(sizes)), len(FIELDS) * EMBED_DIM
            self.emb = nn.Embedding(total, EMBED_DIM)
            self.lin = nn.Embedding(total, 1) if use_linear else None
            self.bias = nn.Parameter(torch.zeros(1))
            layers, d = [], flat
            for w in MLP if use_mlp else []:
                layers += [nn.Linear(d, w), nn.ReLU()]
                d = w
            self.mlp = nn.Sequential(*layers) if layers else None
            self.cross = nn.ModuleList(nn.Linear(flat, flat) for _ in range(cross))
            head_in = (d if self.mlp is not None else 0) + (flat if cross else 0)
            self.head = nn.Linear(head_in, 1) if head_in else None
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_normal_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Embedding):
                    nn.init.normal_(m.weight, std=1e-4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e = self.emb(x)
            out = self.bias.expand(x.shape[0])
            if self.lin is not None:
                out = out + self.lin(x).sum((1, 2))
            if use_fm:
                out = out + 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
            parts, flat = [], e.flatten(1)
            if self.mlp is not None:
                parts.append(self.mlp(flat))
            if cross:
                h = flat
                for layer in self.cross:
                    h = flat * layer(h) + h
                parts.append(h)
            if parts:
                out = out + self.head(torch.cat(parts, 1)).squeeze(1)
            return out

    net = Net()
    xtr, ytr = tensors("train")
    xva, yva = tensors("valid")
    xte, yte = tensors("test")
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> np.ndarray:
        net.eval()
        return torch.cat([torch.sigmoid(net(x[i:i + EVAL_BATCH]))
                          for i in range(0, len(x), EVAL_BATCH)]).numpy()

    base = rss_mib()
    best, best_epoch, best_state, bad, samples, epochs = -1.0, 0, None, 0, 0, 0
    train_seconds = train_cpu = 0.0
    for epoch in range(EPOCHS):
        net.train()
        t0, c0 = time.perf_counter(), time.process_time()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), BATCH):
            idx = perm[i:i + BATCH]
            loss = loss_fn(net(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            samples += len(idx)
        train_seconds += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        epochs += 1
        valid = auc(yva.numpy(), predict(xva))
        if valid > best:
            best, best_epoch, bad = valid, epoch + 1, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= PATIENCE:
                break
    net.load_state_dict(best_state)
    return {"test_auc": auc(yte.numpy(), predict(xte)), "valid_auc": best, "epochs": epochs,
            "best_epoch": best_epoch, "samples": samples, "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu, "base_rss": base}


def run_fuxictr(work: Path, model: str, seed: int, threads: int,
                own_loader: bool = False) -> dict:
    """FuxiCTR's ``BaseModel`` (its fit, early stopping and evaluation, with its defaults:
    learning rate x0.1 on a plateau, gradient norm clipped at 10) over its own layers; batches
    sliced from in-memory tensors, or with ``own_loader`` FuxiCTR's ``NpzDataLoader`` (rows
    collated per batch, as its ``.npz`` data path feeds it; no worker processes, so all its
    work is in the measured process)."""
    import logging
    from collections import OrderedDict

    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.layers import (
        CrossNetV2,
        FactorizationMachine,
        FeatureEmbedding,
        LogisticRegression,
        MLP_Block,
    )
    from fuxictr.pytorch.models import BaseModel

    logging.disable(logging.INFO)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    task, meta = load_task(work)
    fmap = FeatureMap("peers_ml100k", str(work))
    fmap.features = OrderedDict(
        (f, {"type": "categorical", "source": "", "vocab_size": meta["vocab"][f]})
        for f in FIELDS)
    fmap.labels = [LABEL]
    fmap.default_emb_dim = EMBED_DIM
    fmap.num_fields = len(FIELDS)
    fmap.set_column_index()

    class Batches:
        def __init__(self, split: str, batch: int, shuffle: bool) -> None:
            self.data = {k: torch.from_numpy(task[f"{split}/{k}"]) for k in [*FIELDS, LABEL]}
            self.n, self.batch, self.shuffle = len(self.data[LABEL]), batch, shuffle
            self.gen = torch.Generator().manual_seed(seed)

        def __len__(self) -> int:
            return -(-self.n // self.batch)

        def __iter__(self):
            order = (torch.randperm(self.n, generator=self.gen) if self.shuffle
                     else torch.arange(self.n))
            for i in range(0, self.n, self.batch):
                idx = order[i:i + self.batch]
                yield {k: v[idx] for k, v in self.data.items()}

    class Model(BaseModel):
        # the zoo's DeepFM, DCNv2 (parallel), FM and WideDeep, from the library's layers
        def __init__(self) -> None:
            super().__init__(fmap, model_id=f"{model}_{seed}", gpu=-1, verbose=0,
                             model_root=str(work / "fuxictr"), metrics=["logloss", "AUC"],
                             early_stop_patience=PATIENCE)
            self.embedding_layer = FeatureEmbedding(fmap, EMBED_DIM)
            flat = fmap.sum_emb_out_dim()
            self.fm = FactorizationMachine(fmap) if model in ("deepfm", "fm") else None
            self.lr_layer = (LogisticRegression(fmap, use_bias=False) if model == "widedeep"
                             else None)
            self.mlp, self.crossnet, self.fc = None, None, None
            if model in ("deepfm", "widedeep"):
                self.mlp = MLP_Block(input_dim=flat, output_dim=1, hidden_units=MLP,
                                     hidden_activations="ReLU")
            if model == "dcnv2":
                self.crossnet = CrossNetV2(flat, CROSS_LAYERS)
                self.mlp = MLP_Block(input_dim=flat, output_dim=None, hidden_units=MLP,
                                     hidden_activations="ReLU")
                self.fc = torch.nn.Linear(flat + MLP[-1], 1)
            self.compile("adam", "binary_crossentropy", LR)
            self.reset_parameters()
            self.model_to_device()

        def forward(self, inputs):
            X = self.get_inputs(inputs)
            emb = self.embedding_layer(X)
            flat = emb.flatten(start_dim=1)
            if model == "dcnv2":
                y = self.fc(torch.cat([self.crossnet(flat), self.mlp(flat)], dim=-1))
            else:
                y = self.fm(X, emb) if self.fm is not None else self.lr_layer(X)
                if self.mlp is not None:
                    y = y + self.mlp(flat)
            return {"y_pred": self.output_activation(y)}

    if own_loader:
        from fuxictr.pytorch.dataloaders.npz_dataloader import NpzDataLoader

        def loader(split: str, batch: int, shuffle: bool):
            path = work / f"fuxictr_{split}.npz"
            if not path.exists():
                np.savez(path, **{k: task[f"{split}/{k}"] for k in [*FIELDS, LABEL]})
            return NpzDataLoader(fmap, str(path), batch_size=batch, shuffle=shuffle,
                                 num_workers=0)
    else:
        loader = Batches
    net = Model()
    os.makedirs(net.model_dir, exist_ok=True)
    timing = {"eval": 0.0, "eval_cpu": 0.0, "samples": 0, "epochs": 0}
    step, evaluate = net.train_step, net.eval_step

    def counted_step(batch):
        timing["samples"] += len(batch[LABEL])
        return step(batch)

    def timed_eval():
        t0, c0 = time.perf_counter(), time.process_time()
        timing["epochs"] += 1
        evaluate()
        timing["eval"] += time.perf_counter() - t0
        timing["eval_cpu"] += time.process_time() - c0

    net.train_step, net.eval_step = counted_step, timed_eval
    train = loader("train", BATCH, True)
    valid = loader("valid", EVAL_BATCH, False)
    base = rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    net.fit(train, epochs=EPOCHS, validation_data=valid)
    seconds = time.perf_counter() - t0 - timing["eval"]
    cpu = time.process_time() - c0 - timing["eval_cpu"]
    test = net.evaluate(loader("test", EVAL_BATCH, False))
    return {"test_auc": float(test["AUC"]), "valid_auc": float(net._best_metric),
            "epochs": timing["epochs"], "best_epoch": None, "samples": timing["samples"],
            "train_seconds": seconds, "train_cpu_seconds": cpu, "base_rss": base}


def run_deepctr(work: Path, model: str, seed: int, threads: int) -> dict:
    """DeepCTR-Torch's ``fit`` with its defaults (N(0, 1e-4) init of embeddings and MLP,
    L2 1e-5 on embeddings and linear weights), early stopping on val AUC and the best
    epoch's checkpoint restored."""
    import torch
    from deepctr_torch.callbacks import EarlyStopping, ModelCheckpoint
    from deepctr_torch.inputs import SparseFeat, get_feature_names
    from deepctr_torch.models import DCN, WDL, DeepFM

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    task, meta = load_task(work)
    columns = [SparseFeat(f, vocabulary_size=meta["vocab"][f], embedding_dim=EMBED_DIM)
               for f in FIELDS]
    names = get_feature_names(columns)

    def inputs(split: str) -> dict:
        return {f: task[f"{split}/{f}"] for f in names}

    common = {"task": "binary", "device": "cpu", "seed": seed}
    if model == "deepfm":
        net = DeepFM(columns, columns, dnn_hidden_units=tuple(MLP), **common)
    elif model == "fm":
        net = DeepFM(columns, columns, dnn_hidden_units=(), **common)
    elif model == "widedeep":
        net = WDL(columns, columns, dnn_hidden_units=tuple(MLP), **common)
    else:
        net = DCN(columns, columns, cross_num=CROSS_LAYERS, cross_parameterization="matrix",
                  dnn_hidden_units=tuple(MLP), **common)
    net.compile(torch.optim.Adam(net.parameters(), lr=LR), "binary_crossentropy",
                metrics=["auc"])
    timing = {"eval": 0.0, "eval_cpu": 0.0, "epochs": 0}
    evaluate = net.evaluate

    def timed_eval(x, y, batch_size=256):
        t0, c0 = time.perf_counter(), time.process_time()
        timing["epochs"] += 1
        out = evaluate(x, y, EVAL_BATCH)
        timing["eval"] += time.perf_counter() - t0
        timing["eval_cpu"] += time.process_time() - c0
        return out

    net.evaluate = timed_eval
    best_path = work / "deepctr" / f"{model}_{seed}.pt"
    best_path.parent.mkdir(parents=True, exist_ok=True)
    callbacks = [EarlyStopping(monitor="val_auc", patience=PATIENCE, mode="max"),
                 ModelCheckpoint(str(best_path), monitor="val_auc", save_best_only=True,
                                 save_weights_only=True, mode="max")]
    ytr = task[f"train/{LABEL}"]
    base = rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    history = net.fit(inputs("train"), ytr, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                      validation_data=(inputs("valid"), task[f"valid/{LABEL}"]),
                      callbacks=callbacks)
    seconds = time.perf_counter() - t0 - timing["eval"]
    cpu = time.process_time() - c0 - timing["eval_cpu"]
    net.load_state_dict(torch.load(best_path))
    scores = np.ravel(net.predict(inputs("test"), EVAL_BATCH))
    return {"test_auc": auc(task[f"test/{LABEL}"], scores),
            "valid_auc": float(max(history.history["val_auc"])), "epochs": timing["epochs"],
            "best_epoch": int(np.argmax(history.history["val_auc"])) + 1,
            "samples": timing["epochs"] * len(ytr), "train_seconds": seconds,
            "train_cpu_seconds": cpu, "base_rss": base}


INIT_VARIANTS = {  # tables' std, MLP xavier, head xavier
    "before: tables 0.01, default MLP and head": (0.01, False, False),
    "tables 1e-4 only": (1e-4, False, False),
    "xavier MLP and head only": (0.01, True, True),
    "tables 1e-4, xavier MLP, default head": (1e-4, True, False),
    "tables 1e-4, xavier MLP and head": (1e-4, True, True),
}


def set_start(model, table_std: float, xavier_mlp: bool, xavier_head: bool) -> None:
    """Re-draws an autodrs DeepFM's tables, MLP and read-out head as one ablation variant
    says: N(0, table_std) tables; xavier-normal with zero bias, or PyTorch's default."""
    import torch
    from torch import nn

    def start(layer: nn.Linear, xavier: bool) -> None:
        if xavier:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)
        else:
            layer.reset_parameters()  # PyTorch's default

    with torch.no_grad():
        for table in model.embedding.tables:
            nn.init.normal_(table.weight, std=table_std)
        for layer in model.mlp.modules():
            if isinstance(layer, nn.Linear):
                start(layer, xavier_mlp)
        start(model.head, xavier_head)


def init_ablation(work: Path, seeds: int, threads: int) -> None:
    import torch

    from _common import markdown_table, mean_std
    from autodrs.models import backbone_spec, build_model
    from autodrs.train.trainer import TrainConfig, Trainer

    ds = autodrs_dataset(work)
    rows: dict[str, list[float]] = {}
    for k in range(seeds):
        seed = 2026 + k
        for name, variant in INIT_VARIANTS.items():
            torch.manual_seed(seed)
            model = build_model(ds.schema, backbone_spec("deepfm", EMBED_DIM))
            set_start(model, *variant)
            config = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR, patience=PATIENCE,
                                 seed=seed, threads=threads, progress=False)
            trainer = Trainer(config)
            fit = trainer.fit(model, ds.train, ds.valid)
            test = trainer.evaluate(model, ds.test)["auc"]
            rows.setdefault(name, []).append(test)
            print(f"  seed {seed} {name}: test AUC {test:.4f} (best epoch {fit.best_epoch} "
                  f"of {len(fit.history)})", flush=True)
    print(f"\n## DeepFM's start on the peers task ({seeds} seeds)\n")
    print(markdown_table(["start", "test AUC", "per seed"],
                         [[n, mean_std(v), " ".join(f"{a:.4f}" for a in v)]
                          for n, v in rows.items()]))


def run_fuxictr_loader(work: Path, model: str, seed: int, threads: int) -> dict:
    return run_fuxictr(work, model, seed, threads, own_loader=True)


RUNNERS = {"autodrs": run_autodrs, "handwritten": run_handwritten, "fuxictr": run_fuxictr,
           "fuxictr-loader": run_fuxictr_loader, "deepctr": run_deepctr}


def worker(args: argparse.Namespace) -> None:
    out = RUNNERS[args.worker](Path(args.work), args.model, args.seed, args.threads)
    out["samples_per_s"] = out["samples"] / out["train_seconds"]
    out["samples_per_cpu_s"] = out["samples"] / out["train_cpu_seconds"]
    out["peak_rss_mib"] = peak_rss_mib()
    out["train_rss_mib"] = max(0.0, out["peak_rss_mib"] - out.pop("base_rss"))
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------- the peers' virtualenv
def setup_venv(venv: Path) -> None:
    import torch

    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    torch_pin = "torch==" + torch.__version__.split("+")[0]
    subprocess.run([*pip, torch_pin], check=True)
    subprocess.run([*pip, "--no-deps", *PEER_PACKAGES], check=True)
    subprocess.run([*pip, torch_pin, *PEER_DEPENDENCIES], check=True)
    subprocess.run([str(py), "-c", "import fuxictr.pytorch.models, deepctr_torch.models"],
                   check=True)
    print(f"peers' virtualenv ready: {venv}")


def peer_versions(py: Path) -> str:
    code = ("import importlib.metadata as m; print(', '.join(f'{p} {m.version(p)}' for p in "
            "('fuxictr', 'deepctr-torch', 'torch')))")
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


# ------------------------------------------------------------------------- the orchestrator
def run_one(py: str, work: Path, library: str, model: str, seed: int, threads: int) -> dict:
    cmd = [py, str(Path(__file__).resolve()), "--worker", library, "--model", model,
           "--seed", str(seed), "--threads", str(threads), "--work", str(work)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{library} {model} seed {seed} failed:\n{proc.stdout[-2000:]}\n"
                         f"{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def ratio(runs: list[dict], reference: list[dict], key: str) -> float:
    """Mean over seeds of ``key`` (a speed) over the reference's in the same seed round."""
    return float(np.mean([a[key] / b[key] for a, b in zip(runs, reference, strict=True)]))


def summary(results: dict, models: list[str], libraries: list[str]) -> str:
    from _common import markdown_table, mean_std, paired_difference

    rows = []
    for model in models:
        ref = results.get((model, "fuxictr"))
        hand = results.get((model, "handwritten"))
        for lib in libraries:
            runs = results[(model, lib)]
            aucs = [r["test_auc"] for r in runs]
            speed = [r["samples_per_s"] for r in runs]
            cpu_speed = [r["samples_per_cpu_s"] for r in runs]
            vs_fuxi = (paired_difference(aucs, [r["test_auc"] for r in ref])
                       if ref and lib != "fuxictr" else "")
            # per-seed ratio, each pair measured back to back in the same seed round
            x_fuxi = (f"{ratio(runs, ref, 'samples_per_s'):.2f}x / "
                      f"{ratio(runs, ref, 'samples_per_cpu_s'):.2f}x"
                      if ref and lib != "fuxictr" else "")
            x_hand = (f"{ratio(runs, hand, 'samples_per_s'):.2f}x / "
                      f"{ratio(runs, hand, 'samples_per_cpu_s'):.2f}x"
                      if hand and lib != "handwritten" else "")
            rows.append([model, lib, mean_std(aucs), vs_fuxi,
                         " ".join(f"{a:.4f}" for a in aucs),
                         f"{np.mean(speed):,.0f} / {np.mean(cpu_speed):,.0f}", x_fuxi, x_hand,
                         f"{np.mean([r['epochs'] for r in runs]):.1f}",
                         f"{np.mean([r['peak_rss_mib'] for r in runs]):.0f}",
                         f"{np.mean([r['train_rss_mib'] for r in runs]):.0f}"])
    return markdown_table(["model", "library", "test AUC", "vs FuxiCTR (paired)", "per seed",
                           "samples/s (wall / CPU)", "x FuxiCTR (wall / CPU)",
                           "x hand-written (wall / CPU)", "epochs", "peak RSS MiB",
                           "training RSS MiB"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="deepfm")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--venv", default=str(ROOT / "runs" / "peers-venv"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "peers"))
    parser.add_argument("--setup", action="store_true", help="create the peers' virtualenv")
    parser.add_argument("--init-ablation", action="store_true",
                        help="autodrs's DeepFM under each start (tables, MLP, head)")
    parser.add_argument("--worker", choices=list(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", default="deepfm", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    venv = Path(args.venv)
    if args.setup:
        setup_venv(venv)
        return
    if args.init_ablation:
        work = Path(args.work)
        meta = write_task(work)
        check_same_split(work, meta)
        torch_threads(args.threads)
        init_ablation(work, args.seeds, args.threads)
        return
    peer_py = venv / "bin" / "python"
    libraries = args.libraries.split(",")
    if set(libraries) - {"autodrs"} and not peer_py.exists():
        raise SystemExit(f"no peers' virtualenv at {venv}: run "
                         f"`python benchmarks/peers.py --setup --venv {venv}` first")
    models = args.models.split(",")
    for name in [*models, *libraries]:
        if name not in MODELS + LIBRARIES:
            raise SystemExit(f"unknown model or library {name!r}")
    from _common import machine_line

    work = Path(args.work)
    meta = write_task(work)
    check_same_split(work, meta)  # also builds autodrs's cache before any timed fit
    print(machine_line())
    print(f"threads per fit {args.threads}; load {os.getloadavg()[0]:.2f}; "
          f"peers: {peer_versions(peer_py) if peer_py.exists() else 'none'}")
    print(f"task: {meta['rows']} rows, split {meta['sizes']}, positive rate "
          f"{meta['positive_rate']:.3f}, vocab {meta['vocab']}", flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    for k in range(args.seeds):
        seed = 2026 + k
        turn = libraries[k % len(libraries):] + libraries[:k % len(libraries)]
        for model in models:
            for lib in turn:
                py = sys.executable if lib == "autodrs" else str(peer_py)
                r = run_one(py, work, lib, model, seed, args.threads)
                results.setdefault((model, lib), []).append(r)
                print(f"  seed {seed} {model:>8} {lib:>11}: test AUC {r['test_auc']:.4f} "
                      f"valid {r['valid_auc']:.4f} epochs {r['epochs']} "
                      f"{r['samples_per_s']:,.0f} samples/s ({r['samples_per_cpu_s']:,.0f} per "
                      f"CPU-s) peak RSS "
                      f"{r['peak_rss_mib']:.0f} MiB (load {os.getloadavg()[0]:.2f})",
                      flush=True)
    print(f"\n## Peers: MovieLens-100k, 8 fields, {args.seeds} seeds, emb {EMBED_DIM}, MLP "
          f"{MLP}, Adam {LR}, batch {BATCH}, <= {EPOCHS} epochs, patience {PATIENCE}\n")
    print(summary(results, models, libraries))


if __name__ == "__main__":
    main()
