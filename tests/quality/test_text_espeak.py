"""The espeak-phonemes front end (the shipped voices') says when text holds letters, but none it can pronounce
(issue 9): the scripts are named; truly letterless text keeps "nothing to speak"."""

from __future__ import annotations

import pytest

import melstream
from melstream.errors import TextError
from melstream.text import EspeakFrontend


@pytest.fixture(scope="module")
def frontend(taco_addon: melstream.Addon) -> EspeakFrontend:
    fe = taco_addon.build().frontend
    assert isinstance(fe, EspeakFrontend)
    return fe


@pytest.mark.parametrize("text, says", [
    ("你好", "'你好' is written in a script it does not speak (CJK)"),
    ("こんにちは", "is written in a script it does not speak (Hiragana)"),
    ("Привет, мир!", "'Привет, мир!' is written in a script it does not speak (Cyrillic)"),
    ("مرحبا ٣", "is written in a script it does not speak (Arabic)"),
    ("שלום, Αθήνα", "is written in scripts it does not speak (Hebrew, Greek)"),
    ("ŋə", "has letters it does not know (ŋ, ə)"),
])
def test_text_in_a_script_the_voice_does_not_speak(frontend: EspeakFrontend, text: str, says: str) -> None:
    for call in (frontend.normalize, frontend.encode):
        with pytest.raises(TextError) as info:
            call(text)
        message = str(info.value)
        assert message.startswith("text has nothing this voice can pronounce: ") and says in message, message


@pytest.mark.parametrize("text", [" ?! ", "...", "\U0001f600"])
def test_letterless_text_has_nothing_to_speak(frontend: EspeakFrontend, text: str) -> None:
    with pytest.raises(TextError, match=r"^text has nothing to speak: .* has no letters or digits after normalisation$"):
        frontend.encode(text)


def test_foreign_words_beside_english_are_dropped(frontend: EspeakFrontend) -> None:
    assert frontend.normalize("Hello 你好 world") == "Hello world"
    assert len(frontend.encode("Hello 你好 world")) > 3


@pytest.mark.parametrize("pace", [0.5, 2.0])
def test_tacovoice_honours_pace(taco_addon: melstream.Addon, pace: float) -> None:
    pipeline = taco_addon.build()
    text = "The attention voice keeps the pace it is asked for."
    own = len(pipeline.synthesize(text))
    assert abs(len(pipeline.synthesize(text, pace=pace)) - own / pace) <= 1
