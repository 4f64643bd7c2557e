"""The query answerers, chosen by name, and the one function that builds one.

    answerer = make_answerer(cfg.retrieval, encoder)     # "llm" when retrieval.llm.enabled, else "rules"
    answer = answerer.answer(snapshot, "the mug on the table", top_k=5)

``rules`` is the rule-based QueryEngine; ``llm`` wraps one in the model steps (LlmRetriever),
which fall back to its answer when a step fails. The ``core3d query`` command and the mapping
node both build theirs here.
"""
from __future__ import annotations

from typing import Any, Callable

from ...config import RetrievalConfig
from ..registry import Registry
from .engine import QueryEngine

AnswererFactory = Callable[[RetrievalConfig, Any], Any]

ANSWERERS: Registry[AnswererFactory] = Registry("answerer", "retrieval.llm.enabled")
register_answerer = ANSWERERS.register


@register_answerer("rules")
def _rules(cfg: RetrievalConfig, encoder: Any) -> QueryEngine:
    return QueryEngine(cfg, encoder=encoder)


@register_answerer("llm")
def _llm(cfg: RetrievalConfig, encoder: Any) -> Any:
    from .llm import LlmRetriever  # imported only when the model steps are on

    return LlmRetriever(QueryEngine(cfg, encoder=encoder), cfg.llm)


def answerer_name(cfg: RetrievalConfig) -> str:
    """The answerer the configuration asks for: ``llm`` when retrieval.llm.enabled, else ``rules``."""
    return "llm" if cfg.llm.enabled else "rules"


def make_answerer(cfg: RetrievalConfig, encoder: Any = None, name: str | None = None) -> Any:
    """Build the answerer ``name`` (default: the one ``cfg`` asks for) over ``encoder`` (None:
    queries rank by colour and geometry). A bad model-step setting raises ConfigError."""
    return ANSWERERS.create(name or answerer_name(cfg), cfg, encoder)
