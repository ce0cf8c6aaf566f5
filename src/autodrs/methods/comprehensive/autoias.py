"""AutoIAS (Wei, Wang, Zhu; CIKM 2021, "AutoIAS: Automatic Integrated Architecture Searcher
for Click-Trough Rate Prediction"): one integrated space over the whole model, searched by
a policy-gradient architecture generator over a weight-sharing supernet that is trained
with knowledge distillation.

**Space.** Per embedded field its embedding dim (``dims``, default the powers of two up to
the spec's ``embed_dim`` D); per field pair either nothing or one interaction function
(``functions``, default ``product``, ``multiply``, ``generalised``;
``autodrs.nn.functions``; AIM's ``concat`` is left out, see ``IAS_FUNCTIONS``); the MLP's
depth (``depths``, 1, 2, 3) and each layer's width (``widths``, 64, 128, 256). A first-order term is always kept.

**Supernet, ordinal sharing.** Every field has a width-D table; a field at dim d uses the
first d coordinates (the rest are masked to zero, which is the retrained model's
projection of its d-dim embedding to D for the interactions). Every pair holds every
function's weights; a subnet sums its pairs' chosen functions into the logit. The MLP holds
``max(depths)`` layers of ``max(widths)`` units; a subnet of widths (w_1..w_l) uses the
leading ``w_i x w_(i-1)`` block of layer i and the leading ``w_l`` columns of depth l's own
read-out. The MLP reads the flat masked embeddings and, per pair, its inner product where
the subnet models the pair as a ``product`` (zero otherwise): the interaction results feed
the deep part, as IPNN's product layer and the derived spec's ``inner`` do. Without that
input the MLP, which cannot tell which pairs a subnet kept, learnt every pair's effect
itself and the pair terms went to zero: on planted ``synthetic`` dropping a planted pair
from the widest subnet moved its AUC no more than dropping a noise pair, so the reward did
not depend on the pairs (docs/comprehensive.md).

**KD-based supernet training** (the paper's answer to subnets ranked unreliably by
inherited weights). Each training step runs the *full* supernet (every dim at D, every
pair with all its functions summed, the deepest and widest MLP), the teacher, on the
labels, and one subnet drawn uniformly from the space, the student, on
``(1 - kd) BCE(y, s) + kd T^2 BCE(sigmoid(t / T), s / T)`` with the teacher's logits ``t``
detached: every subnet learns towards the one function the full model fits, so their
validation AUCs are measured on a common footing. ``kd`` (0.5) and ``temperature`` (1).

**Architecture generator.** An LSTM (ENAS-style) emits the decisions in order (dims, then
pairs, then depth and widths), each from a softmax over its choices conditioned on the
decisions so far (the paper's generator models the dependencies between components; each
decision also has a bias of its own so single choices are learned quickly). After the
supernet is trained, REINFORCE: each of ``rl_steps`` (200) steps samples ``rl_batch`` (16)
architectures, the reward of one is the supernet's AUC with that subnet pinned on a fixed
subsample of ``reward_rows`` (4,096) validation rows, minus ``cost`` (0.005) times its
complexity (the mean of its shares of the largest architecture's embedding parameters,
pairs and MLP parameters) and ``pair_cost`` (0.0001) per kept pair, and the generator takes
an Adam step (``controller_lr`` 0.02) on ``-(R - mean R) / std R * log p - entropy * H``
(``entropy`` 0.02). The paper's reward is the AUC alone; without a cost a pair that changes
nothing stays at the generator's chance of keeping it. ``pair_cost`` prices a pair in AUC
(0.005 / 3 / 78 = 0.00002 per pair under ``cost`` alone is below the reward's noise, so
noise pairs were kept at random); a planted pair is worth several times 0.0001.

**Derivation.** The generator's greedy architecture (a pair kept when the generator keeps
it with probability above 1/2, with its likeliest function) and the ``candidates`` (5)
best sampled ones are scored on the whole validation split with inherited weights; the
best becomes the spec (``field_dims``, kept pairs with their functions, ``fm`` and
``inner`` when a pair is a product, ``mlp``), which is retrained from scratch. The ranking
is the pairs by how often the final policy keeps them (over 512 samples); ``extra`` holds
the dims, functions, the reward curve, and the teacher's and the chosen subnet's
validation AUC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autodrs.data.dataset import Batch, EncodedData
from autodrs.data.schema import Schema
from autodrs.methods.blocks.aim import dim_candidates
from autodrs.methods.blocks.common import NONE
from autodrs.methods.blocks.sif import candidate_functions
from autodrs.methods.interaction.common import (
    base_spec,
    embedded_names,
    interaction_key,
    search_config,
)
from autodrs.models.builder import LinearTerm, build_model, count_bytes, count_parameters
from autodrs.nn.embedding import FieldEmbedding
from autodrs.nn.functions import FUNCTIONS, PairFunctions
from autodrs.nn.init import linear
from autodrs.search.base import (
    Method,
    SearchContext,
    SearchError,
    StageResult,
    no_result,
    option,
    register_method,
)
from autodrs.search.estimation import BudgetExhausted, Deadline
from autodrs.spec import ArchSpec, Interaction
from autodrs.train.metrics import auc
from autodrs.train.trainer import TimeLimit, Trainer

# the multiplicative functions: ``concat`` (``w^T [a; b]``) is a first-order term of the two
# fields, which the always-kept first-order term already holds, so it is not an interaction
IAS_FUNCTIONS = ("product", "multiply", "generalised")
DEPTHS = (1, 2, 3)
WIDTHS = (64, 128, 256)
POLICY_SAMPLES = 512  # draws of the final policy that give each pair's keep rate
HIDDEN = 32
CONTROLLER_LR = 0.02
PAIR_COST = 0.0001  # reward per kept pair (AUC): a pair must pay for itself


@dataclass
class Arch:
    """One architecture of the space, as choice indices: per field its dim, per pair 0
    (none) or 1 + its function, the depth, and a width per layer (those past the depth
    unused)."""

    dims: list[int]
    pairs: list[int]
    depth: int
    widths: list[int]

    def flat(self) -> list[int]:
        return [*self.dims, *self.pairs, self.depth, *self.widths]


class IASSupernet(nn.Module):
    """The weight-sharing supernet of the module docstring. ``arch`` pins a subnet for
    evaluation (None: the full supernet); in training mode ``forward`` runs the teacher and
    a sampled student, and ``training_loss`` (the trainer's hook) is the KD objective."""

    def __init__(self, schema: Schema, spec: ArchSpec, pairs: list[tuple[int, int]],
                 functions: tuple[str, ...], dims: list[int], depths: list[int],
                 widths: list[int], kd: float, temperature: float, seed: int) -> None:
        super().__init__()
        self.spec = spec
        self.embedding = FieldEmbedding(schema, spec.copy(field_dims={}))
        self.linear = LinearTerm(schema, spec)
        width = spec.embed_dim
        self.n_fields = len(self.embedding.names)
        self.functions = PairFunctions(pairs, functions, width)
        self.function_names = functions
        self.dims, self.depths, self.widths = dims, depths, widths
        prefix = torch.tensor([[float(k < d) for k in range(width)] for d in dims])
        self.register_buffer("prefix", prefix, persistent=False)
        top = max(widths)
        # the product pairs' inner products also feed the MLP (IPNN's product layer, the
        # derived spec's ``inner``): one input per pair, zero where the pair is not a product
        self.product = functions.index("product") if "product" in functions else None
        in_dim = self.n_fields * width + (len(pairs) if self.product is not None else 0)
        self.hidden = nn.ModuleList(linear(in_dim if i == 0 else top, top)
                                    for i in range(max(depths)))
        # one read-out per depth: a depth-l subnet's last layer is read by head l, not by a
        # read-out trained on the deepest layer's outputs
        self.heads = nn.ModuleList(linear(top, 1) for _ in depths)
        self.kd, self.temperature = kd, temperature
        self.arch: Arch | None = None
        self.full = Arch([len(dims) - 1] * self.n_fields, [-1] * len(pairs),
                         len(depths) - 1, [len(widths) - 1] * max(depths))
        self.sampler = torch.Generator().manual_seed(seed)
        self._student: torch.Tensor | None = None

    def random_arch(self) -> Arch:
        def draw(n: int, size: int) -> list[int]:
            return torch.randint(0, size, (n,), generator=self.sampler).tolist()

        return Arch(draw(self.n_fields, len(self.dims)),
                    draw(self.functions.n_pairs, len(self.function_names) + 1),
                    draw(1, len(self.depths))[0], draw(max(self.depths), len(self.widths)))

    def subnet_logit(self, e: torch.Tensor, first: torch.Tensor, arch: Arch) -> torch.Tensor:
        """The logit of ``arch`` from the width-D embeddings ``e`` [B, F, D] and the first-
        order term; pair entries of -1 (the full supernet) sum every function."""
        e = e * self.prefix[torch.tensor(arch.dims)]
        terms = self.functions(e)  # [B, P, K]
        choice = torch.tensor(arch.pairs)
        if bool((choice < 0).all()):
            select = torch.ones(terms.shape[1:], dtype=terms.dtype)
        else:
            select = F.one_hot(choice.clamp(min=0), len(self.function_names) + 1)[:, 1:]
            select = select.to(terms.dtype)
        logit = first + (terms * select).sum((1, 2))
        h = e.flatten(1)
        if self.product is not None:
            h = torch.cat([h, terms[:, :, self.product] * select[:, self.product]], dim=1)
        prev = h.shape[1]
        for i in range(self.depths[arch.depth]):
            w = self.widths[arch.widths[i]]
            layer = self.hidden[i]
            h = F.relu(F.linear(h, layer.weight[:w, :prev], layer.bias[:w]))
            prev = w
        head = self.heads[arch.depth]
        return logit + F.linear(h, head.weight[:, :prev], head.bias).squeeze(1)

    def forward(self, batch: Batch) -> torch.Tensor:
        e = torch.stack(self.embedding(batch), dim=1)
        first = self.linear(batch)
        if not self.training:
            return self.subnet_logit(e, first, self.arch or self.full)
        teacher = self.subnet_logit(e, first, self.full)
        self._student = self.subnet_logit(e, first, self.random_arch())
        return teacher

    def training_loss(self, teacher: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The teacher's BCE plus the student's KD objective (module docstring)."""
        y = batch.label.to(teacher.dtype)
        student = self._student
        assert student is not None, "training_loss follows a training forward pass"
        loss = F.binary_cross_entropy_with_logits(teacher, y)
        hard = F.binary_cross_entropy_with_logits(student, y)
        if self.kd <= 0:
            return loss + hard
        t = self.temperature
        soft = torch.sigmoid(teacher.detach() / t)
        kd = F.binary_cross_entropy_with_logits(student / t, soft) * t * t
        return loss + (1 - self.kd) * hard + self.kd * kd

    def complexity(self, arch: Arch, vocab: list[int]) -> float:
        """The mean of three shares of the largest architecture's: embedding parameters,
        kept pairs, and MLP parameters (each part weighs alike, whatever its size)."""
        top = len(self.dims) - 1
        emb = (sum(v * self.dims[d] for v, d in zip(vocab, arch.dims, strict=True))
               / max(1, sum(v * self.dims[top] for v in vocab)))
        pairs = sum(c > 0 for c in arch.pairs) / max(1, len(arch.pairs))

        def mlp(dims: list[int], depth: int, widths: list[int]) -> int:
            n, prev = 0, sum(self.dims[d] for d in dims)
            for i in range(depth):
                n += (prev + 1) * widths[i]
                prev = widths[i]
            return n + prev + 1

        mine = mlp(arch.dims, self.depths[arch.depth], [self.widths[w] for w in arch.widths])
        most = mlp([top] * len(arch.dims), max(self.depths), [max(self.widths)] *
                   max(self.depths))
        return (emb + pairs + mine / most) / 3


class ArchitectureGenerator(nn.Module):
    """An LSTM that emits one decision per step (kinds: dim, pair, depth, width), each a
    softmax over its choices from the LSTM state plus a bias of its own; the embedding of
    the choice made feeds the next step."""

    def __init__(self, kinds: list[int], sizes: list[int], hidden: int = HIDDEN) -> None:
        super().__init__()
        self.kinds = kinds
        self.sizes = [sizes[k] for k in kinds]
        self.cell = nn.LSTMCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(hidden))
        self.position = nn.Parameter(0.1 * torch.randn(len(kinds), hidden))
        self.tokens = nn.ModuleList(nn.Embedding(s, hidden) for s in sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden, s) for s in sizes)
        self.bias = nn.Parameter(torch.zeros(len(kinds), max(sizes)))

    def sample(self, n: int, generator: torch.Generator | None = None, greedy: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` decision sequences [n, T] with their log-probabilities and entropies [n]."""
        h = torch.zeros(n, self.start.shape[0])
        c = torch.zeros_like(h)
        x = self.start.expand(n, -1)
        actions, log_p, entropy = [], torch.zeros(n), torch.zeros(n)
        for t, kind in enumerate(self.kinds):
            h, c = self.cell(x + self.position[t], (h, c))
            logits = self.heads[kind](h) + self.bias[t, :self.sizes[t]]
            logp = torch.log_softmax(logits, dim=-1)
            if greedy and kind == 1:
                # a pair: dropped when "none" is at least as likely as keeping it at all,
                # else its likeliest function (a plain argmax would split the kept mass
                # between the functions and drop pairs the generator mostly keeps)
                a = torch.where(logp[:, 0].exp() >= 0.5, torch.zeros_like(logp[:, 0],
                                dtype=torch.long), 1 + logp[:, 1:].argmax(-1))
            elif greedy:
                a = logp.argmax(-1)
            else:
                a = torch.multinomial(logp.exp().detach(), 1, generator=generator).squeeze(1)
            log_p = log_p + logp.gather(1, a[:, None]).squeeze(1)
            entropy = entropy - (logp.exp() * logp).sum(-1)
            actions.append(a)
            x = self.tokens[kind](a)
        return torch.stack(actions, dim=1), log_p, entropy


def parse_ints(raw: Any, key: str, default: tuple[int, ...]) -> list[int]:
    """Option ``key`` (a list or comma-separated text of integers >= 1; ``default`` when
    unset), sorted and distinct."""
    if raw is None:
        return list(default)
    try:
        values = [int(v) for v in (raw.split(",") if isinstance(raw, str) else raw)]
    except (TypeError, ValueError) as e:
        raise SearchError(f"option {key}={raw!r} is not a list of integers") from e
    if not values or any(v < 1 for v in values):
        raise SearchError(f"option {key} needs integers >= 1, got {raw!r}")
    return sorted(set(values))


class RewardRows:
    """A fixed set of validation rows with the supernet's width-D embeddings and first-order
    term computed once: neither depends on the architecture, so scoring a subnet costs
    only its interactions and MLP."""

    @torch.no_grad()
    def __init__(self, net: IASSupernet, data: EncodedData, batch_size: int = 16_384) -> None:
        net.eval()
        self.parts = []
        for i in range(0, len(data), batch_size):
            batch = data.batch(slice(i, i + batch_size))
            self.parts.append((torch.stack(net.embedding(batch), dim=1), net.linear(batch)))
        self.labels = data.label.numpy()
        self.net = net

    @torch.no_grad()
    def auc(self, arch: Arch | None) -> float:
        """Validation AUC of the supernet with ``arch`` pinned (inherited weights)."""
        arch = arch or self.net.full
        scores = [self.net.subnet_logit(e, first, arch).float().numpy()
                  for e, first in self.parts]
        return float(auc(self.labels, np.concatenate(scores)))


@register_method
class AutoIAS(Method):
    """AutoIAS: per-field dims, pairs and their functions, and the MLP, searched together
    by a REINFORCE architecture generator over a KD-trained weight-sharing supernet.

    Options: ``dims``, ``functions`` (product, multiply, generalised), ``depths`` (1,2,3),
    ``widths`` (64,128,256),
    ``search_epochs`` (the supernet's; default the run's epochs, at most 3), ``kd`` (0.5),
    ``temperature`` (1.0), ``rl_steps`` (200), ``rl_batch`` (16), ``controller_lr``
    (0.02), ``entropy`` (0.02), ``reward_rows`` (4096), ``cost`` (0.005), ``pair_cost``
    (0.0001), ``candidates`` (5).
    """

    name = "autoias"
    component = "comprehensive"
    strategies = ("rl",)
    decides = ("field_dims", "interactions", "fm", "mlp")

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, ds = ctx.dataset.schema, ctx.dataset
        # the dims are searched: an earlier stage's per-value masks, sized at its dims, go
        spec = base_spec(ctx).copy(field_dims={}, pruning={}, pair_norm=False, dag=None)
        names = embedded_names(schema, spec)
        if len(names) < 2:
            raise SearchError(f"AutoIAS needs at least two embedded fields, got {names}")
        functions = candidate_functions(ctx, IAS_FUNCTIONS)
        unknown = [f for f in functions if f not in FUNCTIONS]
        if not functions or unknown:
            raise SearchError(f"AutoIAS functions must be among {', '.join(FUNCTIONS)}; got "
                              f"{', '.join(functions) or 'none'}")
        dims = dim_candidates(ctx, spec.embed_dim)
        depths = parse_ints(ctx.options.get("depths"), "depths", DEPTHS)
        widths = parse_ints(ctx.options.get("widths"), "widths", WIDTHS)
        kd = option(ctx, "kd", 0.5)
        temperature = option(ctx, "temperature", 1.0)
        fast = ctx.fast
        rl_steps = option(ctx, "rl_steps", 10 if fast else 200, int)
        rl_batch = option(ctx, "rl_batch", 4 if fast else 16, int)
        lr = option(ctx, "controller_lr", CONTROLLER_LR)
        entropy_weight = option(ctx, "entropy", 0.02)
        reward_rows = option(ctx, "reward_rows", 4096, int)
        cost = option(ctx, "cost", 0.005)
        pair_cost = option(ctx, "pair_cost", PAIR_COST)
        candidates = option(ctx, "candidates", 5, int)
        if not 0 <= kd <= 1 or temperature <= 0:
            raise SearchError(f"AutoIAS needs kd in [0, 1] and temperature > 0; got {kd}, "
                              f"{temperature}")
        if rl_steps < 1 or rl_batch < 2 or lr <= 0 or reward_rows < 1 or candidates < 1:
            raise SearchError(f"AutoIAS needs rl_steps >= 1, rl_batch >= 2, controller_lr > 0,"
                              f" reward_rows >= 1 and candidates >= 1; got {rl_steps}, "
                              f"{rl_batch}, {lr}, {reward_rows}, {candidates}")
        if cost < 0 or entropy_weight < 0 or pair_cost < 0:
            raise SearchError(f"AutoIAS needs cost >= 0, pair_cost >= 0 and entropy >= 0; "
                              f"got {cost}, {pair_cost}, {entropy_weight}")
        pairs = [(names[i], names[j]) for i in range(len(names))
                 for j in range(i + 1, len(names))]
        index = {n: k for k, n in enumerate(names)}
        config = search_config(ctx, default_epochs=3)
        torch.manual_seed(ctx.seed)
        net = IASSupernet(schema, spec, [(index[a], index[b]) for a, b in pairs], functions,
                          dims, depths, widths, kd, temperature, ctx.seed)
        try:
            fit = Trainer(config, [Deadline(ctx), TimeLimit(ctx.remaining)]).fit(
                net, ds.train, ds.valid)
        except BudgetExhausted:
            return no_result(self.name, strategy, ctx.spec,
                             "the budget ran out while the supernet trained",
                             time.perf_counter() - t0)
        supernet_seconds = time.perf_counter() - t0
        vocab = [schema.field(n).vocab_size if n in schema.field_names
                 and schema.field(n).kind == "categorical" else 0 for n in names]
        # crosses embed through hashed buckets
        vocab = [v if v or n in schema.field_names else spec.cross_buckets
                 for v, n in zip(vocab, names, strict=True)]
        # the generator
        n_f, n_p, n_l = len(names), len(pairs), max(depths)
        kinds = [0] * n_f + [1] * n_p + [2] + [3] * n_l
        torch.manual_seed(ctx.seed)
        gen = ArchitectureGenerator(kinds, [len(dims), len(functions) + 1, len(depths),
                                            len(widths)])
        opt = torch.optim.Adam(gen.parameters(), lr=lr)
        draws = torch.Generator().manual_seed(ctx.seed)
        rows = torch.randperm(len(ds.valid), generator=draws)[:reward_rows].sort().values
        reward_set = RewardRows(net, ds.valid.subset(rows))

        def to_arch(flat: list[int]) -> Arch:
            return Arch(flat[:n_f], flat[n_f:n_f + n_p], flat[n_f + n_p],
                        flat[n_f + n_p + 1:])

        def penalty(arch: Arch) -> float:
            return (cost * net.complexity(arch, vocab)
                    + pair_cost * sum(c > 0 for c in arch.pairs))

        def reward(arch: Arch) -> tuple[float, float]:
            value = reward_set.auc(arch)
            return value - penalty(arch), value

        seen: dict[tuple[int, ...], tuple[float, float]] = {}
        curve: list[dict[str, float]] = []
        stopped = False
        for step in range(rl_steps):
            if ctx.out_of_budget():
                stopped = True
                break
            actions, log_p, ent = gen.sample(rl_batch, draws)
            results = []
            for row in actions.tolist():
                key = tuple(row)
                if key not in seen:
                    seen[key] = reward(to_arch(row))
                results.append(seen[key][0])
            r = torch.tensor(results)
            advantage = (r - r.mean()) / (r.std() + 1e-8)
            loss = -(advantage * log_p).mean() - entropy_weight * ent.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append({"step": step + 1, "mean_reward": round(float(r.mean()), 6),
                          "best_reward": round(float(r.max()), 6)})
        with torch.no_grad():
            greedy = tuple(gen.sample(1, greedy=True)[0][0].tolist())
            policy = gen.sample(POLICY_SAMPLES, torch.Generator().manual_seed(ctx.seed))[0]
        shortlist = [greedy] + [k for k, _ in sorted(seen.items(), key=lambda kv: -kv[1][0])
                                if k != greedy][:candidates]
        scored = []
        whole = RewardRows(net, ds.valid)
        for key in shortlist:
            arch = to_arch(list(key))
            valid = whole.auc(arch)
            scored.append((valid - penalty(arch), valid, key))
        _, chosen_auc, chosen = max(scored, key=lambda s: s[0])
        arch = to_arch(list(chosen))
        teacher_auc = whole.auc(None)
        memorised = [i for i in ctx.spec.interactions or [] if i.function == "memorise"]
        space = {"dims": dims, "functions": list(functions), "depths": depths,
                 "widths": widths}
        out = arch_spec(spec, schema, space, arch, memorised)
        mlp = list(out.mlp)
        chosen_functions = {interaction_key(p): (NONE if c == 0 else functions[c - 1])
                            for p, c in zip(pairs, arch.pairs, strict=True)}
        kept = [i for i in out.interactions or [] if i.function != "memorise"]
        seconds = time.perf_counter() - t0
        keep_rate = (policy[:, n_f:n_f + n_p] > 0).float().mean(0).tolist()
        scores = {p: float(k) for p, k in zip(pairs, keep_rate, strict=True)}
        order = sorted(pairs, key=lambda p: (chosen_functions[interaction_key(p)] == NONE,
                                             -scores[p], p))
        out.record(self.name, strategy, list(self.decides), seconds,
                   component=self.component, kept=len(kept), mlp=mlp)
        chosen_dims = {n: dims[d] for n, d in zip(names, arch.dims, strict=True)}
        return StageResult(
            method=self.name, strategy=strategy, spec=out,
            ranking=[list(p) for p in order],
            scores={interaction_key(p): round(scores[p], 6) for p in order},
            dims={n: float(d) for n, d in chosen_dims.items()},
            bytes=count_bytes(build_model(schema, out))["embedding"], seconds=seconds,
            extra={"functions": {interaction_key(p): chosen_functions[interaction_key(p)]
                                 for p in order},
                   "mlp": mlp, "supernet_valid_auc": round(teacher_auc, 6),
                   "chosen_valid_auc": round(chosen_auc, 6),
                   "supernet_epochs": fit.best_epoch, "supernet_seconds":
                   round(supernet_seconds, 3), "rl_steps": len(curve),
                   "architectures_scored": len(seen), "reward_curve": curve[::max(
                       1, len(curve) // 20)], "kd": kd, "temperature": temperature,
                   "cost": cost, "pair_cost": pair_cost, "stopped_by_budget": stopped, "space": space,
                   "params": count_parameters(build_model(schema, out))["total"]})


def arch_spec(base: ArchSpec, schema: Schema, space: dict[str, Any], arch: Arch,
              memorised: list[Interaction] | tuple[Interaction, ...] = ()) -> ArchSpec:
    """The spec of ``arch`` (choice indices into ``space``: ``dims``, ``functions``,
    ``depths``, ``widths``) over ``base``'s embedded fields, every pair in field order."""
    names = embedded_names(schema, base)
    pairs = [(a, b) for k, a in enumerate(names) for b in names[k + 1:]]
    dims, functions = space["dims"], space["functions"]
    kept = [Interaction([a, b], function=functions[c - 1])
            for (a, b), c in zip(pairs, arch.pairs, strict=True) if c > 0]
    return base.copy(
        field_dims={n: dims[d] for n, d in zip(names, arch.dims, strict=True)
                    if dims[d] != base.embed_dim},
        interactions=[*memorised, *kept],
        mlp=[space["widths"][w] for w in arch.widths[:space["depths"][arch.depth]]],
        fm=any(i.function == "product" for i in kept),
        inner=any(i.function == "product" for i in kept)).validate(schema)


def random_arch_spec(base: ArchSpec, schema: Schema, space: dict[str, Any],
                     seed: int) -> ArchSpec:
    """A spec drawn uniformly from ``space`` (a random architecture of the same space, the
    bar a search must beat)."""
    rng = np.random.default_rng(seed)
    names = embedded_names(schema, base)
    n_pairs = len(names) * (len(names) - 1) // 2
    depth = int(rng.integers(len(space["depths"])))
    arch = Arch(rng.integers(len(space["dims"]), size=len(names)).tolist(),
                rng.integers(len(space["functions"]) + 1, size=n_pairs).tolist(), depth,
                rng.integers(len(space["widths"]), size=max(space["depths"])).tolist())
    return arch_spec(base, schema, space, arch)
