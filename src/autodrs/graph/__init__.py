"""Graph recommenders: a leave-last-out split built from any log (``data``), LightGCN and a
SANE-style searched model on the user-item graph (``models``, ``train``), SR-GNN and an
AutoGSR-style searched model on each user's session graph (``session``), and the
``autodrs graph`` command (``command``). Every model is scored by full-ranking recall@K and
NDCG@K on the same split."""

from autodrs.graph.data import GraphData, from_log, movielens_graph
from autodrs.graph.models import COMBINES, OPS, GraphSpec, lightgcn
from autodrs.graph.session import (
    READOUTS,
    SESSION_OPS,
    SessionConfig,
    SessionSpec,
    fit_session,
    search_session,
    session_task,
    srgnn,
)
from autodrs.graph.train import GraphTrainConfig, fit_graph, popularity, search_graph

__all__ = ["COMBINES", "OPS", "READOUTS", "SESSION_OPS", "GraphData", "GraphSpec",
           "GraphTrainConfig", "SessionConfig", "SessionSpec", "fit_graph", "fit_session",
           "from_log", "lightgcn", "movielens_graph", "popularity", "search_graph",
           "search_session", "session_task", "srgnn"]
