"""Rule-based query parser: targets, attributes, relations, errors, and a fuzz test."""
from __future__ import annotations

import random

import pytest

from core3d_ros.core.retrieval.parser import ParsedQuery, QueryError, parse_query


def rel(q: str) -> list[tuple[str, str]]:
    return parse_query(q).relations


# ------------------------------------------------------------------------- targets and clean-up


@pytest.mark.parametrize(
    "text, target",
    [
        ("the mug", "mug"),
        ("a mug", "mug"),
        ("Find the MUG!", "mug"),
        ("where is the coffee mug?", "coffee mug"),
        ("where's the mug", "mug"),
        ("show me some chairs", "chairs"),
        ("go to the kitchen counter, please", "kitchen counter"),
        ("  an   office\tchair  ", "office chair"),
        ("the orange", "orange"),  # a colour word that is the only noun is the noun
        ("the robot vacuum", "robot vacuum"),
    ],
)
def test_target_noun_phrase(text, target):
    p = parse_query(text)
    assert isinstance(p, ParsedQuery)
    assert p.target == target
    assert p.text == text


def test_generic_targets_mean_any_object():
    for q in ("the largest red thing", "the largest red object", "something red", "the red one"):
        p = parse_query(q)
        assert p.target == ""
        assert "red" in p.attributes


# ------------------------------------------------------------------------- attributes


@pytest.mark.parametrize(
    "text, attrs",
    [
        ("the red mug", ["red"]),
        ("the dark blue chair", ["blue"]),
        ("a grey sofa", ["gray"]),
        ("the red and white mug", ["red", "white"]),
        ("the largest box", ["largest"]),
        ("the biggest box", ["largest"]),
        ("the smallest box", ["smallest"]),
        ("the tallest plant", ["tallest"]),
        ("the shortest plant", ["shortest"]),
        ("the lowest shelf", ["lowest"]),
        ("the highest shelf", ["highest"]),
        ("the nearest chair", ["closest"]),
        ("the closest chair", ["closest"]),
        ("the farthest lamp", ["farthest"]),
        ("the furthest lamp", ["farthest"]),
        ("the chair closest to me", ["closest"]),
        ("the chair nearest to the robot", ["closest"]),
        ("the object closest to the camera", ["closest"]),
        ("the lamp far from me", ["farthest"]),
        ("the chair on the left", ["leftmost"]),
        ("the chair on the right", ["rightmost"]),
        ("the largest red object", ["largest", "red"]),
    ],
)
def test_attributes(text, attrs):
    p = parse_query(text)
    assert p.attributes == attrs
    assert p.relations == []


# ------------------------------------------------------------------------- relations


@pytest.mark.parametrize(
    "text, relation",
    [
        ("the mug near the laptop", "near"),
        ("the mug next to the laptop", "near"),
        ("the mug beside the laptop", "near"),
        ("the mug close to the laptop", "near"),
        ("the chair nearest the laptop", "near"),
        ("the mug on the laptop", "on"),
        ("the mug on top of the laptop", "on"),
        ("the mug above the laptop", "above"),
        ("the mug under the laptop", "under"),
        ("the mug below the laptop", "under"),
        ("the mug beneath the laptop", "under"),
        ("the mug in the laptop", "in"),
        ("the mug inside the laptop", "in"),
        ("the mug left of the laptop", "left_of"),
        ("the mug to the left of the laptop", "left_of"),
        ("the mug right of the laptop", "right_of"),
        ("the mug to the right of the laptop", "right_of"),
        ("the mug in front of the laptop", "in_front_of"),
        ("the mug behind the laptop", "behind"),
        ("the mug far from the laptop", "far_from"),
    ],
)
def test_each_relation(text, relation):
    p = parse_query(text)
    assert p.target == "mug" or p.target == "chair"
    assert p.relations == [(relation, "laptop")]
    assert p.clauses[0].anchors[0].noun == "laptop"


def test_between_gives_two_anchors():
    p = parse_query("the lamp between the sofa and the bed")
    assert p.target == "lamp"
    assert p.relations == [("between", "sofa"), ("between", "bed")]
    assert len(p.clauses) == 1 and [a.noun for a in p.clauses[0].anchors] == ["sofa", "bed"]
    # plural anchor: two of the same kind
    p = parse_query("the cup between the plates")
    assert [a.noun for a in p.clauses[0].anchors] == ["plates", "plates"]


def test_fillers_and_multiple_relations():
    p = parse_query("the mug that is sitting on the table near the window")
    assert p.target == "mug"
    assert p.relations == [("on", "table"), ("near", "window")]
    p = parse_query("the mug right next to the laptop")
    assert p.relations == [("near", "laptop")] and p.attributes == []


def test_anchor_attributes_are_parsed():
    p = parse_query("the red object near the biggest object")
    assert p.target == "" and p.attributes == ["red"]
    assert p.relations == [("near", "biggest object")]
    anchor = p.clauses[0].anchors[0]
    assert anchor.noun == "" and anchor.attributes == ("largest",)
    p = parse_query("the mug on the small red table")
    a = p.clauses[0].anchors[0]
    assert a.noun == "table" and set(a.attributes) == {"smallest", "red"}


def test_to_dict_matches_message_layout():
    d = parse_query("the lamp between the sofa and the bed").to_dict()
    assert d["relations"] == ["between", "between"] and d["anchors"] == ["sofa", "bed"]
    assert d["target"] == "lamp" and d["attributes"] == []


def test_query_without_target_noun_but_relation():
    p = parse_query("what is on the table")
    assert p.target == "" and p.relations == [("on", "table")]


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("   \t\n ", "empty"),
        ("x" * 300, "limit"),
        ("!!! ??? ...", "no word"),
        ("1234 5678", "no word"),
        ("a b c", "no word"),
        ("the", "filler"),
        ("find the", "filler"),
        ("the thing", "names no object"),
        ("mug\x00", "control"),
        ("mug\x1b[31m", "control"),
        ("the mug on", "no anchor"),
        ("the mug on the", "no anchor"),
        ("the mug under me", "robot or camera"),
        ("find me", "robot or camera"),
        ("the cup between", "two anchor"),
    ],
)
def test_errors(text, words):
    with pytest.raises(QueryError) as e:
        parse_query(text)
    assert words in str(e.value)


def test_max_chars_is_configurable():
    q = "the red mug on the table"
    parse_query(q, max_chars=len(q))
    with pytest.raises(QueryError):
        parse_query(q, max_chars=len(q) - 1)


def test_non_string_input_is_a_query_error():
    for bad in (None, 3, b"mug", ["mug"]):
        with pytest.raises(QueryError):
            parse_query(bad)  # type: ignore[arg-type]


def test_query_error_is_value_error():
    assert issubclass(QueryError, ValueError)


def test_unicode_queries():
    assert parse_query("the café table").target == "café table"
    assert parse_query("die große Tasse").target  # non-English words pass through as the noun
    assert parse_query("ｔｈｅ ｍｕｇ").target == "mug"  # full-width forms are normalised
    assert parse_query("the mug\u200b on the table").relations == [("on", "table")]


# ------------------------------------------------------------------------- fuzz

_ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyz ABCXYZ   .,;:!?'\"-_()[]{}0123456789\t\n")
    + ["the ", "a ", " on ", " near ", " between ", " and ", " of ", " left ", " to ", " me ", "red ", "largest "]
)


def _random_text(rng: random.Random) -> str:
    kind = rng.random()
    n = rng.randint(0, 40)
    if kind < 0.4:  # any code point, surrogates and controls included
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(n))
    if kind < 0.6:  # BMP
        return "".join(chr(rng.randint(0, 0xFFFF)) for _ in range(n))
    return "".join(rng.choice(_ALPHABET) for _ in range(n))


def test_fuzz_only_parsed_query_or_query_error():
    rng = random.Random(1234)
    ok = 0
    for _ in range(4000):
        text = _random_text(rng)
        try:
            p = parse_query(text, max_chars=rng.choice([8, 64, 256]))
        except QueryError as e:
            assert str(e)
            continue
        ok += 1
        assert isinstance(p, ParsedQuery)
        assert p.target or p.attributes or p.relations
        assert all(isinstance(r, str) and isinstance(a, str) for r, a in p.relations)
    assert ok > 50  # the word-based strings parse often enough to exercise the success path
