"""AutoDis (Guo, Chen, Tang, Li, He, et al.; KDD 2021, arXiv 2012.08986) for numerical fields,
compared with normalised-linear and equal-frequency bucketising.

AutoDis embeds a (standardised) scalar x with H meta-embeddings ME: ``h = LeakyReLU(w x)``,
``x~ = W h + alpha h``, ``p = softmax(x~ / tau)``, ``e = sum_h p_h ME_h`` (a soft, learned
discretisation; ``nn.embedding.AutoDisEmbedding``, which starts it as a soft version of the
field's equal-frequency buckets and keeps tau in the parameters' scale). ``linear`` embeds
``x v`` (one vector scaled by the value: monotone in x), ``bucket`` looks up the value's
equal-frequency bucket (16 train quantiles: a hard, fixed discretisation). The method trains
the spec once with each encoder on every numerical field it uses and keeps the encoder with
the best validation AUC; the test split is never looked at.
"""

from __future__ import annotations

import time
from dataclasses import replace

from autodrs.experiment import fit_spec
from autodrs.methods.embedding.common import dims_result, search_epochs
from autodrs.search.base import Method, SearchContext, SearchError, StageResult, register_method
from autodrs.spec import NUMERICAL_ENCODERS

ORDER = ("autodis", "linear", "bucket")  # ties go to the first
TRIED = ("linear", "bucket", "autodis")  # tried in this order: the cheap, known ones first


@register_method
class AutoDis(Method):
    """``--methods autodis``: options ``encoders`` (compared, default linear,bucket,autodis)
    and ``search_epochs`` (per candidate, default the training epochs)."""

    name = "autodis"
    retrains_its_choice = True
    component = "embedding"
    strategies = ("grid",)

    def search(self, ctx: SearchContext) -> StageResult:
        strategy = self.resolve_strategy(ctx)
        t0 = time.perf_counter()
        schema, spec = ctx.dataset.schema, ctx.spec
        fields = [n for n in spec.used_fields(schema) if schema.field(n).kind == "numerical"]
        if not fields:
            raise SearchError("autodis needs a numerical field; the spec uses none")
        raw = ctx.options.get("encoders", ",".join(TRIED))
        encoders = [e.strip() for e in (raw.split(",") if isinstance(raw, str) else raw)]
        bad = [e for e in encoders if e not in NUMERICAL_ENCODERS]
        if bad or not encoders:
            raise SearchError(f"unknown numerical encoder(s) {bad}; choose from "
                              f"{', '.join(NUMERICAL_ENCODERS)}")
        epochs = search_epochs(ctx)
        config = replace(ctx.train, epochs=epochs, progress=False, checkpoint=None)
        results: dict[str, dict[str, float]] = {}
        longest = 0.0
        for encoder in encoders:
            left = ctx.remaining()
            if results and left is not None and left < longest:
                break  # the time left cannot pay for another retrain
            candidate = spec.copy(numerical={**spec.numerical, **dict.fromkeys(fields, encoder)})
            if all(spec.numerical.get(f, "linear") == encoder for f in fields):
                candidate = spec  # the spec as it is: a fit the run may already have done
            outcome = fit_spec(ctx.dataset, candidate, config)
            longest = max(longest, outcome.seconds)
            results[encoder] = {"valid_auc": round(outcome.metrics["valid"]["auc"], 6),
                                "valid_logloss": round(outcome.metrics["valid"]["logloss"], 6),
                                "embedding_params": outcome.params["embedding"]}
            if ctx.out_of_budget():
                break
        best = max(results, key=lambda e: (results[e]["valid_auc"],
                                           -ORDER.index(e) if e in ORDER else 0))
        out = spec.copy(numerical={**spec.numerical, **dict.fromkeys(fields, best)})
        return dims_result(self.name, strategy, ctx, out, {f: spec.dim_of(f) for f in fields},
                           time.perf_counter() - t0,
                           extra={"encoder": best, "encoders": results, "fields": fields})
