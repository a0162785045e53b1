"""espeak-ng keeps no state from one text to the next: a text ending in ".." (or anything else) must not reach
the phonemes of the next text on the same process (another stream's request, on a server).

espeak reads one character past a clause's end; at the end of a text ending in ".." it kept the second "." and
read it, as "dot", at the start of the next text.  melstream.espeak reads what it kept away after every text.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from melstream.addon import load_addon
from melstream.errors import TextError
from melstream.espeak import get_espeak

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROBE = "Wait... hello there, it costs $3.50."
ENDINGS = ["Wait.", "Wait..", "Wait...", "Really?!", "Wait,", "Hello wor", "So.. ", "..", "One.. two..", "Wait...."]


@pytest.fixture(scope="module")
def frontend():
    return load_addon(ROOT / "addons" / "fastvoice").build().frontend


@pytest.fixture(scope="module")
def fresh(frontend):
    """The probe's phonemes, ids and sentences before any other text (this module's first use of espeak may
    follow other tests': the reference is taken right after a text ending in a plain word)."""
    frontend.encode("Plain words")
    return {
        "ids": frontend.encode(PROBE).tolist(),
        "sentences": [(s.text, s.ids.tolist(), s.words) for s in frontend.sentences(PROBE)],
        "clauses": get_espeak(frontend.voice).clauses(PROBE),
    }


@pytest.mark.parametrize("before", ENDINGS)
def test_encode_after_a_text_is_as_fresh(frontend, fresh, before):
    with contextlib.suppress(TextError):  # ".." has nothing to speak: refused, and it leaves nothing behind either
        frontend.encode(before)
    assert frontend.encode(PROBE).tolist() == fresh["ids"]


@pytest.mark.parametrize("before", ENDINGS)
def test_sentences_after_a_text_are_as_fresh(frontend, fresh, before):
    with contextlib.suppress(TextError):
        list(frontend.sentences(before))
    assert [(s.text, s.ids.tolist(), s.words) for s in frontend.sentences(PROBE)] == fresh["sentences"]


@pytest.mark.parametrize("before", ENDINGS)
def test_phonemes_after_synthesizing_a_text_are_as_fresh(frontend, fresh, before):
    """The teacher's synthesis (espeak_Synth) leaves nothing behind for the phonemes either."""
    espeak = get_espeak(frontend.voice)
    espeak.synthesize(before)
    assert espeak.clauses(PROBE) == fresh["clauses"]
    _, events = espeak.synthesize(PROBE)
    espeak.synthesize(before)
    _, again = espeak.synthesize(PROBE)
    assert [name for name, _ in again] == [name for name, _ in events]


def test_the_dotted_text_itself_is_read_once(frontend):
    """The kept "." is read away, not spoken twice: "Wait.." reads as "Wait." does, every time."""
    first = frontend.encode("Wait..").tolist()
    assert frontend.encode("Wait..").tolist() == first == frontend.encode("Wait.").tolist()
