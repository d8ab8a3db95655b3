"""Every input kept under ``tests/fuzz/corpus/<target>/`` satisfies its target's invariant.

The seeds (``seed-*``, written by ``tests/fuzz/make_corpus.py``) are valid inputs; the
``crash-*`` files are inputs that once broke an invariant (see docs/reliability.md), kept as
regression tests. Fast: no fuzzer involved, the targets are called directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"
INPUTS = sorted(
    (target, path) for target in TARGETS for path in (CORPUS / target).glob("*") if path.is_file()
)


def test_every_target_has_seeds_and_regressions() -> None:
    for target in TARGETS:
        names = [p.name for t, p in INPUTS if t == target]
        assert any(n.startswith("seed-") for n in names), target
        assert any(n.startswith("crash-") for n in names), target


@pytest.mark.parametrize(("target", "path"), INPUTS, ids=[f"{t}/{p.name}" for t, p in INPUTS])
def test_corpus_input_keeps_the_invariant(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


def test_deep_nesting_is_a_wire_format_error() -> None:
    """Regression (corpus/wire_codec/crash-deep-nesting): the JSON parser's RecursionError on
    deeply nested input escaped every decoder instead of ``WireFormatError``."""
    from roomserver.api import (
        WireFormatError,
        decode_event_result,
        decode_input_room_event,
        decode_output_event,
    )

    for decode in (decode_input_room_event, decode_output_event, decode_event_result):
        with pytest.raises(WireFormatError, match="nested too deeply"):
            decode(b'{"v": 1, "event": ' + b"[" * 5000)
