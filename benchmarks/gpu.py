"""DeepFM training throughput on a GPU: autodrs's Trainer against bare PyTorch loops.

On a few million synthetic rows (encoded once, held in host memory), DeepFM (embedding 16,
MLP 256-128), Adam 1e-3, trains for ``--epochs`` epochs in each mode, alternating modes
over ``--repeats`` rounds after a warm-up:

- ``autodrs``: ``Trainer.fit`` with ``--device cuda`` (batches pinned on a background
  thread, non-blocking host-to-device copies); ``autodrs-bf16`` the same under bf16 autocast;
- ``bare``: a hand-written loop over the same host tensors (index a shuffled batch, pin it,
  copy it without blocking, step), the loop a user would write;
- ``bare-resident``: the same loop with every tensor moved to the GPU once (an upper bound
  that only holds while the data fits in GPU memory).

Throughput = train rows x epochs / seconds in training steps (autodrs's validation is
excluded; both synchronise the GPU before stopping the clock). Prints the card's name, the
median samples/s of each mode and ``ratio_to_bare=<autodrs / bare>``. Without a GPU it
prints one line and exits 0. About 2-4 minutes on an H100 with the defaults.

    python benchmarks/gpu.py [--rows 3000000] [--epochs 1] [--repeats 3] [--batch-size 4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autodrs.data.dataset import Dataset, EncodedData, load_dataset
from autodrs.models import backbone_spec, build_model
from autodrs.train.trainer import TrainConfig, Trainer, seed_everything


def autodrs_run(ds: Dataset, epochs: int, batch_size: int, precision: str) -> float:
    seed_everything(0)
    model = build_model(ds.schema, backbone_spec("deepfm"))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, patience=epochs + 1,
                         progress=False, seed=0, device="cuda", precision=precision)
    result = Trainer(config).fit(model, ds.train, ds.valid)
    return result.samples_per_second


def bare_run(ds: Dataset, epochs: int, batch_size: int, resident: bool) -> float:
    device = torch.device("cuda")
    seed_everything(0)
    model = build_model(ds.schema, backbone_spec("deepfm")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train: EncodedData = ds.train
    if resident:
        train = EncodedData(train.cat.to(device), train.num.to(device),
                            {k: v.to(device) for k, v in train.seq.items()},
                            train.label.to(device))
    rows = len(train)
    generator = torch.Generator(device=device if resident else "cpu").manual_seed(0)
    seconds = 0.0
    for _ in range(epochs):
        model.train()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        order = torch.randperm(rows, generator=generator, device=generator.device)
        for start in range(0, rows, batch_size):
            batch = train.batch(order[start:start + batch_size])
            if not resident:
                batch = batch.pin_memory().to(device, non_blocking=True)
            loss = loss_fn(model(batch), batch.label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    return rows * epochs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4096)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (benchmarks/gpu.py needs one)")
        return
    name = torch.cuda.get_device_name()
    print(f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    t0 = time.perf_counter()
    ds = load_dataset(f"synthetic?rows={args.rows}&seed=0", seed=0)
    print(f"data: {args.rows:,} synthetic rows ({len(ds.train):,} train) encoded in "
          f"{time.perf_counter() - t0:.0f}s", flush=True)
    modes = {
        "autodrs": lambda: autodrs_run(ds, args.epochs, args.batch_size, "fp32"),
        "autodrs-bf16": lambda: autodrs_run(ds, args.epochs, args.batch_size, "bf16"),
        "bare": lambda: bare_run(ds, args.epochs, args.batch_size, resident=False),
        "bare-resident": lambda: bare_run(ds, args.epochs, args.batch_size, resident=True),
    }
    # warm-up (CUDA context, kernels, allocator): one epoch of each kind of loop
    autodrs_run(ds, 1, args.batch_size, "fp32")
    bare_run(ds, 1, args.batch_size, resident=False)
    results: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(args.repeats):
        for mode, run in modes.items():
            results[mode].append(run())
            print(f"repeat {r + 1} {mode:>13}: {results[mode][-1]:>12,.0f} samples/s", flush=True)
    med = {m: statistics.median(v) for m, v in results.items()}
    print(f"\nDeepFM, {len(ds.train):,} train rows, batch {args.batch_size}, {args.epochs} "
          f"epoch(s) x {args.repeats} repeats on {name}")
    for mode, value in med.items():
        print(f"{mode:>13} {value:>14,.0f} samples/s (median)")
    print(f"ratio_bf16_to_bare={med['autodrs-bf16'] / med['bare']:.3f}")
    print(f"ratio_to_resident={med['autodrs'] / med['bare-resident']:.3f}")
    print(f"ratio_to_bare={med['autodrs'] / med['bare']:.3f}")


if __name__ == "__main__":
    main()
