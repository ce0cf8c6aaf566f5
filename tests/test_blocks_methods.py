"""The interaction-function and block methods do what their papers say: SIF finds the
product for planted dot-product pairs; AutoCTR mutates one token, selects parents by the
hockey-stick rank distribution, keeps young accurate survivors, lets a ranker pick the
mutant and warm-starts children; AutoPI derives DARTS's discrete cell; AutoFeature and AIM
write their decisions into a spec that builds."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.methods.blocks.aim import AIM_FUNCTIONS
from autodrs.methods.blocks.autoctr import (
    Candidate,
    DagEncoding,
    MutantRanker,
    hockey_stick_pick,
    survivors,
)
from autodrs.methods.blocks.autofeature import marginal_scores
from autodrs.methods.blocks.autopi import OPERATORS, InteractionCellSpace, edges
from autodrs.methods.blocks.space import PairFunctionSpace
from autodrs.models.backbones import backbone_spec
from autodrs.models.builder import build_model
from autodrs.search.base import SearchContext, SearchError, get_method
from autodrs.spec import ArchSpec, Interaction
from autodrs.train.trainer import TrainConfig

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def planted_60k() -> Dataset:
    return load_dataset("synthetic?rows=60000&seed=1", seed=0)


def test_sif_picks_the_product_for_planted_pairs(planted_60k: Dataset) -> None:
    """Four relevant fields and one noise field: 10 pairs, three of them planted as dot
    products of latent vectors. SIF should model the planted pairs by ``multiply`` (the
    read-out Hadamard product) far more often than the others, and rank them high."""
    fields = ["r0", "r1", "r2", "r3", "n0"]
    config = TrainConfig(epochs=10, batch_size=512, lr=1e-2, progress=False, threads=1, seed=0)
    ctx = SearchContext(planted_60k, backbone_spec("deepfm", 8).copy(fields=fields), config,
                        seed=1)
    found = get_method("sif").search(ctx)
    functions = found.extra["functions"]
    planted = {"*".join(p) for p in planted_60k.info["truth"]["pairs"]} & set(functions)
    assert len(planted) == 3 and len(functions) == 10
    hits = sum(functions[k] == "multiply" for k in planted)
    others = [f for k, f in functions.items() if k not in planted]
    assert hits >= 2, functions
    assert hits / len(planted) > others.count("multiply") / len(others), functions
    top = {"*".join(p) for p in found.ranking[:5]}
    assert len(planted & top) >= 2, found.ranking
    build_model(planted_60k.schema, found.spec)


def test_autoctr_mutation_changes_one_token() -> None:
    encoding = DagEncoding(NAMES, blocks=4, types=("mlp", "fm", "dot", "crossnet",
                                                    "attention"))
    rng = random.Random(0)
    arch = encoding.random_arch(rng)
    for _ in range(30):
        child = encoding.mutate(arch, rng)
        changed = [(k, name) for k, (old, new) in enumerate(zip(arch, child, strict=True))
                   for name in old if old[name] != new[name]]
        assert len(changed) == 1
        assert encoding.valid(child)
        assert changed[0] != (0, "inputs")  # the first block reads no earlier block
        arch = child


def test_hockey_stick_parent_selection_favours_low_logloss() -> None:
    size, c = 20, 10
    weights = [math.comb(r + c - 1, c) for r in range(size, 0, -1)]
    assert sum(weights) == math.comb(size + c, c + 1)  # the hockey-stick identity
    rng = random.Random(0)
    ranked = list(range(size))  # best first
    picks = [hockey_stick_pick(ranked, c, rng) for _ in range(4000)]
    best_share = picks.count(0) / len(picks)
    assert abs(best_share - weights[0] / sum(weights)) < 0.03  # 11/30 for P=20, c=10
    assert picks.count(0) > picks.count(5) > picks.count(19)


def candidate(number: int, logloss: float, cost: int = 100) -> Candidate:
    return Candidate(number, [], ArchSpec(), logloss, 0.5, cost, 0.0)


def test_survival_prefers_young_accurate_cheap() -> None:
    # ten members, the newest have the best logloss: the old half goes
    history = [candidate(i, 1.0 - 0.01 * i) for i in range(10)]
    assert survivors(history, list(range(10)), 5) == [5, 6, 7, 8, 9]
    # only the youngest 2P compete; between two as young, the more accurate stays
    history = [candidate(i, 0.5) for i in range(6)]
    history[4] = candidate(4, 0.1)
    kept = survivors(history, list(range(6)), 2)
    assert 0 not in kept and 1 not in kept and 4 in kept


def test_ranker_picks_the_mutant_like_the_best() -> None:
    encoding = DagEncoding(NAMES, blocks=2, types=("mlp", "fm"))
    rng = random.Random(1)
    history = []
    for i in range(24):
        arch = encoding.random_arch(rng)
        # the planted rule: an FM first block is good, an MLP first block is bad
        loss = 0.4 if arch[0]["type"] == "fm" else 0.7
        history.append(Candidate(i, arch, ArchSpec(), loss + 0.001 * i, 0.5, 1, 0.0))
    good = next(c.arch for c in history if c.arch[0]["type"] == "fm")
    bad = next(c.arch for c in history if c.arch[0]["type"] == "mlp")
    assert MutantRanker(0).best(encoding, history, [bad, bad, good, bad]) == 2


def test_autoctr_evolves_from_trained_parents(tiny_synthetic: Dataset,
                                              fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                        trials=6, options={"fast": True, "population": 3, "blocks": 3})
    found = get_method("autoctr").search(ctx)
    trials = found.trials
    assert len(trials) == 6
    assert all(t["parent"] is None for t in trials[:3])
    assert all(t["parent"] is not None and t["parent"] < t["number"] for t in trials[3:])
    # the returned one is the best of those fitted in full (promoted every two candidates
    # in fast mode, and the leader at the end)
    final = found.extra["final_fit"]
    assert found.extra["best_number"] == max(final, key=lambda f: f["valid_auc"])["number"]
    assert found.extra["promoted"] and found.extra["full_fits"] >= 2
    assert len(found.dag["nodes"]) <= 3 and found.dag["output"]
    assert found.spec.fm is False and found.spec.mlp == []
    build_model(tiny_synthetic.schema, found.spec)


def test_autoctr_random_strategy_and_bad_types(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                        trials=3, strategy="random", options={"fast": True})
    found = get_method("autoctr").search(ctx)
    assert all(t["parent"] is None for t in found.trials)
    bad = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                        trials=1, options={"fast": True, "block_types": "mlp,conv"})
    with pytest.raises(SearchError, match="block types"):
        get_method("autoctr").search(bad)
    # the DAG builds blocks of other methods (sketch, gin) that AutoCTR has no tokens for
    other = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                          trials=1, options={"fast": True, "block_types": "mlp,sketch"})
    with pytest.raises(SearchError, match="block types must be among mlp, fm, dot"):
        get_method("autoctr").search(other)


def test_autopi_derives_darts_cell(tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0)
    space = InteractionCellSpace(tiny_synthetic.schema, ctx.spec, nodes=3, width=8,
                                 mlp=[16, 8], ensembles=("parallel", "stacked", "interaction"))
    net = space.supernet(ctx)
    wanted = {(1, 0): "attention", (2, 0): "dot", (2, 1): "mlp", (3, 0): "skip",
              (3, 1): "crossnet", (3, 2): "zero"}
    with torch.no_grad():
        net.alpha.zero_()
        for k, edge in enumerate(edges(3)):
            net.alpha[k, OPERATORS.index(wanted[edge])] = 5.0 - k * 0.1
        net.alpha[k, OPERATORS.index("mlp")] = 1.0  # node 3's weakest edge: dropped
        net.beta.copy_(torch.tensor([0.0, 3.0, 0.0]))
    decision = net.derive()
    assert decision["ensemble"] == "stacked"
    # every node keeps its two strongest edges, each with its best operator but zero
    assert decision["ops"] == {"1<-0": "attention", "2<-0": "dot", "2<-1": "mlp",
                               "3<-0": "skip", "3<-1": "crossnet", "3<-2": "zero"}
    graph = space.graph(decision)
    ids = {n.id: n for n in graph.nodes}
    assert ids["c2_1"].inputs == ["c1_0"]  # the MLP edge reads node 1's block
    assert ids["c3_1"].inputs == ["c1_0"]
    # stacked ensemble: the deep MLP reads the embeddings and every cell node
    assert ids["d0"].inputs == ["embeddings", "c1_0", "c2_0", "c2_1", "c3_1"]
    assert graph.output == ["d1"]
    spec = space.apply(ctx.spec, decision)
    build_model(tiny_synthetic.schema, spec)
    with torch.no_grad():
        net.beta.copy_(torch.tensor([3.0, 0.0, 0.0]))
    parallel = space.graph(net.derive())
    # parallel: the cell's nodes (node 3 skips the embeddings through) beside the deep MLP
    assert parallel.output == ["c1_0", "c2_0", "c2_1", "embeddings", "c3_1", "d1"]
    with torch.no_grad():
        net.beta.copy_(torch.tensor([0.0, 0.0, 3.0]))
    alone = space.graph(net.derive())
    assert alone.output == ["c1_0", "c2_0", "c2_1", "embeddings", "c3_1"]
    assert not any(n.id.startswith("d") for n in alone.nodes)  # no deep MLP
    # by default the ensemble always keeps the MLP
    default = InteractionCellSpace(tiny_synthetic.schema, ctx.spec, nodes=1, width=8, mlp=[8])
    assert default.supernet(ctx).beta.numel() == 2
    with pytest.raises(SearchError, match="ensembles"):
        InteractionCellSpace(tiny_synthetic.schema, ctx.spec, 1, 8, [8], ensembles=("mix",))


def test_autofeature_space_writes_functions(tiny_synthetic: Dataset) -> None:
    base = backbone_spec("deepfm", 8).copy(fields=["r0", "r1", "r2"])
    space = PairFunctionSpace(tiny_synthetic.schema, base,
                              ("plus", "multiply", "product", "none"))
    assert space.keys() == ["r0*r1", "r0*r2", "r1*r2"]
    spec = space.apply(base, {"r0*r1": "multiply", "r0*r2": "none", "r1*r2": "product"})
    assert [(i.key, i.function) for i in spec.interactions] == [("r0*r1", "multiply"),
                                                               ("r1*r2", "product")]
    assert spec.fm and spec.mlp  # the product pair goes to the FM term, the MLP stays
    build_model(tiny_synthetic.schema, spec)
    no_product = space.apply(base, {"r0*r1": "plus", "r0*r2": "none", "r1*r2": "none"})
    assert not no_product.fm
    trials = [{"state": "COMPLETE", "values": [0.8], "decision": {"r0*r1": "plus"}},
              {"state": "COMPLETE", "values": [0.6], "decision": {"r0*r1": "none"}}]
    assert marginal_scores(space, trials)[("r0", "r1")] == pytest.approx(0.2)
    with pytest.raises(SearchError, match="choices"):
        PairFunctionSpace(tiny_synthetic.schema, base, ("plus", "cosine"))
    # after an interaction stage, only the pairs it kept are searched
    kept = base.copy(interactions=[Interaction(["r1", "r2"]), Interaction(["r0", "r2"])])
    assert PairFunctionSpace(tiny_synthetic.schema, kept, ("plus", "none")).keys() == [
        "r1*r2", "r0*r2"]


def test_aim_searches_pairs_functions_and_dims(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        options={"fast": True, "dims": "2,4,8", "threshold": 0.6})
    found = get_method("aim").search(ctx)
    spec = found.spec
    assert set(spec.field_dims.values()) <= {2, 4, 8}
    assert set(found.dims) == set(spec.field_dims)
    kept = spec.interactions or []
    assert all(i.function in AIM_FUNCTIONS and i.weight for i in kept)
    dropped = [k for k, f in found.extra["functions"].items() if f == "none"]
    assert len(kept) + len(dropped) == len(found.ranking)
    build_model(tiny_synthetic.schema, spec)
    with pytest.raises(SearchError, match="candidate dims"):
        get_method("aim").search(SearchContext(tiny_synthetic, ctx.spec, fast_config,
                                               options={"fast": True, "dims": "4,64"}))


def test_autoctr_seeds_backbones_and_final_fit(tiny_synthetic: Dataset,
                                               fast_config: TrainConfig) -> None:
    encoding = DagEncoding(NAMES, blocks=4, types=("mlp", "fm", "dot"))
    deepfm = encoding.graph(encoding.backbone("deepfm"))
    assert [n.type for n in deepfm.nodes] == ["fm", "mlp", "mlp"]
    assert deepfm.output == ["b0", "b2"] and deepfm.nodes[1].fields is None
    assert deepfm.nodes[0].readout == "sum"  # FM's own term, no read-out weights
    ipnn = encoding.graph(encoding.backbone("ipnn"))
    assert ipnn.nodes[1].inputs == ["embeddings", "b0"] and ipnn.output == ["b2"]
    assert DagEncoding(NAMES, blocks=2, types=("fm", "mlp")).backbone("deepfm") is None
    assert DagEncoding(NAMES, blocks=4, types=("fm", "mlp")).backbone("dcnv2") is None
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=2,
                        trials=4, options={"fast": True, "population": 2, "blocks": 3,
                                           "seed_backbones": "deepfm,ipnn",
                                           "final_candidates": 2, "final_seeds": 2})
    found = get_method("autoctr").search(ctx)
    # the population starts from the two backbones, then children of trained parents
    assert found.trials[0]["dag"] == "FM | MLP 256 | MLP 128"
    assert found.trials[1]["dag"] == "Dot | MLP 256 | MLP 128"
    assert [t["linear"] for t in found.trials[:2]] == [True, False]
    assert all(t["parent"] is not None for t in found.trials[2:])
    # both seeds fitted in full; the final fit: the two best in full, on two seeds each
    assert {0, 1} <= set(found.extra["seed_numbers"])
    assert all(found.trials[k]["full_valid_aucs"] for k in (0, 1))
    final = found.extra["final_fit"]
    assert len(final) == 2 and all(len(f["valid_aucs"]) == 2 for f in final)
    best = max(final, key=lambda f: f["valid_auc"])
    # the best mean leads; an evolved leader is returned only past the paired test
    rule = found.extra["final_rule"]
    assert rule["rule"] == "paired" and rule["leader"] == best["number"]
    assert found.extra["best_number"] == rule["returned"]
    seeds = set(found.extra["seed_numbers"])
    if best["number"] not in seeds:
        assert (rule["returned"] == best["number"]) == (rule["lower_bound"] > 0), rule
        assert rule["reference"] in seeds
    else:
        assert rule["returned"] == best["number"]
    # never below a seed backbone: the seeds' fits at ctx.seed are all at most its own
    firsts = {t["number"]: t["full_valid_aucs"][0] for t in found.trials
              if t["full_valid_aucs"]}
    assert firsts[best["number"]] >= min(firsts[f["number"]] for f in final)
    assert all(best["valid_auc"] >= f["valid_auc"] for f in final)


def test_autoctr_seed_dags_are_their_backbones(tiny_synthetic: Dataset,
                                             fast_config: TrainConfig) -> None:
    """Each default backbone written as a seed DAG builds the same model: the same
    parameter count, the same initial weights at the same seed and so the same outputs,
    and the same validation AUC when trained with the same config (so AutoCTR, choosing
    among its seeds on validation, cannot do worse than choosing among the backbones)."""
    from autodrs.experiment import fit_spec
    from autodrs.methods.blocks.autoctr import SEED_BACKBONES, base_dag_spec, spec_of
    from autodrs.methods.interaction.common import embedded_names
    from autodrs.models.builder import count_parameters

    base = base_dag_spec(backbone_spec("deepfm", 8))
    encoding = DagEncoding(embedded_names(tiny_synthetic.schema, base), 4,
                           ("mlp", "fm", "dot", "crossnet", "attention"))
    batch = tiny_synthetic.valid.batch(slice(0, 128))
    config = dataclasses.replace(fast_config, epochs=1, seed=3)
    for name in SEED_BACKBONES:
        backbone = backbone_spec(name, 8)
        dag = spec_of(base, encoding, encoding.backbone(name))
        assert dag.linear == backbone.linear, name
        torch.manual_seed(5)
        ours = build_model(tiny_synthetic.schema, dag)
        torch.manual_seed(5)
        theirs = build_model(tiny_synthetic.schema, backbone)
        assert count_parameters(ours) == count_parameters(theirs), name
        ours.eval()
        theirs.eval()
        with torch.no_grad():
            # the same floats: the DAG adds its terms in the backbone's order
            assert torch.equal(ours(batch), theirs(batch)), name
        a = fit_spec(tiny_synthetic, dag, config).metrics["valid"]["auc"]
        b = fit_spec(tiny_synthetic, backbone, config).metrics["valid"]["auc"]
        assert a == pytest.approx(b, abs=1e-6), name


def test_a_deadline_with_a_reserve_stops_where_the_reserve_begins(
        tiny_synthetic: Dataset, fast_config: TrainConfig) -> None:
    import time

    from autodrs.search.estimation import BudgetExhausted, Deadline

    ctx = SearchContext(tiny_synthetic, ArchSpec(), fast_config, budget_seconds=100.0)
    Deadline(ctx, reserve=50.0).on_step(None, None, 0, None, None)  # 100 s left: go on
    ctx.started = time.monotonic() - 60.0  # 40 s left, 50 kept for the final fit
    Deadline(ctx).on_step(None, None, 0, None, None)  # the plain deadline: still time
    with pytest.raises(BudgetExhausted, match="kept for the final fit"):
        Deadline(ctx, reserve=50.0).on_step(None, None, 0, None, None)


def test_autoctr_final_fit_gives_each_finalist_a_share_and_skips_a_cut_one(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import autodrs.methods.blocks.autoctr as autoctr
    from autodrs.search.estimation import BudgetExhausted

    reserves: list[float] = []
    valid = {0: 0.70, 1: 0.99, 2: 0.75}  # #1 would validate best, but is too slow

    def fake_fit(ds, spec, config, hooks=None):
        reserves.append(hooks[0].reserve)
        number = spec.provenance[-1]["number"]
        if number == 1:
            raise BudgetExhausted("cut")
        return SimpleNamespace(metrics={"valid": {"auc": valid[number]}})

    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    ctx = SearchContext(tiny_synthetic, ArchSpec(), fast_config, budget_seconds=90.0)
    finalists = [Candidate(k, [], ArchSpec(provenance=[{"number": k}]), 0.5, 0.6, 1, 1.0)
                 for k in range(3)]
    chosen, results, cut = autoctr.AutoCTR.final_fit(ctx, finalists, finalists[0])
    # shares of the time left (the fakes take no time): the first fit stops where the
    # other two shares begin, the second where the last one's begins, the last at the end
    assert reserves == pytest.approx([60.0, 45.0, 0.0], abs=1.0)
    assert cut == [1] and [r["number"] for r in results] == [0, 2]
    assert chosen.number == 2  # the best of the fits that finished
    # without a budget nothing is kept back
    reserves.clear()
    autoctr.AutoCTR.final_fit(dataclasses.replace(ctx, budget_seconds=None), finalists[::2],
                              finalists[0])
    assert reserves == [0.0, 0.0]


def test_autoctr_candidates_stop_where_the_final_fits_time_begins(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autodrs.methods.blocks.autoctr as autoctr

    seen: list[tuple[int, float]] = []  # (training rows, the deadline's reserve)
    real, real_fit = autoctr.train_candidate, autoctr.fit_spec

    def spy(ds, spec, config, train, valid, hooks, parent=None):
        seen.append((len(train), hooks[0].reserve))
        return real(ds, spec, config, train, valid, hooks, parent)

    def spy_fit(ds, spec, config, hooks=None):  # the final fit: every training row
        seen.append((len(ds.train), hooks[0].reserve))
        return real_fit(ds, spec, config, hooks)

    monkeypatch.setattr(autoctr, "train_candidate", spy)
    monkeypatch.setattr(autoctr, "fit_spec", spy_fit)
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        trials=3, budget_seconds=3600.0,
                        options={"fast": True, "population": 2, "blocks": 2,
                                 "final_candidates": 2, "fidelity": "low"})
    found = get_method("autoctr").search(ctx)
    searched = [r for n, r in seen if n < len(tiny_synthetic.train)]  # the subsampled fits
    final = [r for n, r in seen if n == len(tiny_synthetic.train)]
    assert len(searched) == found.extra["candidates"] == 3
    # the first candidate has no timing to size the reserve; the later ones keep one back
    assert searched[0] == 0.0 and all(r > 0.0 for r in searched[1:])
    # sized as the final fits (the finalists trained so far: one candidate, no seed
    # backbones), each the median candidate's time scaled to every training row and every
    # epoch of the command: an upper bound
    assert found.extra["seed_numbers"] == []
    fits = 1
    fid = autoctr.AutoCTR.fidelity(ctx, "low")
    first = found.trials[0]["seconds"]
    assert searched[1] == pytest.approx(fits * fid.scale * first, rel=0.01, abs=0.01)
    # the final fits share what is left: the first keeps the second's share, the last none
    assert len(final) == 2 and final[0] > 0.0 and final[-1] == 0.0


def spy_on_candidates(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool, str]]:
    """Record each candidate fit of AutoCTR: (training rows, epochs, warm-started, DAG)."""
    import autodrs.methods.blocks.autoctr as autoctr

    seen: list[tuple[int, int, bool, str]] = []
    real = autoctr.train_candidate

    def spy(ds, spec, config, train, valid, hooks, parent=None):
        seen.append((len(train), config.epochs, parent is not None, autoctr.summary(spec)))
        return real(ds, spec, config, train, valid, hooks, parent)

    monkeypatch.setattr(autoctr, "train_candidate", spy)
    return seen


def test_autoctr_trains_candidates_at_full_fidelity_when_the_budget_affords_it(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_on_candidates(monkeypatch)
    options = {"fast": True, "population": 2, "blocks": 2}
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        trials=4, budget_seconds=3600.0, options=options)
    found = get_method("autoctr").search(ctx)
    assert found.extra["fidelity"] == "full" and found.extra["candidates"] == 4
    # every candidate on all rows for the command's epochs, children from scratch
    rows = len(tiny_synthetic.train)
    assert seen == [(rows, fast_config.epochs, False, t["dag"]) for t in found.trials]
    assert all(t["parent"] is not None for t in found.trials[2:])
    # warm_start still applies when asked for
    seen.clear()
    get_method("autoctr").search(dataclasses.replace(
        ctx, options={**options, "warm_start": True}))
    assert [warm for _, _, warm, _ in seen] == [False, False, True, True]


def test_autoctr_falls_back_to_low_fidelity_when_a_full_fit_is_too_dear(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import autodrs.methods.blocks.autoctr as autoctr

    seen = spy_on_candidates(monkeypatch)
    monkeypatch.setattr(autoctr, "FULL_FIDELITY_FITS", 10**9)  # no budget affords it
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        trials=3, budget_seconds=3600.0,
                        options={"fast": True, "population": 2, "blocks": 2,
                                 "subsample": 0.5, "epochs": 1})
    found = get_method("autoctr").search(ctx)
    assert found.extra["fidelity"] == "low" and found.extra["candidates"] == 3
    rows = len(tiny_synthetic.train)
    # the probe (all rows) is cut at its share of the budget and dropped; the same DAG is
    # trained again at low fidelity, and so is every later candidate, children
    # warm-started from their parents
    assert seen[0] == (rows, fast_config.epochs, False, found.trials[0]["dag"])
    low = [(n, e, w) for n, e, w, _ in seen[1:]]
    assert low == [(round(rows * 0.5), 1, False)] * 2 + [(round(rows * 0.5), 1, True)]
    assert [d for *_, d in seen[1:]] == [t["dag"] for t in found.trials]
    # without a budget there is nothing to size a full fit against: low, and no probe
    seen.clear()
    found = get_method("autoctr").search(dataclasses.replace(ctx, budget_seconds=None))
    assert found.extra["fidelity"] == "low" and len(seen) == 3
    assert all(n == round(rows * 0.5) for n, *_ in seen)
    with pytest.raises(SearchError, match="unknown autoctr fidelity 'medium'"):
        get_method("autoctr").search(dataclasses.replace(
            ctx, options={**ctx.options, "fidelity": "medium"}))


def test_autoctr_final_choice_is_the_best_mean_over_shared_seeds(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One fit each picks the luckiest initialisation: finalist #0 validates best on the
    first seed only. On the mean of two seeded fits the steady seed backbone (#1) wins,
    and the searched #2, better than it on both seeds, beats it."""
    from types import SimpleNamespace

    import autodrs.methods.blocks.autoctr as autoctr

    fits: list[tuple[int, int]] = []
    auc = {(0, 0): 0.80, (0, 1): 0.70, (1, 0): 0.78, (1, 1): 0.78, (2, 0): 0.79, (2, 1): 0.785}

    def fake_fit(ds, spec, config, hooks=None):
        number = spec.provenance[-1]["number"]
        fits.append((number, config.seed))
        return SimpleNamespace(metrics={"valid": {"auc": auc[(number, config.seed)]}})

    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    ctx = SearchContext(tiny_synthetic, ArchSpec(), fast_config, seed=0)
    finalists = [Candidate(k, [], ArchSpec(provenance=[{"number": k}]), 0.5, 0.6, 1, 1.0)
                 for k in range(3)]
    chosen, results, cut = autoctr.AutoCTR.final_fit(ctx, finalists[:2], finalists[0], 1)
    assert chosen.number == 0  # a single fit each: the lucky one
    fits.clear()
    chosen, results, cut = autoctr.AutoCTR.final_fit(ctx, finalists[:2], finalists[0], 2)
    assert chosen.number == 1 and not cut
    assert fits == [(0, 0), (1, 0), (0, 1), (1, 1)]  # the same seeds, round by round
    assert results[0] == {"number": 0, "valid_auc": 0.75, "valid_aucs": [0.8, 0.7]}
    chosen, results, _ = autoctr.AutoCTR.final_fit(ctx, finalists, finalists[0], 2)
    assert chosen.number == 2
    # the search passes final_seeds (2 by default) and checks it
    with pytest.raises(SearchError, match="final_seeds must be >= 1"):
        get_method("autoctr").search(SearchContext(
            tiny_synthetic, backbone_spec("deepfm", 8), fast_config,
            options={"fast": True, "final_seeds": 0}))


def test_aim_keeps_the_planted_pairs_and_shrinks_the_noise_fields(planted_60k: Dataset) -> None:
    """Three relevant fields (r1, r3, r5: the planted pairs r1*r3 and r3*r5) and two noise
    fields: AIM should rank the planted pairs first and keep them, drop most pairs that
    involve a noise field, and give the noise fields smaller dims. A random ranking puts
    both planted pairs on top one time in 45; the input spec keeps no pair."""
    fields = ["r1", "r3", "r5", "n1", "n2"]
    config = TrainConfig(epochs=10, batch_size=512, lr=1e-2, progress=False, threads=1, seed=0)
    ctx = SearchContext(planted_60k, backbone_spec("deepfm", 8).copy(fields=fields), config,
                        seed=2)
    found = get_method("aim").search(ctx)
    planted = {"r1*r3", "r3*r5"}
    assert {"*".join(p) for p in found.ranking[:2]} == planted, found.ranking
    kept = {i.key for i in found.spec.interactions or []}
    assert planted <= kept, kept
    noisy = [k for k in found.extra["functions"] if "n" in k]
    assert len(noisy) == 7 and sum(k in kept for k in noisy) <= 2, kept
    dims = found.spec.field_dims
    assert max(dims["n1"], dims["n2"]) < max(dims[f] for f in ("r1", "r3", "r5")), dims
    assert (dims["n1"] + dims["n2"]) / 2 < sum(dims[f] for f in ("r1", "r3", "r5")) / 3, dims


def test_autofeature_models_the_planted_pairs(planted_60k: Dataset) -> None:
    """Four relevant fields (r1, r2, r3, r4: the planted pairs r1*r3 and r2*r4), each pair
    kept as a Hadamard product or dropped, on an FM, searched with two seeds: each time the
    best candidate keeps both planted pairs, a planted pair has the best marginal score and
    both are in the top three (the input spec keeps no pair; a random spec and ranking
    pass one seed about one time in twelve, so both about one time in 150)."""
    fields = ["r1", "r2", "r3", "r4"]
    config = TrainConfig(epochs=10, batch_size=512, lr=1e-2, progress=False, threads=1, seed=0)
    planted = {"r1*r3", "r2*r4"}
    for seed in (1, 3):
        ctx = SearchContext(planted_60k, backbone_spec("deepfm", 8).copy(fields=fields),
                            config, seed=seed, trials=12,
                            options={"backbone": "fm", "epochs": 2,
                                     "functions": "multiply,none"})
        found = get_method("autofeature").search(ctx)
        kept = {i.key: i.function for i in found.spec.interactions or []}
        assert all(kept.get(k) == "multiply" for k in planted), (seed, kept)
        top = ["*".join(p) for p in found.ranking[:3]]
        assert top[0] in planted and planted <= set(top), (seed, found.scores)
        assert found.extra["completed_trials"] >= 6


def test_autoctr_reserve_uses_the_measured_final_fit_and_trains_every_seed(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed backbones all train, as candidates and in full, before the reserve may stop
    the search; the reserve is the final fit's fits still owed (the later seeds of the best
    in full, and the leader not yet in full) times the measured full fit, at most half of
    the stage, and a stage whose final fit is that dear searches nothing more."""
    import autodrs.methods.blocks.autoctr as autoctr

    seen: list[tuple[int, float]] = []  # (training rows, the deadline's reserve)
    real = autoctr.train_candidate

    def spy(ds, spec, config, train, valid, hooks, parent=None):
        seen.append((len(train), hooks[0].reserve))
        return real(ds, spec, config, train, valid, hooks, parent)

    monkeypatch.setattr(autoctr, "train_candidate", spy)
    monkeypatch.setattr(autoctr.FullFits, "seconds", lambda self: 0.01)
    options = {"fast": True, "population": 2, "blocks": 3, "seed_backbones": "deepfm,ipnn",
               "final_candidates": 2, "final_seeds": 2, "fidelity": "low", "epochs": 1,
               "promote_every": 100}
    config = dataclasses.replace(fast_config, epochs=3)
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), config, seed=0,
                        trials=4, budget_seconds=3600.0, options=options)
    found = get_method("autoctr").search(ctx)
    rows = len(tiny_synthetic.train)
    searched = [r for n, r in seen if n < rows]
    assert len(searched) == found.extra["candidates"] == 4
    assert found.extra["seed_numbers"] == [0, 1]
    # the seeds train with no reserve; then both are in full (one fit each), so the final
    # fit owes their second seeds and the leader's two fits: 4 x 0.01 s
    assert searched[:2] == [0.0, 0.0]
    assert searched[2] == pytest.approx(2 * 0.01)  # no candidate outside the full fits yet
    assert searched[3] == pytest.approx(4 * 0.01)
    final = found.extra["final_fit"]
    assert len(final) == 2 and all(len(f["valid_aucs"]) == 2 for f in final)
    # a full fit dearer than the stage: the seeds still train and are fitted, and nothing
    # more is searched (the reserve, half the stage, leaves no room for one more fit)
    seen.clear()
    monkeypatch.setattr(autoctr.FullFits, "seconds", lambda self: 1e6)
    found = get_method("autoctr").search(dataclasses.replace(
        ctx, options={**options, "retrain_seconds": 1e6}))
    assert found.extra["candidates"] == 2 and found.extra["seed_numbers"] == [0, 1]
    assert {f["number"] for f in found.extra["final_fit"]} == {0, 1}
    assert found.extra["best_number"] in (0, 1)


def test_autoctr_promotion_picks_the_truly_better_candidate(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the candidates' low-fidelity scores and full fits disagree. The search
    promotes the best by the low-fidelity ranking (AUC under rank_by=auc) into a full fit,
    and the final choice follows the full fits: the candidate that is truly better (in
    full) is returned even though the low-fidelity leader looked better."""
    from types import SimpleNamespace

    import autodrs.methods.blocks.autoctr as autoctr

    low: dict[int, float] = {}  # number -> low-fidelity AUC

    real = autoctr.train_candidate

    def fake_candidate(ds, spec, config, train, valid, hooks, parent=None):
        model, _ = real(ds, spec, dataclasses.replace(config, max_steps=1), train, valid,
                        hooks, parent)
        k = len(low)
        low[k] = [0.60, 0.70, 0.65, 0.55, 0.62, 0.58][k % 6]
        # by logloss #2 looks worst (a badly calibrated candidate with a good ranking)
        return model, SimpleNamespace(valid={"auc": low[k],
                                             "logloss": 1.0 - low[k] + (0.5 if k == 2 else 0)})

    def fake_fit(ds, spec, config, hooks=None):
        number = next(k for k, c in enumerate(archs) if c == autoctr.summary(spec)
                      + str(spec.linear))
        # in full, #2 (low-fidelity AUC 0.65) beats the low-fidelity leader #1 (0.70)
        auc = {1: 0.80, 2: 0.85}.get(number, 0.75)
        return SimpleNamespace(metrics={"valid": {"auc": auc + 0.001 * (config.seed - 3)}})

    archs: list[str] = []  # each candidate's DAG, in training order

    def spy_candidate(ds, spec, config, train, valid, hooks, parent=None):
        archs.append(autoctr.summary(spec) + str(spec.linear))
        return fake_candidate(ds, spec, config, train, valid, hooks, parent)

    monkeypatch.setattr(autoctr, "train_candidate", spy_candidate)
    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=3,
                        trials=6, options={"fast": True, "population": 6, "blocks": 2,
                                           "seed_backbones": "", "rank_by": "auc",
                                           "promote_every": 3, "final_candidates": 2,
                                           "final_seeds": 2})
    found = get_method("autoctr").search(ctx)
    assert found.extra["rank_by"] == "auc"
    # after 3 candidates the best by low-fidelity AUC (#1, 0.70) is promoted; at the end
    # the best not yet in full fills the second finalist's place (#2, 0.65)
    assert found.extra["promoted"] == [1, 2]
    aucs = {t["number"]: t["full_valid_aucs"] for t in found.trials}
    assert aucs[1] == pytest.approx([0.80, 0.801]) and aucs[2] == pytest.approx([0.85, 0.851])
    # the finalists, each on two seeds: #2 is returned, truly better than the leader
    assert {f["number"] for f in found.extra["final_fit"]} == {1, 2}
    assert found.extra["best_number"] == 2
    # ranked by logloss, #2 is never promoted, and the search returns a worse one
    low.clear()
    archs.clear()
    found = get_method("autoctr").search(dataclasses.replace(
        ctx, options={**ctx.options, "rank_by": "logloss"}))
    assert 2 not in found.extra["promoted"] and found.extra["best_number"] != 2
    with pytest.raises(SearchError, match="rank_by must be auc or logloss"):
        get_method("autoctr").search(dataclasses.replace(
            ctx, options={**ctx.options, "rank_by": "flops"}))


def test_autoctr_resumes_the_search_when_the_final_fit_ends_early(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a budget, the final fit's time is kept back from the search at the expected
    seconds of a full fit; when the final fit ends sooner (early stopping), the search
    resumes with the time left instead of returning, and the next final fit takes the new
    leader: the budget is used."""
    from types import SimpleNamespace

    import autodrs.methods.blocks.autoctr as autoctr

    clock = {"now": 0.0}
    monkeypatch.setattr(autoctr.time, "perf_counter", lambda: clock["now"])
    real = autoctr.train_candidate

    def fake_candidate(ds, spec, config, train, valid, hooks, parent=None):
        model, fit = real(ds, spec, dataclasses.replace(config, max_steps=1), train, valid,
                          hooks, parent)
        clock["now"] += 1.0  # a candidate: 1 s
        return model, fit

    fitted: list[tuple[int, int]] = []

    def fake_fit(ds, spec, config, hooks=None):
        hooks[0].on_step(None, None, 0, None, None)  # the deadline may stop it
        clock["now"] += 5.0  # a full fit: 5 s, a fifth of what the search expected
        fitted.append((len(fitted), config.seed))
        return SimpleNamespace(metrics={"valid": {"auc": 0.7 + 0.001 * len(fitted)}})

    monkeypatch.setattr(autoctr, "train_candidate", fake_candidate)
    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        budget_seconds=100.0,
                        options={"fast": True, "population": 4, "blocks": 2,
                                 "fidelity": "low", "seed_backbones": "",
                                 "retrain_seconds": 25.0, "promote_every": 1000,
                                 "final_candidates": 1, "final_seeds": 2})
    ctx.remaining = lambda: 100.0 - clock["now"]  # type: ignore[method-assign]
    found = get_method("autoctr").search(ctx)
    # the search stopped at the reserve (2 x 25 s), the final fit took 10 s, and the
    # search went on: more candidates, and a second leader fitted in full
    assert found.extra["candidates"] > 50
    assert len(found.extra["promoted"]) >= 2
    assert clock["now"] > 90.0


def test_autoctr_final_fit_is_the_commands_retrain(tiny_synthetic: Dataset,
                                                  fast_config: TrainConfig) -> None:
    """The final fit trains as the command's retrain does (``fit_spec``, the command's
    config at its seed): inside ``shared_fits`` the retrain of the returned spec is that
    fit, so the budget left after the search cannot cut it short, and the model delivered
    is the one validated."""
    from autodrs.experiment import cached_fit, shared_fits

    ctx = SearchContext(tiny_synthetic, backbone_spec("deepfm", 8), fast_config, seed=0,
                        trials=3, options={"fast": True, "population": 2, "blocks": 3,
                                           "seed_backbones": "deepfm,ipnn",
                                           "final_candidates": 2, "final_seeds": 2})
    with shared_fits():
        found = get_method("autoctr").search(ctx)
        done = cached_fit(tiny_synthetic, found.spec, fast_config)
    assert done is not None
    best = next(f for f in found.extra["final_fit"] if f["number"] == found.extra["best_number"])
    assert done.metrics["valid"]["auc"] == pytest.approx(best["valid_aucs"][0])


def test_autoctr_final_fit_drops_a_round_that_does_not_finish(
        tiny_synthetic: Dataset, fast_config: TrainConfig,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the second seed's round does not fit in the time left, the finalists are
    compared on the first round, which all of them finished: the finalist whose second fit
    was cut still counts (dropping it returned a worse one, or, when every finalist lost a
    fit, a DAG never fitted in full)."""
    from types import SimpleNamespace

    import autodrs.methods.blocks.autoctr as autoctr
    from autodrs.search.estimation import BudgetExhausted

    auc = {(0, 0): 0.70, (0, 1): 0.70, (1, 0): 0.80}
    fits: list[tuple[int, int]] = []

    def fake_fit(ds, spec, config, hooks=None):
        number = spec.provenance[-1]["number"]
        fits.append((number, config.seed))
        if (number, config.seed) not in auc:
            raise BudgetExhausted("cut")
        return SimpleNamespace(metrics={"valid": {"auc": auc[(number, config.seed)]}})

    monkeypatch.setattr(autoctr, "fit_spec", fake_fit)
    ctx = SearchContext(tiny_synthetic, ArchSpec(), fast_config, seed=0)
    finalists = [Candidate(k, [], ArchSpec(provenance=[{"number": k}]), 0.5, 0.6, 1, 1.0)
                 for k in range(2)]
    chosen, results, cut = autoctr.AutoCTR.final_fit(ctx, finalists, finalists[0], 2)
    assert chosen.number == 1 and cut == []
    assert [r["valid_aucs"] for r in results] == [[0.7], [0.8]]
    # a finalist cut in the first round does not count; the others are compared without it
    auc.pop((1, 0))
    auc[(1, 1)] = 0.9
    chosen, results, cut = autoctr.AutoCTR.final_fit(ctx, finalists, finalists[0], 2)
    assert chosen.number == 0 and cut == [1] and [r["number"] for r in results] == [0]
