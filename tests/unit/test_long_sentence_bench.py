"""benchmarks/long_sentence.py's texts: one sentence of about the asked length, commas, one full stop."""

from __future__ import annotations

import pytest

from benchmarks.long_sentence import CLAUSE_WORDS, sentence


@pytest.mark.parametrize("chars", [2, 44, 612, 5000])
def test_a_sentence_is_as_long_as_asked_within_a_word_and_ends_once(chars: int) -> None:
    text = sentence(chars)
    assert len(text) <= chars or len(text.split()) == 1  # a first word longer than asked is still one word
    assert chars - len(text) <= max(len(w) for w in text.split()) + 2
    assert text.endswith(".") and text.count(".") == 1 and not any(c in text for c in "?!;:")
    assert text[0].isupper()
    words = text[:-1].replace(",", "").split()
    assert text.count(",") == (len(words) - 1) // CLAUSE_WORDS


def test_a_sentence_needs_room_for_a_word_and_its_stop() -> None:
    with pytest.raises(ValueError):
        sentence(1)
