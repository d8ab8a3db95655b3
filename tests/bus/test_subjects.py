import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomserver.bus.subjects import (
    MAX_ESCAPED_LENGTH,
    check_prefix,
    input_subject,
    room_consumer_name,
    room_id_from_token,
    room_token,
    token_of_subject,
)

SAFE = re.compile(r"[A-Za-z0-9_]+")
room_ids = st.text(min_size=1, max_size=300)


def test_dendrite_collision_pair_is_distinct() -> None:
    assert room_token("!a:b.c") != room_token("!a.b:c")
    assert room_token("!a:b.c") == "_21a_3Ab_2Ec"


@pytest.mark.parametrize(
    ("room_id", "token"),
    [
        ("!abc:example.org", "_21abc_3Aexample_2Eorg"),
        ("!under_score:x", "_21under_5Fscore_3Ax"),
        ("!é:x", "_21_C3_A9_3Ax"),
        ("!a*b>c d:x", "_21a_2Ab_3Ec_20d_3Ax"),
    ],
)
def test_examples(room_id: str, token: str) -> None:
    assert room_token(room_id) == token
    assert room_id_from_token(token) == room_id


@given(room_ids, room_ids)
def test_injective(a: str, b: str) -> None:
    if a != b:
        assert room_token(a) != room_token(b)


@given(room_ids)
def test_subject_safe_and_reversible(room_id: str) -> None:
    token = room_token(room_id)
    assert SAFE.fullmatch(token)
    assert len(token) <= MAX_ESCAPED_LENGTH
    if not token.startswith("_Z"):
        assert room_id_from_token(token) == room_id
    subject = input_subject("P", room_id)
    assert token_of_subject("P", subject) == token
    assert subject.count(".") == 1
    assert "." not in room_consumer_name("P", room_id)


@given(st.lists(room_ids, min_size=2, max_size=50, unique=True))
def test_no_collisions_in_a_set(ids: list[str]) -> None:
    assert len({room_token(r) for r in ids}) == len(ids)


def test_long_room_ids_are_hashed_and_distinct() -> None:
    long_a = "!" + "a" * 200 + ":example.org"
    long_b = "!" + "a" * 199 + "b:example.org"
    assert room_token(long_a).startswith("_Z")
    assert room_token(long_a) != room_token(long_b)
    assert room_id_from_token(room_token(long_a)) is None


def test_malformed_tokens_do_not_decode() -> None:
    assert room_id_from_token("_2") is None
    assert room_id_from_token("a_zz") is None
    assert room_id_from_token("_FF") is None  # not UTF-8
    assert token_of_subject("P", "Q.InputRoomEvent.x") is None


def test_prefix_check() -> None:
    assert check_prefix("Dendrite_1-x") == "Dendrite_1-x"
    with pytest.raises(ValueError):
        check_prefix("a.b")
