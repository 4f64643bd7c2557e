"""Query retrieval: rule-based parsing, colour and spatial-relation scoring, ranking.

    engine = QueryEngine(cfg.retrieval, encoder)          # encoder: None or .encode_text/.semantic
    answer = engine.answer(snapshot, "the mug on the table", top_k=5, viewpoint=pose4x4)
    answer.results[0].object_id, answer.semantic, answer.message

Bad queries raise QueryError (a ValueError).
"""
from .engine import QueryAnswer, QueryEngine, QueryHit, QueryStage, SnapshotIndex
from .parser import RELATIONS, SUPERLATIVES, ParsedQuery, Phrase, QueryError, RelationClause, parse_query

__all__ = [
    "QueryAnswer",
    "QueryEngine",
    "QueryHit",
    "QueryStage",
    "SnapshotIndex",
    "ParsedQuery",
    "Phrase",
    "QueryError",
    "RelationClause",
    "RELATIONS",
    "SUPERLATIVES",
    "parse_query",
]
