"""Scoring latency of a PEP-pruned model: the previous per-table lookup against the current
one, beside the dense DeepFM-16, in one process.

Step 1 (``--build``, slow: run it under ``nice``): load the Criteo-layout file of
``--rows`` rows the way ``embedding.py --rows`` does (``--min-count``, its own vocabulary
per value), run PEP with the settings of that benchmark's lazy runs (``SCALE_OPTIONS``,
per-field thresholds, ``--search-epochs``) and write the pruned spec it found.

Step 2 (default, quick: the timing itself): build DeepFM-16 and the pruned model from that
spec (weights as built: latency does not depend on their values), and a copy of the pruned
model whose pruned tables are the classes of ``autodrs/nn/pruned.py`` at ``--before`` (a
git revision), looked up field by field as ``FieldEmbedding`` did then. Checks that both
pruned models score bit for bit alike (and their tables against ``to_dense()``), then
prints the median milliseconds of one forward pass at batches of 1 and 4,096 test rows, the
three models alternating in every repeat (``embedding.latencies``), the ratios to DeepFM-16,
the stored bytes, the memory the fused lookups add, the median time of a training step
(forward and backward at batch 4,096, the path with gradients) and the load average before
and after.

    nice -n 15 python benchmarks/pruned_lookup.py --build
    python benchmarks/pruned_lookup.py --before 097fbee
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from _common import machine_line, markdown_table  # noqa: E402
from autodrs.data.dataset import load_dataset  # noqa: E402
from autodrs.methods.embedding.common import file_bytes  # noqa: E402
from autodrs.models.backbones import backbone_spec  # noqa: E402
from autodrs.models.builder import build_model, count_bytes  # noqa: E402
from autodrs.nn.embedding import FieldEmbedding  # noqa: E402
from autodrs.nn.pruned import PrunedColumn, PrunedLookup, PrunedTable  # noqa: E402
from autodrs.search.base import SearchContext, get_method  # noqa: E402
from autodrs.spec import ArchSpec  # noqa: E402
from autodrs.train.trainer import TrainConfig  # noqa: E402
from embedding import SCALE_OPTIONS, latencies, scale_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    path = scale_file(args.rows, args.folder)
    return load_dataset(str(path), fmt="criteo", seed=args.seed, hash_threshold=10**9,
                        min_count=args.min_count, cache_dir=args.folder / "cache",
                        in_memory=True)


def build(args: argparse.Namespace, spec_path: Path) -> None:
    ds = load(args)
    config = TrainConfig(epochs=1, batch_size=4096, patience=1, seed=args.seed, progress=False,
                         threads=1, lazy_tables=True)
    options = dict(SCALE_OPTIONS["pep"], threshold="field_dim", search_epochs=args.search_epochs)
    t0 = time.perf_counter()
    stage = get_method("pep").search(SearchContext(ds, backbone_spec("deepfm", 16), config,
                                                   seed=args.seed, options=options))
    print(f"PEP search {time.perf_counter() - t0:.0f}s, sparsity "
          f"{stage.extra.get('sparsity')}", flush=True)
    spec_path.write_text(stage.spec.to_json())
    print(f"wrote {spec_path}")


def module_at(revision: str, path: str, name: str) -> types.ModuleType:
    """The module at ``path`` as it was at git ``revision``."""
    source = subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType(name)
    exec(compile(source, f"{revision}:{path}", "exec"), module.__dict__)
    return module


def with_tables_of(model: torch.nn.Module, old: types.ModuleType) -> torch.nn.Module:
    """A copy of ``model`` whose pruned tables are ``old``'s, looked up one field at a time
    (``FieldEmbedding.forward``'s loop over ``pruned``, the previous code path)."""
    model = copy.deepcopy(model)
    for emb in model.modules():
        if not isinstance(emb, FieldEmbedding):
            continue
        for name, table in list(emb.pruned.items()):
            if isinstance(table, PrunedTable | PrunedColumn):
                emb.pruned[name] = old.pruned_table(table.mask(), table.values.detach().clone())
        emb.pruned_lookups = torch.nn.ModuleList()
        emb._lookup_fields = []
    return model


@torch.no_grad()
def check_same(models: dict[str, torch.nn.Module], batches: list) -> None:  # type: ignore[type-arg]
    now, before = models["pruned, now"], models["pruned, before"]
    for batch in batches:
        a, b = now(batch), before(batch)
        if not torch.equal(a, b):
            sys.exit(f"outputs differ: max |diff| {float((a - b).abs().max())}")
    for emb in now.modules():
        if isinstance(emb, FieldEmbedding):
            for table in emb.pruned.values():
                ids = torch.arange(table.rows)
                if not torch.equal(table(ids), table.to_dense()[ids]):
                    sys.exit("a table's lookup differs from its dense table")
    print(f"outputs bit for bit equal on {len(batches)} batches (and every table's lookup "
          "equal to its dense table)")


def train_steps(models: dict[str, torch.nn.Module], batch, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Median milliseconds of a forward and backward pass (the training path, with
    gradients), the models alternating."""
    times: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(repeats):
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            torch.nn.functional.binary_cross_entropy_with_logits(
                model(batch), batch.label.float()).backward()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {m: float(np.median(v[repeats // 5:])) for m, v in times.items()}


def lookup_memory(model: torch.nn.Module) -> tuple[int, int]:
    """Bytes the fused lookups hold beyond the stored tables: their index buffers, and the
    kept rows at full width they score from."""
    index = rows = 0
    for lookup in model.modules():
        if isinstance(lookup, PrunedLookup):
            index += sum(b.numel() * b.element_size() for b in lookup.buffers())
            if lookup._rows is not None:
                rows += lookup._rows[1].numel() * lookup._rows[1].element_size()
    return index, rows


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--min-count", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=ROOT / "runs" / "pep-scale")
    parser.add_argument("--build", action="store_true", help="run the PEP search (slow)")
    parser.add_argument("--before", default="097fbee",
                        help="git revision whose nn/pruned.py is the previous lookup")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec_path = args.folder / f"pep-spec-{args.rows}-{args.seed}-mc{args.min_count}.json"
    if args.build:
        build(args, spec_path)
        return
    print(machine_line())
    print(f"load average before: {load_average()}", flush=True)
    ds = load(args)
    torch.manual_seed(args.seed)
    dense = build_model(ds.schema, backbone_spec("deepfm", 16))
    pruned = build_model(ds.schema, ArchSpec.from_json(spec_path))
    old = module_at(args.before, "src/autodrs/nn/pruned.py", "pruned_before")
    models = {"DeepFM-16": dense, "pruned, before": with_tables_of(pruned, old),
              "pruned, now": pruned}
    for m in models.values():
        m.eval()
    check_same(models, [ds.test.batch(torch.arange(n)) for n in (1, 7, 4096)])
    timing = latencies(models, ds, repeats=args.repeats)
    rows = []
    for name, t in timing.items():
        rows.append([name] + [f"{v:.2f}" for v in t.values()]
                    + [f"{t[k] / timing['DeepFM-16'][k]:.2f}x" for k in t]
                    + [f"{count_bytes(models[name])['embedding']:,}",
                       f"{file_bytes(models[name]):,}"])
    keys = list(timing["DeepFM-16"])
    print(markdown_table(["model", *keys, *(f"{k} / DeepFM-16" for k in keys),
                          "emb. bytes", "model.pt bytes"], rows))
    index, full = lookup_memory(pruned)
    print(f"memory of the fused lookups beyond the stored tables: index {index:,} bytes, "
          f"kept rows at full width {full:,} bytes")
    for m in models.values():
        m.train()
    steps = train_steps(models, ds.test.batch(torch.arange(4096)), max(5, args.repeats // 3))
    print("training step (forward and backward, batch 4096), median ms: " + ", ".join(
        f"{k} {v:.2f} ({v / steps['DeepFM-16']:.2f}x)" for k, v in steps.items()))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
