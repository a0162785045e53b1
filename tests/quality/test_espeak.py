"""melstream.espeak (ctypes binding to libespeak-ng) and the espeak-phonemes text front end."""

from __future__ import annotations

import numpy as np
import pytest

from melstream.addon import AudioSpec
from melstream.errors import TextError
from melstream.espeak import CLAUSE_TOKENS, HOP_LENGTH, SHORT_PAUSE, WORD_BOUNDARY, get_espeak, split_stress
from melstream.text import EOS, FRONTENDS, PAD, EspeakFrontend, get_frontend
from melstream_client.audio import log_mel


@pytest.fixture(scope="module")
def espeak():
    return get_espeak()  # the quality tier needs libespeak-ng (`make sysdeps`): missing, it fails here, it is not skipped


SPEC = AudioSpec(22050, 256, 1024, 1024, 80, 0.0, 8000.0)
SENTENCES = [
    "Hello, world.",
    "This is a test of 42 things; isn't it?",
    'He said "stop." Then (he left), quickly!',
    "Return True if the file exists",
]


def test_same_instance_and_sample_rate(espeak):
    assert get_espeak() is espeak
    assert espeak.sample_rate == 22050


def test_phonemize_conventions(espeak):
    tokens = espeak.phonemize("Hello, world.")
    assert tokens == ["h", "@", "l", "'oU", "[,]", "w", "'3:", "l", "d", "[.]"]
    tokens = espeak.phonemize("Hello world")
    assert tokens[tokens.index(WORD_BOUNDARY) - 1] == "'oU" and tokens[-1] == "[.]"  # end of text = full stop
    assert espeak.phonemize("Is it?")[-1] == "[?]"
    assert split_stress("'oU") == ("'", "oU") and split_stress(",i:") == (",", "i:") and split_stress("t") == ("", "t")


@pytest.mark.parametrize("text", SENTENCES)
def test_align_durations_cover_the_mel(espeak, text):
    audio, tokens, durations = espeak.align(text)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0 and len(audio) > 0
    assert tokens == espeak.phonemize(text)
    assert durations.dtype == np.int64 and len(durations) == len(tokens) and (durations >= 0).all()
    mel = log_mel(audio, SPEC)
    assert int(durations.sum()) == len(mel) == len(audio) // HOP_LENGTH
    for token, frames in zip(tokens, durations, strict=True):
        if token == WORD_BOUNDARY:
            assert frames == 0
    spoken = [d for t, d in zip(tokens, durations, strict=True) if t != WORD_BOUNDARY and t not in CLAUSE_TOKENS]
    assert sum(spoken) > 0.5 * durations.sum()


def test_synthesize_events_match_tokens(espeak):
    text = "It must be an iterable object, such as a list, at once."  # espeak's short pause "_" -> "_s"
    audio, events = espeak.synthesize(text)
    starts = [start for _, start in events]
    assert starts == sorted(starts) and starts[-1] <= len(audio)
    tokens = espeak.phonemize(text)
    assert SHORT_PAUSE in tokens and "_" not in tokens
    phones = [split_stress(t)[1] for t in tokens if t != WORD_BOUNDARY and t not in CLAUSE_TOKENS and not t.startswith("_")]
    assert [name for name, _ in events if not name.startswith("_")] == phones


def test_align_is_repeatable(espeak):
    # espeak-ng carries a little state from one utterance to the next (a few samples of length): tokens are
    # identical, frame durations agree to within a frame or two
    text = SENTENCES[1]
    a1, t1, d1 = espeak.align(text)
    a2, t2, d2 = espeak.align(text)
    assert t1 == t2 and espeak.phonemize(text) == t1
    assert abs(len(a1) - len(a2)) < 2 * HOP_LENGTH and np.abs(d1 - d2).max() <= 2


def _symbols(espeak):
    inventory = sorted({token for text in SENTENCES for token in espeak.phonemize(text)})
    return [PAD, EOS, *inventory]


def test_frontend_encode(espeak):
    symbols = _symbols(espeak)
    frontend = get_frontend("espeak-phonemes", symbols=symbols, max_chars=200)
    assert isinstance(frontend, EspeakFrontend) and FRONTENDS["espeak-phonemes"] is EspeakFrontend
    assert frontend.num_symbols == len(symbols)
    ids = frontend.encode("Hello, world.")
    assert ids.dtype == np.int64 and ids[-1] == 1 and (ids[:-1] >= 2).all() and (ids < len(symbols)).all()
    assert [symbols[i] for i in ids[:-1]] == espeak.phonemize("Hello, world.")
    assert (frontend.encode(b"Hello, world.") == ids).all()
    assert (frontend.encode("  Hello,\n\tworld.  ") == ids).all()
    assert frontend.normalize("Caf\u00e9 \u201cnumber\u201d 42 \U0001f600!") == "Cafe number 42 !"


def test_frontend_drops_unknown_tokens(espeak):
    frontend = EspeakFrontend(symbols=[PAD, EOS, "h", "@", "l", "'oU"])
    ids = frontend.encode("Hello, world.")
    assert ids.tolist() == [2, 3, 4, 5, 4, 1]  # "Hello, world.": h @ l 'oU [,] w '3: l d [.]
    with pytest.raises(TextError, match="no known phonemes"):
        EspeakFrontend(symbols=[PAD, EOS, "Z"]).encode("Hello")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "nothing to speak: it is empty"),
        ("   \n", "nothing to speak"),
        ("?!... \U0001f600", "nothing to speak"),
        (b"\xff\xfe", "not valid UTF-8"),
        ("x" * 11, "text is 11 characters; the limit is 10"),
    ],
)
def test_frontend_errors(text, message):
    frontend = EspeakFrontend(symbols=[PAD, EOS, "h"], max_chars=10)
    with pytest.raises(TextError, match=message):
        frontend.encode(text)


def test_frontend_bad_symbols():
    with pytest.raises(TextError, match="must start with the pad"):
        EspeakFrontend(symbols=["a", "b", "c"])
    with pytest.raises(TextError, match="duplicates"):
        EspeakFrontend(symbols=[PAD, EOS, "a", "a"])
    with pytest.raises(TextError, match="bad options"):
        get_frontend("espeak-phonemes")
