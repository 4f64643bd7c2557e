"""Rule-based parser for object queries ("the red mug on the table", "the largest chair").

Grammar (informal), applied to lower-cased, NFKC-normalised words with punctuation removed:

    query   := [command] phrase (relation anchor)* [position]
    command := find | locate | show me | where is | go to | bring me | ... (stripped)
    phrase  := words; colour words and superlatives become attributes, the rest is the noun
    anchor  := phrase; for "between", "X and Y" gives two anchors

Determiners ("the", "a", "some", "my", ...) and fillers before a relation ("that is", "located",
"sitting", ...) are dropped. Generic nouns ("object", "thing", "something", "item", "one")
mean any object: the noun becomes "". Size adjectives count as superlatives ("the big chair"
means the largest chair); "on the left" / "on the right" at the end mean leftmost / rightmost.
All relations attach to the target (a flat list, no nesting).

Relations (canonical names): near, far_from, on, above, under, in, left_of, right_of,
in_front_of, behind, between. Attributes: colour names (see colors.py) and superlatives
largest, smallest, tallest, shortest, highest, lowest, closest, farthest, leftmost, rightmost.
An anchor that names the viewer ("me", "the robot", "the camera") turns the relation into an
attribute: near me -> closest, far from me -> farthest, left of me -> leftmost,
right of me -> rightmost, in front of me -> closest.

Any str input gives either a ParsedQuery or a QueryError; nothing else is raised.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from .colors import NOUN_COLORS, WORD_TO_COLOR
from .location import Location, extract_location


class QueryError(ValueError):
    """The query text cannot be understood; the message says why."""


RELATIONS: tuple[str, ...] = (
    "near",
    "far_from",
    "on",
    "above",
    "under",
    "in",
    "left_of",
    "right_of",
    "in_front_of",
    "behind",
    "between",
)

SUPERLATIVES: tuple[str, ...] = (
    "largest",
    "smallest",
    "tallest",
    "shortest",
    "highest",
    "lowest",
    "closest",
    "farthest",
    "leftmost",
    "rightmost",
)

_SUPERLATIVE_WORDS: dict[str, str] = {
    "largest": "largest", "biggest": "largest", "big": "largest", "large": "largest",
    "huge": "largest", "giant": "largest", "greatest": "largest",
    "smallest": "smallest", "tiniest": "smallest", "littlest": "smallest", "small": "smallest",
    "little": "smallest", "tiny": "smallest",
    "tallest": "tallest", "tall": "tallest",
    "shortest": "shortest",
    "highest": "highest", "uppermost": "highest",
    "lowest": "lowest", "bottommost": "lowest",
    "closest": "closest", "nearest": "closest",
    "farthest": "farthest", "furthest": "farthest", "remotest": "farthest",
    "leftmost": "leftmost", "left": "leftmost", "topmost": "highest",
    "rightmost": "rightmost", "right": "rightmost",
}

# relation phrases, matched longest first (after determiners are removed)
_RELATION_PATTERNS: list[tuple[tuple[str, ...], str]] = sorted(
    [
        (("to", "left", "of"), "left_of"), (("on", "left", "of"), "left_of"),
        (("at", "left", "of"), "left_of"), (("left", "of"), "left_of"),
        (("to", "right", "of"), "right_of"), (("on", "right", "of"), "right_of"),
        (("at", "right", "of"), "right_of"), (("right", "of"), "right_of"),
        (("in", "front", "of"), "in_front_of"), (("front", "of"), "in_front_of"),
        (("in", "back", "of"), "behind"), (("behind",), "behind"),
        (("on", "top", "of"), "on"), (("on", "top"), "on"), (("on",), "on"), (("onto",), "on"),
        (("upon",), "on"), (("atop",), "on"),
        (("above",), "above"), (("over",), "above"),
        (("under",), "under"), (("underneath",), "under"), (("below",), "under"),
        (("beneath",), "under"),
        (("inside", "of"), "in"), (("inside",), "in"), (("in",), "in"), (("within",), "in"),
        (("into",), "in"),
        (("next", "to"), "near"), (("close", "to"), "near"), (("closest", "to"), "near"),
        (("nearest", "to"), "near"), (("near", "to"), "near"), (("near",), "near"),
        (("beside",), "near"), (("besides",), "near"), (("by",), "near"),
        (("adjacent", "to"), "near"), (("nearby",), "near"), (("close", "by"), "near"),
        (("far", "from"), "far_from"), (("away", "from"), "far_from"),
        (("farthest", "from"), "far_from"), (("furthest", "from"), "far_from"),
        (("in", "between"), "between"), (("between",), "between"),
    ],
    key=lambda p: -len(p[0]),
)

_DETERMINERS = frozenset(
    "the a an some any this that these those my your our his her its their".split()
)
# fillers that may sit between the target phrase and a relation ("the mug that is on ...")
_FILLERS = frozenset(
    "that which who is are was were be being located placed sitting sits standing stands lying "
    "lies resting rests situated kept stored positioned put hanging hangs mounted just directly "
    "right immediately somewhere".split()
)
_GENERIC_NOUNS = frozenset(
    "object objects thing things something anything item items stuff one ones entity entities "
    "instance".split()
)
_PRONOUNS = frozenset("me us you i myself ourselves yourself here".split())
_VIEWER_WORDS = _PRONOUNS | frozenset("robot camera viewer sensor".split())
_COLOR_MODIFIERS = frozenset("light dark bright pale deep colored coloured".split())
_CONJUNCTIONS = frozenset("and or with of".split())
_COMMANDS: list[tuple[str, ...]] = sorted(
    [
        tuple(c.split())
        for c in [
            "find", "locate", "show", "show me", "where is", "where are", "wheres", "go to",
            "navigate to", "move to", "drive to", "head to", "take me to", "bring me", "bring",
            "fetch", "get", "get me", "grab", "pick up", "look for", "search for", "point to",
            "point at", "highlight", "give me", "i want", "i need", "i am looking for",
            "i'm looking for", "im looking for", "can you", "could you", "would you", "please",
            "help me find", "is there", "are there", "there is", "what is", "which is",
            "which", "what", "select", "return", "list", "query", "hey", "ok", "okay",
        ]
    ],
    key=lambda c: -len(c),
)
_CONTRACTIONS = {"where's": ["where", "is"], "what's": ["what", "is"], "that's": ["that", "is"],
                 "it's": ["it", "is"], "i'm": ["i", "am"], "there's": ["there", "is"]}

_TOKEN_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_LETTER_WORD_RE = re.compile(r"[^\W\d_]{2,}")
_ALLOWED_CONTROL = frozenset("\t\n\r\v\f")


@dataclass(frozen=True)
class Phrase:
    """One noun phrase: the noun ("" = any object) and its attributes."""

    text: str  # the phrase's words as understood, e.g. "largest red object"
    noun: str  # e.g. "mug"; "" when the phrase names no particular kind of object
    attributes: tuple[str, ...] = ()  # canonical colours and superlatives, in query order
    viewer: bool = False  # the phrase names the robot / camera / speaker

    @property
    def colors(self) -> tuple[str, ...]:
        return tuple(a for a in self.attributes if a in WORD_TO_COLOR)

    @property
    def superlatives(self) -> tuple[str, ...]:
        return tuple(a for a in self.attributes if a in SUPERLATIVES)

    def prompt_text(self) -> str:
        """Words for a text encoder: colours and the noun ("red mug"); "" without a noun."""
        if not self.noun:
            return ""
        return " ".join([*self.colors, self.noun])


@dataclass(frozen=True)
class RelationClause:
    """A relation with its anchor phrase(s): one anchor, or two for "between"."""

    relation: str
    anchors: tuple[Phrase, ...]
    # near / far_from said as a superlative ("the chair closest to the table", "the lamp farthest
    # from the bed"): the target is the candidate nearest to (farthest from) the anchor, however far
    extreme: bool = False


@dataclass
class ParsedQuery:
    text: str  # the query as received
    target: str  # noun phrase of the object sought, "" = any object
    attributes: list[str] = field(default_factory=list)  # colours and superlatives of the target
    # (relation, anchor phrase text); "between X and Y" gives two entries ("between", X), ("between", Y)
    relations: list[tuple[str, str]] = field(default_factory=list)
    target_phrase: Phrase = field(default_factory=lambda: Phrase("", ""))
    clauses: list[RelationClause] = field(default_factory=list)  # relations grouped with anchors
    location: Location | None = None  # floor / room constraint ("in the kitchen"), see location.py

    @property
    def relation_names(self) -> list[str]:
        return [r for r, _ in self.relations]

    @property
    def anchor_texts(self) -> list[str]:
        return [a for _, a in self.relations]

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "target": self.target,
            "attributes": list(self.attributes),
            "relations": [r for r, _ in self.relations],
            "anchors": [a for _, a in self.relations],
            "location": self.location.to_dict() if self.location is not None else None,
        }


# ----------------------------------------------------------------------------- tokenising


def _check_characters(text: str) -> str:
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in _ALLOWED_CONTROL:
            raise QueryError(f"query contains a control character (U+{ord(ch):04X})")
        if cat == "Cs":
            raise QueryError(f"query contains an unpaired surrogate (U+{ord(ch):04X})")
    # format characters (zero-width joiners, BOM, direction marks) carry no meaning here
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _tokens(text: str) -> list[str]:
    norm = unicodedata.normalize("NFKC", text).lower()
    norm = norm.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    out: list[str] = []
    for tok in _TOKEN_RE.findall(norm):
        if tok in _CONTRACTIONS:
            out.extend(_CONTRACTIONS[tok])
            continue
        if tok.endswith("'s"):
            tok = tok[:-2]
        tok = tok.replace("'", "")
        if tok:
            out.append(tok)
    return out


def _strip_commands(tokens: list[str]) -> list[str]:
    changed = True
    while changed and tokens:
        changed = False
        while tokens and tokens[0] in _DETERMINERS:
            tokens = tokens[1:]
            changed = True
        for cmd in _COMMANDS:
            n = len(cmd)
            if tuple(tokens[:n]) == cmd:
                tokens = tokens[n:]
                changed = True
                break
    while len(tokens) > 1 and tokens[-1] in ("please", "now", "thanks"):
        tokens = tokens[:-1]
    if tokens[-2:] == ["thank", "you"]:
        tokens = tokens[:-2]
    return tokens


# ----------------------------------------------------------------------------- phrases


def _parse_phrase(tokens: list[str]) -> Phrase:
    words = [t for t in tokens if t not in _DETERMINERS]
    attributes: list[str] = []
    noun: list[str] = []
    text_words: list[str] = []
    n = len(words)
    # a colour word that is also a noun is a noun when nothing else names the object
    non_attr = [
        w for w in words
        if w not in WORD_TO_COLOR and w not in _SUPERLATIVE_WORDS and w not in _COLOR_MODIFIERS
        and w not in _CONJUNCTIONS and w not in _GENERIC_NOUNS
    ]
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < n else ""
        if w in WORD_TO_COLOR and not (w in NOUN_COLORS and not non_attr and i == n - 1):
            c = WORD_TO_COLOR[w]
            if c not in attributes:
                attributes.append(c)
            text_words.append(w)
            continue
        if w in _COLOR_MODIFIERS and (nxt in WORD_TO_COLOR or w in ("colored", "coloured")):
            continue  # "dark blue" -> blue, "red colored" -> red
        if w in _SUPERLATIVE_WORDS:
            s = _SUPERLATIVE_WORDS[w]
            if s not in attributes:
                attributes.append(s)
            text_words.append(w)
            continue
        text_words.append(w)
        noun.append(w)
    # drop generic nouns and dangling conjunctions
    noun = [w for w in noun if w not in _GENERIC_NOUNS]
    while noun and noun[0] in _CONJUNCTIONS:
        noun = noun[1:]
    while noun and noun[-1] in _CONJUNCTIONS:
        noun = noun[:-1]
    viewer = bool(noun) and all(w in _VIEWER_WORDS for w in noun) and not attributes
    return Phrase(" ".join(text_words), " ".join(noun), tuple(attributes), viewer)


def _match_relation(tokens: list[str], i: int) -> tuple[str, int] | None:
    for pat, rel in _RELATION_PATTERNS:
        n = len(pat)
        if tuple(tokens[i : i + n]) == pat:
            return rel, n
    return None


def _strip_fillers(words: list[str]) -> list[str]:
    while words and words[-1] in _FILLERS:
        words = words[:-1]
    return words


_VIEWER_RELATION_ATTR = {
    "near": "closest",
    "far_from": "farthest",
    "left_of": "leftmost",
    "right_of": "rightmost",
    "in_front_of": "closest",
}


def parse_query(text: str, max_chars: int = 256) -> ParsedQuery:
    """Parse a natural-language object query; raises QueryError when it cannot be understood."""
    if not isinstance(text, str):
        raise QueryError(f"query must be text, got {type(text).__name__}")
    if not text or not text.strip():
        raise QueryError("query is empty")
    if len(text) > max_chars:
        raise QueryError(f"query is {len(text)} characters long; the limit is {max_chars}")
    clean = _check_characters(text)
    if not _LETTER_WORD_RE.search(clean):
        raise QueryError("query contains no word (of two or more letters)")
    tokens = _strip_commands(_tokens(clean))
    tokens = [t for t in tokens if t not in _DETERMINERS]
    if not tokens:
        raise QueryError("query names no object: only filler words such as 'the' or 'find'")
    try:
        tokens, location = extract_location(tokens, lambda t, j: _match_relation(t, j) is not None, _parse_phrase)
    except ValueError as e:
        raise QueryError(str(e)) from None
    while location is not None and tokens and tokens[-1] in _FILLERS and tokens[-1] != "right":
        tokens = tokens[:-1]  # "the mug that is | in the kitchen"

    # split into the target segment and (relation, anchor segment) pairs
    segments: list[tuple[str | None, list[str]]] = [(None, [])]
    extreme: set[int] = set()  # indices of segments whose relation is a superlative ("closest to")
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        rest = tokens[i + 1 :]
        current = segments[-1][1]
        m = _match_relation(tokens, i)
        if m is not None:
            rel, n = m
            after = tokens[i + n :]
            # "on the left" / "to the right" at the very end: a position, not a relation
            if rel == "on" and n == 1 and after in (["left"], ["right"]):
                current.append(after[0])
                break
            if rel == "on" and n == 2 and not after:  # "the box on top"
                current.append("topmost")
                break
            if tok in ("closest", "nearest", "farthest", "furthest"):
                extreme.add(len(segments))
            segments.append((rel, []))
            i += n
            continue
        if tok in ("to", "at") and rest in (["left"], ["right"]):
            current.append(rest[0])
            break
        if tok in ("to", "from") and rest and len(segments) == 1:
            # "the closest chair to the door", "the farthest lamp from the bed"
            sup = [_SUPERLATIVE_WORDS.get(w) for w in current]
            if tok == "to" and "closest" in sup:
                current[:] = [w for w in current if _SUPERLATIVE_WORDS.get(w) != "closest"]
                extreme.add(len(segments))
                segments.append(("near", []))
                i += 1
                continue
            if tok == "from" and "farthest" in sup:
                current[:] = [w for w in current if _SUPERLATIVE_WORDS.get(w) != "farthest"]
                extreme.add(len(segments))
                segments.append(("far_from", []))
                i += 1
                continue
        if tok in ("closest", "nearest") and _has_noun(current) and rest:
            # "the chair nearest the window": relation near
            extreme.add(len(segments))
            segments.append(("near", []))
            i += 1
            continue
        current.append(tok)
        i += 1

    target_words = segments[0][1]
    if len(segments) > 1:  # "the mug that is sitting | on the table"
        target_words = _strip_fillers(target_words)
    target = _parse_phrase(target_words)
    attributes = list(target.attributes)
    clauses: list[RelationClause] = []
    for k, (rel, words) in enumerate(segments[1:], start=1):
        assert rel is not None
        is_last = k == len(segments) - 1
        words = words if is_last else _strip_fillers(words)
        if rel == "between":
            parts = _split_and(words)
            phrases = tuple(_parse_phrase(p) for p in parts)
            if not phrases or any(_empty(p) for p in phrases):
                raise QueryError("'between' needs two anchor objects, e.g. 'between the sofa and the lamp'")
            if len(phrases) == 1:
                phrases = (phrases[0], phrases[0])  # "between the chairs": two of the same kind
            if len(phrases) > 2:
                raise QueryError("'between' takes exactly two anchor objects")
            if any(p.viewer for p in phrases):
                raise QueryError("'between' cannot use the robot or camera as an anchor")
            clauses.append(RelationClause(rel, phrases))
            continue
        anchor = _parse_phrase(words)
        if _empty(anchor):
            raise QueryError(f"relation '{rel.replace('_', ' ')}' has no anchor object")
        if anchor.viewer:
            attr = _VIEWER_RELATION_ATTR.get(rel)
            if attr is None:
                raise QueryError(
                    f"relation '{rel.replace('_', ' ')}' cannot use the robot or camera as its anchor"
                )
            if attr not in attributes:
                attributes.append(attr)
            continue
        clauses.append(RelationClause(rel, (anchor,), extreme=k in extreme))

    if target.noun and all(w in _PRONOUNS for w in target.noun.split()):
        raise QueryError("query asks for the robot or camera itself, not an object in the map")
    target = Phrase(target.text, target.noun, tuple(attributes), False)
    if not target.noun and not attributes and not clauses and location is None:
        raise QueryError("query names no object, attribute or relation")
    relations = [(c.relation, a.text) for c in clauses for a in c.anchors]
    return ParsedQuery(
        text=text,
        target=target.noun,
        attributes=attributes,
        relations=relations,
        target_phrase=target,
        clauses=clauses,
        location=location,
    )


def _has_noun(words: list[str]) -> bool:
    return any(
        w not in _SUPERLATIVE_WORDS and w not in WORD_TO_COLOR and w not in _FILLERS
        and w not in _COLOR_MODIFIERS
        for w in words
    )


def _empty(p: Phrase) -> bool:
    return not p.noun and not p.attributes


def _split_and(words: list[str]) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for w in words:
        if w in ("and", "&"):
            parts.append([])
        else:
            parts[-1].append(w)
    return [p for p in parts if p]
