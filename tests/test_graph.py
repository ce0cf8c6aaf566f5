"""Graph recommenders: the leave-last-out split, the training-only graph, ranking metrics by
hand, LightGCN against popularity and a random model, the SANE-style and AutoGSR-style
searches on planted data, and the ``autodrs graph`` command."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from autodrs.cli import app
from autodrs.data.errors import DataError
from autodrs.graph import (
    GraphSpec,
    GraphTrainConfig,
    fit_graph,
    from_log,
    lightgcn,
    popularity,
    search_graph,
)
from autodrs.graph.data import TEST, TRAIN, VALID, GraphData
from autodrs.graph.models import COMBINES, OPS, GraphModel, SearchGraphModel, model_key
from autodrs.graph.session import (
    SessionConfig,
    SessionSpec,
    fit_session,
    search_session,
    session_graphs,
    session_task,
)
from autodrs.graph.train import (
    _known_keys,
    _negatives,
    adjacencies,
    rank_metrics,
    rank_scores,
    score_vertices,
)

warnings.filterwarnings("ignore", message="Sparse")


def clusters(users: int = 200, items: int = 100, groups: int = 5, per_user: int = 5,
             seed: int = 0) -> pl.DataFrame:
    """Each user interacts with ``per_user`` items of their own item group, in random
    order, after one random item: the held-out items are the user's group's."""
    rng = np.random.default_rng(seed)
    size = items // groups
    rows = []
    for u in range(users):
        rows.append((f"u{u}", f"i{rng.integers(items):03d}", -1))
        picked = rng.choice(size, per_user, replace=False) + (u % groups) * size
        rows += [(f"u{u}", f"i{i:03d}", t) for t, i in enumerate(picked)]
    return pl.DataFrame(rows, schema=["user", "item", "time"], orient="row")


def chains(users: int = 150, items: int = 40, length: int = 12, seed: int = 0) -> pl.DataFrame:
    """Second-order chains: each item is a fixed permutation of the item two steps back, so
    the next item follows from the second-to-last one, not from the last."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(items)
    rows = []
    for u in range(users):
        x = list(rng.choice(items, 2, replace=False))
        while len(x) < length:
            x.append(int(perm[x[-2]]))
        rows += [(f"u{u}", f"i{i:03d}", t) for t, i in enumerate(x)]
    return pl.DataFrame(rows, schema=["user", "item", "time"], orient="row")


# ---------------------------------------------------------------- split and graph
def test_leave_last_out_split_by_time() -> None:
    log = pl.DataFrame({
        # a: rows out of time order, two at time 5 (row order breaks the tie)
        # b: two interactions only (all training, not scored)
        # c: item y twice (the earliest kept), so three distinct items
        "user": ["a", "a", "a", "a", "b", "b", "c", "c", "c", "c"],
        "item": ["p", "q", "r", "s", "p", "q", "x", "y", "y", "z"],
        "time": [9, 1, 5, 5, 3, 4, 1, 2, 7, 8],
    })
    g = from_log(log, "user", "item", "time")
    uid = {u: i for i, u in enumerate(g.user_ids)}
    iid = {x: i for i, x in enumerate(g.item_ids)}

    def pairs(edges: np.ndarray) -> set[tuple[str, str]]:
        return {(g.user_ids[u], g.item_ids[i]) for u, i in edges}

    assert pairs(g.test) == {("a", "p"), ("c", "z")}
    assert pairs(g.valid) == {("a", "s"), ("c", "y")}
    assert pairs(g.train) == {("a", "q"), ("a", "r"), ("b", "p"), ("b", "q"), ("c", "x")}
    assert len(g.train) == 5  # c's second y is dropped, not a training edge
    assert uid["b"] not in set(g.test[:, 0]) | set(g.valid[:, 0])
    assert g.log.filter(pl.col("part") == TEST).height == 2
    assert set(g.log["part"].unique()) == {TRAIN, VALID, TEST}
    assert iid["p"] in g.known()[uid["b"]]


def test_text_times_order_as_numbers() -> None:
    log = pl.DataFrame({"user": ["a"] * 3, "item": ["p", "q", "r"], "time": ["9", "10", "2"]})
    g = from_log(log, "user", "item", "time")
    assert g.item_ids[g.test[0, 1]] == "q" and g.item_ids[g.valid[0, 1]] == "p"


def test_from_log_names_bad_input() -> None:
    log = pl.DataFrame({"user": ["a"], "item": ["p"], "time": [None]})
    with pytest.raises(DataError, match="'time' has missing values"):
        from_log(log, "user", "item", "time")
    with pytest.raises(DataError, match="no column 'when'"):
        from_log(log, "user", "item", "when")


def test_adjacency_and_training_pairs_use_train_edges_only() -> None:
    g = from_log(clusters(users=40, items=20, groups=2), "user", "item", "time")
    sym = g.adjacency().to_dense()
    rows, cols = torch.nonzero(sym, as_tuple=True)
    edges = {(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}
    expected = {(int(u), int(i) + g.users) for u, i in g.train}
    assert edges == expected | {(i, u) for u, i in expected}
    for held in (g.valid, g.test):
        for u, i in held:
            assert sym[u, i + g.users] == 0 and sym[i + g.users, u] == 0
    degree = np.bincount(g.train[:, 0], minlength=g.users)
    u, i = g.train[0]
    item_degree = int((g.train[:, 1] == i).sum())
    assert math.isclose(float(sym[u, i + g.users]),
                        1 / math.sqrt(degree[u] * item_degree), rel_tol=1e-5)
    mean = adjacencies(g)["mean"][0].to_dense()
    assert torch.allclose(mean.sum(1)[:g.users][torch.as_tensor(degree > 0)], torch.tensor(1.0))
    # a negative is never one of the user's training items
    known = _known_keys(g)
    negatives = _negatives(g, g.train[:, 0], np.random.default_rng(0), known)
    train = {(int(a), int(b)) for a, b in g.train}
    assert not any((int(a), int(b)) in train for a, b in zip(g.train[:, 0], negatives,
                                                             strict=True))


# ---------------------------------------------------------------- metrics by hand
def hand_graph() -> GraphData:
    # user 0: trained on item 0, valid item 1, test item 2; user 1: trained on 3, valid 4,
    # test 0
    train = np.array([[0, 0], [1, 3]])
    return GraphData(users=2, items=5, train=train, valid=np.array([[0, 1], [1, 4]]),
                     test=np.array([[0, 2], [1, 0]]), user_ids=["a", "b"],
                     item_ids=list("vwxyz"), log=pl.DataFrame())


def test_rank_metrics_by_hand() -> None:
    g = hand_graph()
    scores = torch.tensor([[9.0, 5.0, 1.0, 3.0, 2.0],    # user 0
                           [0.5, 1.0, 0.5, 7.0, 6.0]])   # user 1
    k = 2
    test = rank_scores(scores, g, "test", k)
    # user 0 (test item 2): item 0 (train) and item 1 (valid) are masked; 3 and 4 score
    # above -> rank 2, a miss at k=2; candidates 2, 3, 4: AUC 0 of 2
    # user 1 (test item 0): items 3 (train) and 4 (valid) masked; item 1 above, item 2 ties
    # but comes after by index -> rank 1, a hit; NDCG 1/log2(3); AUC (0 + 0.5) / 2
    assert test[f"recall@{k}"] == pytest.approx(0.5)
    assert test[f"ndcg@{k}"] == pytest.approx(0.5 / math.log2(3))
    assert test["auc"] == pytest.approx((0.0 + 0.5 / 2) / 2)
    valid = rank_scores(scores, g, "valid", k)
    # user 0 (valid item 1): item 0 masked; nothing above -> rank 0; AUC 3/3
    # user 1 (valid item 4): item 3 masked; nothing above -> rank 0
    assert valid[f"recall@{k}"] == pytest.approx(1.0)
    assert valid[f"ndcg@{k}"] == pytest.approx(1.0)
    assert valid["auc"] == pytest.approx(1.0)
    # embeddings give the same figures as their product
    users, items = torch.eye(2, 3), torch.randn(5, 3)
    assert rank_metrics(users, items, g, "test", k) == rank_scores(
        users @ items.T, g, "test", k)
    # popularity ranks by training degree, ties by index: items 0 and 3 once each
    pop = popularity(g, "test", k)
    # user 0: candidates 2, 3, 4; item 3 (degree 1) above 2 -> rank 1, hit
    # user 1: candidates 0, 1, 2; item 0 (degree 1) first -> rank 0
    assert pop[f"recall@{k}"] == pytest.approx(1.0)
    assert pop[f"ndcg@{k}"] == pytest.approx((1 / math.log2(3) + 1.0) / 2)


# ---------------------------------------------------------------- models on planted data
@pytest.fixture(scope="module")
def planted() -> GraphData:
    return from_log(clusters(), "user", "item", "time")


FAST = GraphTrainConfig(epochs=20, lr=0.05, batch_size=512, patience=20, seed=0)


def test_lightgcn_beats_popularity_and_a_random_model(planted: GraphData) -> None:
    g = planted
    fit = fit_graph(g, lightgcn(dim=16, layers=2), FAST)
    pop = popularity(g, "test")
    untrained = GraphModel(g.users, g.items, lightgcn(dim=16, layers=2))
    with torch.no_grad():
        rand = rank_metrics(*untrained(adjacencies(g)), g, "test")
    print(fit.test, pop, rand)
    assert fit.test["recall@20"] > 0.5
    assert fit.test["recall@20"] > pop["recall@20"] + 0.25
    assert fit.test["recall@20"] > rand["recall@20"] + 0.25
    assert fit.test["ndcg@20"] > max(pop["ndcg@20"], rand["ndcg@20"])


def test_sane_space_holds_lightgcn_exactly(planted: GraphData) -> None:
    # the supernet at the vertex (sym, sym; both skips kept; mean) scores as LightGCN does
    g = planted
    adj = adjacencies(g)
    spec = lightgcn(dim=8, layers=2)
    torch.manual_seed(0)
    plain = GraphModel(g.users, g.items, spec)
    net = SearchGraphModel(g.users, g.items, 8, 2)
    with torch.no_grad():
        net.ego.weight.copy_(plain.ego.weight)
        net.alpha.fill_(-60.0)
        net.alpha[:, OPS.index("sym")] = 60.0
        net.gamma.copy_(torch.tensor([[60.0, -60.0]] * 2))
        net.beta.fill_(-60.0)
        net.beta[COMBINES.index("mean")] = 60.0
        u, i = plain(adj)
        su, si = net(adj)
        assert torch.allclose(u @ i.T, su @ si.T, atol=1e-5)
    assert net.derive().key() == spec.key()
    # dropping layer 0 from the layer aggregator (a searched skip) changes the model, and
    # the supernet's vertex with that skip dropped scores as that model does (concat: the
    # dropped layer's zeros add nothing to the inner product)
    spec = GraphSpec(dim=8, ops=["sym", "mean"], skips=[False, True], combine="concat")
    dropped = GraphModel(g.users, g.items, spec)
    with torch.no_grad():
        dropped.ego.weight.copy_(plain.ego.weight)
        du, di = dropped(adj)
        kept = GraphModel(g.users, g.items, GraphSpec(dim=8, ops=["sym", "mean"],
                                                      combine="concat"))
        kept.ego.weight.copy_(plain.ego.weight)
        ku, ki = kept(adj)
        assert not torch.allclose(ku @ ki.T, du @ di.T, atol=1e-3)
        net.alpha[1] = torch.tensor([-60.0, 60.0, -60.0])
        net.gamma[0] = torch.tensor([-60.0, 60.0])
        net.beta.copy_(torch.tensor([-60.0, 60.0, -60.0]))
        su, si = net(adj)
        assert torch.allclose(du @ di.T, su @ si.T, atol=1e-5)
    assert net.derive().key() == spec.key()


def test_ranked_specs_follow_the_architecture_probabilities() -> None:
    net = SearchGraphModel(4, 4, 8, 2)
    with torch.no_grad():
        net.alpha.copy_(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))
        net.gamma.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.5]]))
        net.beta.copy_(torch.tensor([0.0, 0.0, 4.0]))
    first, second = net.ranked(2)
    assert first.key() == (("sym", "gin"), (True, False), "max") == net.derive().key()
    # the least confident part flips first: layer 1's skip (logits 0 vs 0.5)
    assert second.key() == (("sym", "gin"), (True, True), "max")
    # with every skip dropped the layer aggregators are one model: listed once
    with torch.no_grad():
        net.gamma.copy_(torch.tensor([[0.0, 3.0], [0.0, 3.0]]))
        net.beta.copy_(torch.tensor([0.1, 0.0, 0.0]))
    first, second = net.ranked(2)
    assert first.key() == (("sym", "gin"), (False, False), "mean")
    assert second.key()[:2] != (("sym", "gin"), (False, False))


def test_sane_search_keeps_the_best_validating_candidate(planted: GraphData) -> None:
    g = planted
    cfg = GraphTrainConfig(lr=0.05, batch_size=512, arch_lr=0.1, seed=0)
    found = search_graph(g, layers=2, dim=16, epochs=6, warmup=2, config=cfg, candidates=3,
                         candidate_epochs=4)
    scores = [c["valid ndcg@20"] for c in found.candidates]
    assert len(scores) == 3 and len(set(scores)) == 3  # distinct: the choice is not a tie
    best = found.candidates[int(np.argmax(scores))]
    assert found.spec.to_dict() == best["spec"]
    assert found.argmax is not None and found.candidates[0]["spec"] == found.argmax.to_dict()
    # each user has 3 training items: the derived model propagates and beats matrix
    # factorisation (no layers) retrained the same way
    searched = fit_graph(g, found.spec, FAST)
    flat = fit_graph(g, GraphSpec(dim=16, ops=[]), FAST)
    assert searched.test["recall@20"] > flat.test["recall@20"] + 0.05


def test_one_shot_scores_are_the_discrete_models_scores(planted: GraphData) -> None:
    # every vertex once (2 layers: 9 op pairs x (3 skip patterns x 3 aggregators + every
    # skip dropped)), scored exactly as the discrete model with the supernet's embeddings
    g = planted
    torch.manual_seed(0)
    net = SearchGraphModel(g.users, g.items, 8, 2)
    adj = adjacencies(g)
    scored = score_vertices(net, g, adj)
    assert len(scored) == 9 * (3 * 3 + 1) == len({model_key(s) for _, s in scored})
    assert [v for v, _ in scored] == sorted((v for v, _ in scored), reverse=True)
    for value, spec in scored[:2] + scored[-2:]:
        plain = GraphModel(g.users, g.items, spec)
        with torch.no_grad():
            plain.ego.weight.copy_(net.ego.weight)
            assert rank_metrics(*plain(adj), g, "valid")["ndcg@20"] == pytest.approx(value)


def test_one_shot_candidates_recover_what_the_gradient_misses(planted: GraphData) -> None:
    # on the planted clusters the validation-BPR gradient derives (gin, gin, both kept,
    # concat), one of the worst vertices; the one-shot candidates scored at the end of the
    # warm-up include one far better, and the search delivers it, its fit reused as is
    g = planted
    cfg = GraphTrainConfig(lr=0.05, batch_size=512, arch_lr=0.1, epochs=30, patience=5,
                           seed=0)
    found = search_graph(g, layers=2, dim=16, epochs=6, warmup=3, config=cfg, candidates=1,
                         one_shot=1, candidate_epochs=None)
    assert found.argmax is not None
    # the best one-shot spec of each layer aggregator
    assert sorted(s["spec"]["combine"] for s in found.one_shot) == sorted(COMBINES)
    assert [c["from"] for c in found.candidates] == ["probability"] + ["one-shot"] * 3
    kept = found.fit_of(found.spec)
    argmax = found.fit_of(found.argmax)
    assert kept is not None and argmax is not None
    best = max(c["valid ndcg@20"] for c in found.candidates)
    assert kept.valid["ndcg@20"] == pytest.approx(best, abs=1e-5)
    assert kept.valid == fit_graph(g, found.spec, cfg).valid  # the final fit, reused
    assert kept.valid["ndcg@20"] > argmax.valid["ndcg@20"] + 0.05
    assert kept.test["recall@20"] > argmax.test["recall@20"] + 0.1


def test_graph_spec_rejects_unknown_choices() -> None:
    with pytest.raises(ValueError, match="unknown graph operation"):
        GraphSpec(ops=["attention"])
    with pytest.raises(ValueError, match="unknown graph operation"):
        GraphSpec(ops=["skip"])  # no propagation is a dropped layer, not an operation
    with pytest.raises(ValueError, match="unknown layer combine"):
        GraphSpec(combine="lstm")
    with pytest.raises(ValueError, match="one entry per layer"):
        GraphSpec(ops=["sym", "sym"], skips=[True])


# ---------------------------------------------------------------- session graphs
def test_session_graphs_by_hand() -> None:
    # history a b a c (ids 1 2 1 3) after one pad: the node of a has out-edges to b and c
    in_adj, out_adj, sym = session_graphs(torch.tensor([[0, 1, 2, 1, 3]]))
    out_adj, in_adj = out_adj[0], in_adj[0]
    # a node's messages come from positions: a's successors are b (position 2, after the
    # first a) and c (position 4, after the second a), half each, seen from both a slots
    for p in (1, 3):
        assert out_adj[p].tolist() == pytest.approx([0, 0, 0.5, 0, 0.5])
        assert in_adj[p].tolist() == pytest.approx([0, 0, 1, 0, 0])  # a <- b
    # b -> a through position 3 (both a slots hold one state: same item, same edges)
    assert out_adj[2].tolist() == pytest.approx([0, 0, 0, 1, 0])
    assert in_adj[2].tolist() == pytest.approx([0, 1, 0, 0, 0])  # b <- a
    assert in_adj[4].tolist() == pytest.approx([0, 0, 0, 1, 0])  # c <- a
    assert out_adj[4].sum() == 0 and out_adj[0].sum() == 0  # c is last; the pad has none
    assert sym[0, 0].sum() == 0


def test_session_task_histories_are_earlier_items_only() -> None:
    g = from_log(chains(users=20, length=6), "user", "item", "time")
    data = session_task(g, max_len=3)
    assert torch.equal(data.valid.user, torch.as_tensor(g.valid[:, 0]))
    assert torch.equal(data.test.user, torch.as_tensor(g.test[:, 0]))
    assert torch.equal(data.test.target, torch.as_tensor(g.test[:, 1]))
    log = g.log
    for rows, part in ((data.valid, VALID), (data.test, TEST)):
        for user, target, history in zip(rows.user, rows.target, rows.history, strict=True):
            mine = log.filter(pl.col("user") == int(user))
            t = mine.filter(pl.col("part") == part)["time"][0]
            earlier = mine.filter(pl.col("time") < t)["item"].to_list()[-3:]
            assert [int(h) - 1 for h in history if h > 0] == earlier
            assert int(target) not in earlier
    recent = session_task(g, max_len=3, recent=2)
    per_user = np.bincount(data.train.user.numpy(), minlength=g.users)
    assert np.array_equal(np.bincount(recent.train.user.numpy(), minlength=g.users),
                          np.minimum(per_user, 2))
    last = {int(u): (h.tolist(), int(t)) for u, h, t in zip(
        data.train.user, data.train.history, data.train.target, strict=True)}
    assert all(last[int(u)] == (h.tolist(), int(t)) for u, h, t in zip(
        recent.train.user, recent.train.history, recent.train.target, strict=True)
        if per_user[int(u)] == 1)


def test_autogsr_search_finds_a_propagating_layer_on_second_order_chains() -> None:
    g = from_log(chains(), "user", "item", "time")
    data = session_task(g, max_len=8)
    config = SessionConfig(lr=0.01, batch_size=256, arch_lr=0.05, seed=0, k=1)
    found = search_session(g, data, layers=1, dim=16, epochs=12, config=config, warmup=2)
    # the next item follows from the second-to-last: only a layer that passes messages
    # along the session graph brings it to the last node
    assert found["spec"].ops != ["skip"]
    assert found["op_weights"][0]["skip"] < 0.1
    fit = SessionConfig(epochs=15, lr=0.01, batch_size=256, patience=15, seed=0, k=1)
    searched = fit_session(g, data, found["spec"], fit)
    flat = fit_session(g, data, SessionSpec(dim=16, ops=["skip"], readout="last"), fit)
    assert searched["test"]["recall@1"] > flat["test"]["recall@1"] + 0.3


# ---------------------------------------------------------------- command
def test_graph_command_writes_result(tmp_path) -> None:
    path = tmp_path / "log.csv"
    clusters(users=40, items=20, groups=2).write_csv(path)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["graph", "--data", str(path), "--user", "user",
                                      "--item", "item", "--time", "time", "--method",
                                      "lightgcn", "--epochs", "2", "--dim", "8",
                                      "--baselines", "popularity", "--seed", "1",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "result.json").read_text())
    assert saved["command"] == "graph" and saved["spec"]["ops"] == ["sym"] * 3
    assert set(saved["metrics"]["test"]) == {"recall@20", "ndcg@20", "auc"}
    assert set(saved["baselines"]) == {"popularity"}
    assert saved["data"]["users"] == 40
    again = CliRunner().invoke(app, ["graph", "--data", str(path), "--user", "user",
                                     "--item", "item", "--time", "time", "--method",
                                     "lightgcn", "--epochs", "2", "--dim", "8",
                                     "--baselines", "popularity", "--seed", "1",
                                     "--out", str(tmp_path / "run2")])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run2" / "result.json").read_text())["metrics"] == \
        saved["metrics"]
    bad = CliRunner().invoke(app, ["graph", "--data", str(path), "--user", "who",
                                   "--item", "item", "--time", "time", "--out",
                                   str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "no column 'who'" in bad.output
    unknown = CliRunner().invoke(app, ["graph", "--data", str(path), "--method", "gat",
                                       "--out", str(tmp_path / "bad")])
    assert unknown.exit_code == 2 and "unknown graph method" in unknown.output


def test_guard_delivers_the_better_validating_model(monkeypatch, tmp_path) -> None:
    import autodrs.graph.train as graph_train
    from autodrs.graph.command import run_graph
    from autodrs.graph.train import GraphSearch

    def flat_search(g, layers=3, dim=64, epochs=30, config=None, warmup=None, **kwargs):
        spec = GraphSpec(dim=dim, ops=[], combine="mean")  # matrix factorisation
        return GraphSearch(spec=spec, op_weights=[], combine_weights={}, seconds=0.0)

    monkeypatch.setattr(graph_train, "search_graph", flat_search)
    path = tmp_path / "log.csv"
    clusters().write_csv(path)
    common = dict(data=str(path), user="user", item="item", time_col="time", method="sane",
                  baselines="none", epochs=15, lr=0.05, dim=16, layers=2, seed=0)
    guarded = run_graph(**common)
    stage = guarded["stages"][0]["guard"]
    best = max(stage["derived"], stage["lightgcn"])
    assert guarded["metrics"]["valid"]["ndcg@20"] == pytest.approx(best)
    expected = ["sym", "sym"] if stage["kept"] == "lightgcn" else []
    assert guarded["spec"]["ops"] == expected
    # the planted graph needs propagation: the flat spec loses to LightGCN on validation
    assert stage["kept"] == "lightgcn"
    raw = run_graph(**common, guard=False)
    assert raw["spec"]["ops"] == [] and "guard" not in raw["stages"][0]
