"""CORE-3D's model steps of retrieval (parse, verify, orientation, decide) through an
OpenAI-compatible chat-completions endpoint; ``retriever`` explains the steps and the fallback.

    retriever.py   LlmRetriever: runs the steps, falls back to the rule-based QueryEngine
    schemas.py     the JSON schemas of the replies, checked with jsonschema (StepFailed)
    parse.py       the facing clause, and the ParsedQuery built from a parse reply
    drawing.py     the images the VLM sees: framed best views, top-down plans, data URLs
    prompts.py     the system prompts
"""
from .drawing import data_url, framed_view, plan_view
from .parse import parsed_from_reply, phrase_query, split_facing
from .retriever import STEPS, LlmRetriever
from .schemas import DECIDE_SCHEMA, ORIENTATION_SCHEMA, PARSE_SCHEMA, VERIFY_SCHEMA, StepFailed, check_reply, schema_errors

__all__ = [
    "DECIDE_SCHEMA",
    "LlmRetriever",
    "ORIENTATION_SCHEMA",
    "PARSE_SCHEMA",
    "STEPS",
    "StepFailed",
    "VERIFY_SCHEMA",
    "check_reply",
    "data_url",
    "framed_view",
    "parsed_from_reply",
    "phrase_query",
    "plan_view",
    "schema_errors",
    "split_facing",
]
