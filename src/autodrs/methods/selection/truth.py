"""How much of a planted truth a field ranking recovers (synthetic data)."""

from __future__ import annotations

from typing import Any


def planted_recovery(ranking: list[str], truth: dict[str, Any],
                     selected: list[str] | None = None) -> dict[str, Any]:
    """Compare a ranking (best first) and an optional chosen subset with the planted truth.

    Planted copies (``truth["redundant"]``) are neither relevant nor noise: they are left
    out of the ranking before its top-|R| is taken, and in ``selected`` a copy stands for
    its original (keeping either one keeps the information).
    """
    relevant, noise = set(truth["relevant"]), set(truth["noise"])
    copies: dict[str, str] = dict(truth.get("redundant", {}))
    ranked = [f for f in ranking if f not in copies]
    top = set(ranked[:len(relevant)])
    hits = len(top & relevant)
    position = {f: i for i, f in enumerate(ranked)}
    rel_pos = [position[f] for f in relevant if f in position]
    noise_pos = [position[f] for f in noise if f in position]
    out: dict[str, Any] = {
        "top_precision": hits / max(1, len(top)),
        "top_recall": hits / len(relevant),
        "separated": bool(rel_pos and noise_pos and max(rel_pos) < min(noise_pos)),
        "worst_relevant_rank": max(rel_pos) + 1 if rel_pos else None,
        "best_noise_rank": min(noise_pos) + 1 if noise_pos else None,
    }
    out["copy_adjacent"] = {
        copy: abs(ranking.index(copy) - ranking.index(src)) == 1
        for copy, src in copies.items() if copy in ranking and src in ranking
    }
    if selected is not None:
        chosen = {copies.get(f, f) for f in selected}
        kept = len(chosen & relevant)
        out["selected_precision"] = kept / max(1, len(chosen))
        out["selected_recall"] = kept / len(relevant)
        out["both_kept"] = sorted(c for c, src in copies.items()
                                  if c in selected and src in selected)
    return out
