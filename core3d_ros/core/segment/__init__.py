"""Class-agnostic 2-D mask generators behind one Protocol (base.py), chosen by name from config.

Importing the package registers the built-in back-ends; the model back-ends import their heavy
packages (torch, segment_anything, Semantic-SAM) only when built.
"""
from . import geometric, oracle, sam, semantic_sam  # noqa: F401  (each registers its factory)
