"""BP-FIS (Chen, Ren, Wang, de Rijke; SIGIR 2019, "Bayesian Personalized Feature Interaction
Selection for Factorization Machines"): every user keeps pairs of its own.

A user u is a value of the ``user`` field (a user id, or a user group). Its selection
variables carry a hereditary spike-and-slab prior: a field is on with ``s_ui ~ Bern(p_f)``,
a pair with ``s_uij ~ Bern(p_2 | p_1 | p_0)`` when both, one or neither of its fields are
on. The slab is the pair's interaction value ``y_ij ~ N(<e_i, e_j>, exp(a^T (e_i * e_j) +
b))`` (the official ``PFIS``), with a N(0, 1) prior. The posterior is mean-field,
``q(s_ui) = Bern(pi_ui)``, ``q(s_uij) = Bern(rho_uij)``, one logit each, and the FM term of
an example of user u is ``sum_ij s_uij y_ij`` with ``s_uij`` drawn from the relaxed
(binary Concrete) Bernoulli of ``rho_uij`` at temperature ``tau``, so the ELBO

    E_q[log p(y | s, w)] - beta * KL(slab) - alpha * KL(q(s) || hereditary prior)

is differentiable in every logit. The weights take the trainer's Adam steps and the
selection logits Adam steps (``select_lr``) on the gradients of the same batch. User u keeps
pair ij when ``rho_uij > 0.5``; the delivered FM models each pair for the users that keep it
(``Interaction.users``, ``ArchSpec.user_field``), every user's pair without a list.
Without a user field (none given, none of ``USER_FIELDS`` in the data) every example is one
user: Bayesian feature interaction selection without personalisation. Departures:
selection variables per (user, field) rather than per (user, feature value),
the two KL terms weighted by constants (the official code weighs its selection entropy by a
constant too) and no pre-training pass.
"""

from __future__ import annotations

import time
from dataclasses import replace
from itertools import combinations
from typing import Any

import torch
from torch import nn

from autodrs.data.dataset import Batch
from autodrs.data.schema import FIRST_ID
from autodrs.methods.interaction.common import (
    InteractionOutput,
    InteractionSupernet,
    OptimizerStep,
    candidate_interactions,
    epochs_for_steps,
    interaction_key,
    interaction_result,
    option,
    search_config,
    start_search,
    train_supernet,
)
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.spec import Interaction

USER_FIELDS = ("user_id", "user", "user_group")  # looked for when ``user`` is not given
# hereditary prior: a field on; a pair on with both / one / neither of its fields on
PRIOR_FIELD, PRIOR_BOTH, PRIOR_ONE, PRIOR_NONE = 0.5, 0.2, 0.05, 0.01
SEARCH_EPOCHS = 4
SEARCH_STEPS = 600
SHOWN_USERS = 20  # users whose kept pairs the stage lists (the most frequent)


def bernoulli_kl(q: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """KL(Bern(q) || Bern(p)), elementwise."""
    eps = 1e-6
    q = q.clamp(eps, 1 - eps)
    return q * torch.log(q / p) + (1 - q) * torch.log((1 - q) / (1 - p))


def relaxed_bernoulli(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """A binary Concrete sample: ``sigmoid((logit + log u - log(1 - u)) / tau)``."""
    u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
    return torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / tau)


class PersonalSelection(nn.Module):
    """Per-user selection logits over fields and pairs and the slab's variance net."""

    def __init__(self, n_fields: int, dim: int, pairs: list[tuple[int, ...]], n_users: int,
                 column: int | None, tau: float) -> None:
        super().__init__()
        self.register_buffer("left", torch.tensor([p[0] for p in pairs]), persistent=False)
        self.register_buffer("right", torch.tensor([p[1] for p in pairs]), persistent=False)
        self.field_logit = nn.Parameter(torch.zeros(n_users, n_fields))
        self.pair_logit = nn.Parameter(torch.zeros(n_users, len(pairs)))
        self.log_var = nn.Linear(dim, 1)
        nn.init.zeros_(self.log_var.weight)
        nn.init.constant_(self.log_var.bias, -4.0)  # a narrow slab at first
        self.column = column
        self.tau = tau
        self.slab_kl = torch.zeros(())

    def forward(self, stacked: torch.Tensor, batch: Batch) -> InteractionOutput:
        users = (batch.cat[:, self.column] if self.column is not None
                 else torch.zeros(len(batch), dtype=torch.long, device=stacked.device))
        hadamard = stacked.index_select(1, self.left) * stacked.index_select(1, self.right)
        mean = hadamard.sum(-1)
        if not self.training:
            return InteractionOutput(logit=(torch.sigmoid(self.pair_logit[users]) * mean).sum(1))
        log_var = self.log_var(hadamard).squeeze(-1)
        value = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        self.slab_kl = 0.5 * (log_var.exp() + mean.pow(2) - 1 - log_var).sum(1).mean()
        chosen = relaxed_bernoulli(self.pair_logit[users], self.tau)
        return InteractionOutput(logit=(chosen * value).sum(1))

    def selection_kl(self, users: torch.Tensor) -> torch.Tensor:
        """KL of the selection posterior of ``users`` (ids) to the hereditary prior, summed
        over fields and pairs, averaged over the users."""
        pi = torch.sigmoid(self.field_logit[users])
        rho = torch.sigmoid(self.pair_logit[users])
        a, b = pi[:, self.left], pi[:, self.right]
        pair = (a * b * bernoulli_kl(rho, PRIOR_BOTH)
                + (a * (1 - b) + b * (1 - a)) * bernoulli_kl(rho, PRIOR_ONE)
                + (1 - a) * (1 - b) * bernoulli_kl(rho, PRIOR_NONE))
        return (bernoulli_kl(pi, PRIOR_FIELD).sum(1) + pair.sum(1)).mean()


class BPFISSupernet(InteractionSupernet):
    def __init__(self, *args: Any, users: torch.Tensor, alpha: float, beta: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("users", users, persistent=False)
        self.alpha = alpha
        self.beta = beta

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.interaction.field_logit, self.interaction.pair_logit]

    def regularization(self) -> torch.Tensor:
        module: PersonalSelection = self.interaction
        return (self.beta * module.slab_kl
                + self.alpha * module.selection_kl(self.users))

    def derive(self) -> dict[str, Any]:
        return {"rho": torch.sigmoid(self.interaction.pair_logit.detach())[self.users].tolist()}


def user_field(ctx: SearchContext) -> str | None:
    """The ``user`` option, else the first of ``USER_FIELDS`` the data has (None: none)."""
    schema = ctx.dataset.schema
    name = ctx.options.get("user")
    if name is None:
        name = next((n for n in USER_FIELDS if n in schema.categorical), None)
        if name is None:
            return None
    if name not in schema.categorical or schema.field(name).vocab is None:
        raise SearchError(f"bpfis user field {name!r} must be a categorical field with a "
                          "vocabulary")
    return str(name)


def jaccard_distance(a: set[str], b: set[str]) -> float:
    return 1.0 - len(a & b) / len(a | b) if a | b else 0.0


@register_method
class BPFIS(Method):
    """BP-FIS: per-user spike-and-slab pair selection, relaxed-Bernoulli variational posterior.

    Options: ``user`` (the field whose values get their own pairs; default the first of
    user_id, user, user_group), ``backbone`` (fm, the paper's, or deepfm), ``tau`` (0.5),
    ``alpha`` (selection KL weight, 1e-3), ``beta`` (slab KL weight, 1e-4), ``select_lr``
    (0.03; the official ``selection_lr`` is 0.01 over far longer runs), ``max_users``
    (20,000), ``search_epochs`` (default 4, more when they hold fewer than 600 steps).
    """

    name = "bpfis"
    component = "interaction"
    strategies = ("gradient",)

    def search(self, ctx: SearchContext) -> StageResult:
        ctx = replace(ctx, options={"backbone": "fm", **ctx.options})
        strategy, t0, spec, names = start_search(self, ctx)
        field = user_field(ctx)
        schema = ctx.dataset.schema
        vocab = list(schema.field(field).vocab or []) if field is not None else ["*"]
        if len(vocab) > option(ctx, "max_users", 20_000, int):
            raise SearchError(f"bpfis: {field!r} has {len(vocab)} values, more than max_users")
        tau, alpha = option(ctx, "tau", 0.5), option(ctx, "alpha", 1e-3)
        beta, select_lr = option(ctx, "beta", 1e-4), option(ctx, "select_lr", 0.03)
        if tau <= 0 or alpha < 0 or beta < 0 or select_lr <= 0:
            raise SearchError("bpfis needs tau > 0, alpha >= 0, beta >= 0 and select_lr > 0")
        config = search_config(ctx, default_epochs=epochs_for_steps(
            len(ctx.dataset.train), ctx.train.batch_size, SEARCH_EPOCHS, SEARCH_STEPS))
        pairs = candidate_interactions(names, 2)
        torch.manual_seed(ctx.seed)
        first, size = (FIRST_ID, schema.field(field).vocab_size) if field is not None else (0, 1)
        module = PersonalSelection(len(names), spec.embed_dim, pairs, size,
                                   schema.categorical.index(field) if field is not None
                                   else None, tau)
        user_ids = torch.arange(first, size)
        supernet = BPFISSupernet(schema, spec, module, users=user_ids, alpha=alpha, beta=beta)
        selector = torch.optim.Adam(supernet.arch_parameters(), lr=select_lr)
        trainer = train_supernet(ctx, supernet, [OptimizerStep(selector)], config)
        with torch.no_grad():
            rho = torch.sigmoid(module.pair_logit[user_ids])  # [U, P]
        keys = [(names[i], names[j]) for i, j in pairs]
        scores = {k: float(rho[:, p].mean()) for p, k in enumerate(keys)}
        kept_by = {k: [vocab[u] for u in torch.nonzero(rho[:, p] > 0.5).flatten().tolist()]
                   for p, k in enumerate(keys)}
        order = sorted(keys, key=lambda k: (-scores[k], k))
        kept = [Interaction(fields=list(k), users=None if len(kept_by[k]) == len(vocab)
                            else kept_by[k]) for k in order if kept_by[k]]
        out = spec.copy(user_field=field)
        return interaction_result(
            self.name, strategy, out, scores, kept, time.perf_counter() - t0, ranking=order,
            extra={"user_field": field, "search_steps": trainer.step,
                   **personalisation(vocab, keys, kept_by)})


def personalisation(vocab: list[str], keys: list[tuple[str, str]],
                    kept_by: dict[tuple[str, str], list[str]]) -> dict[str, Any]:
    """How personal the selection is: pairs kept per user, pairs every user keeps, pairs
    some but not all keep, the mean Jaccard distance between users' kept sets (over the
    ``SHOWN_USERS`` most frequent users, whose kept pairs are listed)."""
    per_user: dict[str, set[str]] = {v: set() for v in vocab}
    for k in keys:
        for v in kept_by[k]:
            per_user[v].add(interaction_key(k))
    shown = vocab[:SHOWN_USERS]  # the vocabulary is ordered by train frequency
    distances = [jaccard_distance(per_user[a], per_user[b]) for a, b in combinations(shown, 2)]
    sizes = [len(s) for s in per_user.values()]
    return {"personal": {
        "users": len(vocab),
        "pairs_per_user": round(sum(sizes) / max(1, len(sizes)), 3),
        "shared_pairs": sum(len(kept_by[k]) == len(vocab) for k in keys),
        "personal_pairs": sum(0 < len(kept_by[k]) < len(vocab) for k in keys),
        "mean_jaccard_distance": round(sum(distances) / len(distances), 4) if distances else 0.0,
        "by_user": {v: sorted(per_user[v]) for v in shown},
    }}
