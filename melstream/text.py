"""Text front ends: turn user text into the integer token ids a text-to-speech network reads.

Two front ends ship: :class:`CharFrontend` (registered as ``"english-chars"``), a deterministic,
character-level English normaliser, and :class:`EspeakFrontend` (``"espeak-phonemes"``), espeak-ng's
phonemes (needs libespeak-ng).  Look front ends up by name with :func:`get_frontend`.
"""

from __future__ import annotations

import difflib
import functools
import heapq
import itertools
import logging
import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from melstream.errors import TextError

__all__ = [
    "EOS",
    "FRONTENDS",
    "MAX_CHARS_DEFAULT",
    "PAD",
    "SYMBOLS",
    "CharFrontend",
    "EspeakFrontend",
    "Frontend",
    "Sentence",
    "Word",
    "get_frontend",
    "sentences_from",
]

log = logging.getLogger(__name__)

MAX_CHARS_DEFAULT = 10_000

PAD = "_"
EOS = "~"
_PUNCTUATION = ",.?!;:-'"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

#: The symbol set: id 0 pad ``"_"``, id 1 end of text ``"~"``, id 2 space, ids 3-10 ``,.?!;:-'``, ids 11-36 ``a``-``z``.
SYMBOLS: tuple[str, ...] = (PAD, EOS, " ", *_PUNCTUATION, *_LETTERS)

_SPEAKABLE = frozenset(SYMBOLS[2:])
_SYMBOL_IDS = {symbol: index for index, symbol in enumerate(SYMBOLS)}

# --------------------------------------------------------------------------------------------- numbers

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand"))
_MAX_WORDS = 999_999_999_999
_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _under_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest:
        words.append(_ONES[rest])
    return words


def _cardinal_words(n: int) -> list[str]:
    """Words for ``0 <= n <= 999_999_999_999``."""
    if n == 0:
        return ["zero"]
    words: list[str] = []
    for scale, scale_name in _SCALES:
        count, n = divmod(n, scale)
        if count:
            words += [*_under_thousand(count), scale_name]
    return words + _under_thousand(n)


def _digit_words(digits: str) -> list[str]:
    return [_ONES[int(digit)] for digit in digits]


def _integer_words(digits: str) -> list[str]:
    """Read an ASCII digit string: as a cardinal, or digit by digit when it has a leading zero or is too big."""
    if (len(digits) > 1 and digits[0] == "0") or int(digits) > _MAX_WORDS:
        return _digit_words(digits)
    return _cardinal_words(int(digits))


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return [*words[:-1], last]


def _money_words(digits: str, frac: str | None) -> list[str]:
    if int(digits) > _MAX_WORDS:
        dollars_words = _digit_words(digits)
    else:
        dollars_words = _cardinal_words(int(digits))
    if frac is not None and len(frac) > 2:  # "$1.125": read as a decimal amount
        return [*dollars_words, "point", *_digit_words(frac), "dollars"]
    dollars = int(digits)
    cents = 0 if frac is None else int(frac.ljust(2, "0"))
    dollar_part = [*dollars_words, "dollar" if dollars == 1 else "dollars"]
    if cents == 0:
        return dollar_part
    cent_part = [*_cardinal_words(cents), "cent" if cents == 1 else "cents"]
    if dollars == 0:
        return cent_part
    return dollar_part + cent_part


_NUMBER_RE = re.compile(
    r"(?P<sign>(?<!\w)-)?"
    r"(?P<dollar>\$)?"
    r"(?P<int>[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)"
    r"(?:\.(?P<frac>[0-9]+))?"
    r"(?P<suffix>%|(?:st|nd|rd|th)(?![a-z]))?",
    re.IGNORECASE,
)


def _expand_number(match: re.Match[str]) -> str:
    digits = match["int"].replace(",", "")
    frac = match["frac"]
    suffix = (match["suffix"] or "").lower()
    words: list[str] = ["minus"] if match["sign"] else []
    if match["dollar"]:
        words += _money_words(digits, frac)
    else:
        number = _integer_words(digits)
        if frac is not None:
            number += ["point", *_digit_words(frac)]
        elif suffix and suffix != "%":
            number = _ordinal(number)
            suffix = ""
        words += number
    if suffix == "%":
        words.append("percent")
    elif suffix:  # an ordinal suffix on a decimal or an amount of money: keep its letters
        words.append(suffix)
    text = " ".join(words)
    source, start, end = match.string, match.start(), match.end()
    if start > 0 and source[start - 1].isalnum():
        text = " " + text
    if end < len(source) and source[end].isalnum():
        text += " "
    return text


# ------------------------------------------------------------------------------------ character maps

_TYPOGRAPHY = str.maketrans(
    {
        "\u2018": "'",  # ‘
        "\u2019": "'",  # ’
        "\u201a": "'",  # ‚
        "\u201b": "'",  # ‛
        "\u2032": "'",  # ′
        "\u201c": " ",  # “
        "\u201d": " ",  # ”
        "\u201e": " ",  # „
        "\u201f": " ",  # ‟
        "\u00ab": " ",  # «
        "\u00bb": " ",  # »
        "\u2039": " ",  # ‹
        "\u203a": " ",  # ›
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": "-",  # figure dash
        "\u2013": "-",  # – en dash
        "\u2014": "-",  # — em dash
        "\u2015": "-",  # horizontal bar
        "\u2043": "-",  # hyphen bullet
        "\u2212": "-",  # − minus sign
    }
)

_SYMBOL_WORDS = str.maketrans({"&": " and ", "+": " plus ", "@": " at ", "=": " equals ", "%": " percent "})

_LETTER_MAP = str.maketrans(
    {"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ħ": "h"}
)

_SEPARATORS = str.maketrans(
    {
        **{bracket: ", " for bracket in "()[]{}"},
        **{mark: " " for mark in '"`<>/\\|_*#~^'},
    }
)

_SPACE_RE = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT_RE = re.compile(r" +([,.?!;:])")
_HYPHENS_RE = re.compile(r"-{2,}")
_COMMAS_RE = re.compile(r",(?: *,)+")
_COMMA_BEFORE_STOP_RE = re.compile(r", *([.?!;:])")
_COMMA_AFTER_STOP_RE = re.compile(r"([.?!;:]) *,")
_SPACE_AFTER_PUNCT_RE = re.compile(r"([,;:?!])(?=[a-z])")
_EDGES_RE = re.compile(r"^[ ,]+|[ ,]+$")


def _clean_characters(text: str) -> str:
    """NFKD, combining marks dropped, whitespace to spaces, other control/format characters removed."""
    if text.isascii() and text.isprintable():  # none of that changes it (the only printable space is " ")
        return text
    out: list[str] = []
    for char in unicodedata.normalize("NFKD", text):
        if char.isspace():
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if category[0] == "M" or category in ("Cc", "Cf"):
            continue
        out.append(char)
    return "".join(out)


def _tidy(text: str) -> str:
    text = _SPACE_RE.sub(" ", text)
    text = _SPACE_BEFORE_PUNCT_RE.sub(r"\1", text)
    text = _HYPHENS_RE.sub("-", text)
    text = _COMMAS_RE.sub(",", text)
    text = _COMMA_BEFORE_STOP_RE.sub(r"\1", text)
    text = _COMMA_AFTER_STOP_RE.sub(r"\1", text)
    text = _SPACE_AFTER_PUNCT_RE.sub(r"\1 ", text)
    return _EDGES_RE.sub("", text)


def _decode(text: object) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TextError(
                f"text is not valid UTF-8: byte 0x{raw[error.start]:02x} at byte offset {error.start} ({error.reason})"
            ) from None
    raise TextError(f"text must be str or UTF-8 bytes, not {type(text).__name__}")


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ------------------------------------------------------------------------------------------ frontend



def _script(char: str) -> str:
    """The script ``char`` is written in, as Unicode names it (``CJK``, ``Cyrillic``, ``Arabic``, ``Latin``, ...)."""
    words = [w for w in unicodedata.name(char, "").split() if w not in ("EXTENDED", "FULLWIDTH", "HALFWIDTH")]
    if not words:
        return f"U+{ord(char):04X}"
    word = words[0].removesuffix("-INDIC")
    return word if word in ("CJK",) else word.title()


def _unpronounceable(original: str, speaks: Callable[[str], bool]) -> str | None:
    """Why ``original``, which left nothing to speak, cannot be spoken when it is because it holds letters or
    digits that the voice does not speak (``speaks(char)`` is false): the scripts they are written in, and the
    Latin letters the voice does not know.  ``None`` when it holds no letters or digits at all."""
    scripts: list[str] = []
    latin: list[str] = []
    for char in original:
        if unicodedata.category(char)[0] not in "LN" or speaks(char):
            continue
        script = _script(char)
        if script == "Latin":
            if char not in latin:
                latin.append(char)
        elif script not in scripts:
            scripts.append(script)
    if not scripts and not latin:
        return None
    reasons = []
    if scripts:
        written = "a script" if len(scripts) == 1 else "scripts"
        reasons.append(f"is written in {written} it does not speak ({', '.join(scripts)})")
    if latin:
        shown = ", ".join(latin[:10]) + (", ..." if len(latin) > 10 else "")
        reasons.append(f"has letters it does not know ({shown})")
    return f"text has nothing this voice can pronounce: {_preview(original)} {' and '.join(reasons)}"


def _char_speaks(char: str) -> bool:
    """True if :class:`CharFrontend` turns ``char`` into something it speaks (a letter a-z or an ASCII digit)."""
    folded = _clean_characters(char).translate(_TYPOGRAPHY).lower().translate(_LETTER_MAP)
    return any(c in _LETTERS or c in "0123456789" for c in folded)


def _espeak_speaks(char: str) -> bool:
    """True if :class:`EspeakFrontend` keeps something of ``char`` for espeak to read (an ASCII letter or digit)."""
    return any(c.isascii() and c.isalnum() for c in _clean_characters(char).translate(_TYPOGRAPHY))


def _checked(text: str | bytes, max_chars: int) -> str:
    """``text`` decoded, refused if longer than ``max_chars`` characters or empty (both front ends)."""
    text = _decode(text)
    if len(text) > max_chars:
        raise TextError(f"text is {len(text)} characters; the limit is {max_chars}")
    if not text:
        raise TextError("text has nothing to speak: it is empty")
    return text


@dataclass(frozen=True)
class Word:
    """A word of a :class:`Sentence`: its text and its tokens, ``ids[start:end]`` of the sentence."""

    text: str
    start: int
    end: int


class Sentence:
    """One sentence (or clause) of a text, as a front end's ``sentences`` makes them, one at a time.

    ``ids``: int64 ``[n]`` token ids, without the end-of-text id (``n`` may be 0: nothing in it the voice
    knows).  A text's sentences' ids, concatenated, then the end id 1, are the front end's ``encode`` of the
    text.  ``text``: the sentence's normalised text.  ``words``: its words in order, each with its token
    range in ``ids`` (word boundaries and clause tokens belong to no word); see each front end for what a
    word's ``text`` is.

    ``words`` may be given as a function of no arguments that makes them: they are then made on the first
    read of :attr:`words` (once, whichever thread reads first; the others wait for it) and kept.  Only word
    timestamps read them, and making them can cost more than reading the sentence (:class:`EspeakFrontend`
    asks espeak-ng for every word of the sentence again), so a request without word timestamps never pays
    for them.  A Sentence cannot be changed once made.
    """

    __slots__ = ("_lock", "_make", "_words", "ids", "text")

    text: str
    ids: np.ndarray
    _words: tuple[Word, ...] | None
    _make: Callable[[], Iterable[Word]] | None
    _lock: threading.Lock

    def __init__(self, text: str, ids: np.ndarray, words: Iterable[Word] | Callable[[], Iterable[Word]]) -> None:
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_words", None if callable(words) else tuple(words))
        object.__setattr__(self, "_make", words if callable(words) else None)
        object.__setattr__(self, "_lock", threading.Lock())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Sentence cannot be changed (setting {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Sentence cannot be changed (deleting {name!r})")

    @property
    def words(self) -> tuple[Word, ...]:
        """The sentence's words (made now if they were given as a function and this is the first read)."""
        words = self._words
        if words is None:
            with self._lock:
                words = self._words
                if words is None:  # not made by a thread that held the lock before this one
                    make = self._make
                    assert make is not None
                    words = tuple(make())
                    object.__setattr__(self, "_words", words)
                    object.__setattr__(self, "_make", None)  # what made them may hold the whole sentence's state
        return words

    def __repr__(self) -> str:
        words = "(not made yet)" if self._words is None else repr(self._words)
        return f"Sentence(text={self.text!r}, ids={self.ids!r}, words={words})"


def _no_phonemes(text: str | bytes) -> TextError:
    return TextError(f"text has nothing to speak: {_preview(_decode(text))} has no known phonemes")


# where the character front end ends a sentence: after . ? ! ; : (a run of them) and the space that follows
_CHAR_SENTENCE_END_RE = re.compile(r"[.?!;:]+ ")
# lowercase abbreviations after which a full stop does not end a sentence ("dr. smith", "e.g. this")
_ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "st", "prof", "jr", "sr", "vs", "etc", "e.g", "i.e", "mt", "no"})
_CHAR_WORD_RE = re.compile(r"[a-z0-9'-]+")

class CharFrontend:
    """Character-level English front end: user text -> normalised lowercase text -> token ids.

    Symbol set (:data:`SYMBOLS`, 37 symbols; the id is the index):

    * 0 ``"_"`` pad, 1 ``"~"`` end of text (appended by :meth:`encode`, never produced by :meth:`normalize`);
    * 2 ``" "`` space; 3-10 the punctuation ``, . ? ! ; : - '``; 11-36 the letters ``a``-``z``.

    Normalisation, applied in this order (deterministic: same input, same output):

    1. Input: ``bytes`` must be valid UTF-8, else :class:`TextError` naming the first bad byte and its byte
       offset; anything other than ``str``/``bytes`` is a :class:`TextError`.  Text longer than ``max_chars``
       characters (code points, counted before normalisation) is refused:
       ``"text is N characters; the limit is M"``.  Exactly ``max_chars`` is accepted.
    2. Unicode NFKD; combining marks are dropped (``café`` -> ``cafe``; full-width forms and ligatures become
       ASCII, ``…`` -> ``...``).  Every whitespace character (newline, tab, no-break space, ...) becomes a space;
       other control and format characters (``Cc``/``Cf``: NUL, BEL, zero-width space, BOM, ...) are removed.
    3. Typography: ``‘ ’ ‚ ‛ ′`` -> ``'``; double quotes ``“ ” „ ‟ « » ‹ ›`` are removed;
       dashes ``‐ ‑ ‒ – — ― ⁃`` and the minus sign ``−`` -> ``-``.
    4. Numbers (ASCII digits) to words, with spaces between words and no hyphens:

       * integers, with optional ``,`` thousands separators: ``1,234`` -> ``one thousand two hundred thirty
         four``; up to 999,999,999,999 (``nine hundred ninety nine billion ...``).  Bigger numbers, and
         numbers with a leading zero (``007``), are read digit by digit.  Years are plain cardinals.
       * a ``-`` directly before a number and not after a letter or digit is a sign: ``-5`` -> ``minus five``
         (``10-20`` and ``covid-19`` keep their hyphen).
       * decimals: ``3.14`` -> ``three point one four`` (the fraction is read digit by digit).
       * ordinals: a ``st``/``nd``/``rd``/``th`` suffix (any case, suffix not checked against the number) makes
         the last word ordinal: ``1st`` -> ``first``, ``23rd`` -> ``twenty third``, ``101th`` -> ``one
         hundred first``, ``12th`` -> ``twelfth``, ``20th`` -> ``twentieth``.
       * percentages: ``50%`` -> ``fifty percent``.
       * money: ``$1`` -> ``one dollar``, ``$5`` -> ``five dollars``, ``$2.50`` -> ``two dollars fifty cents``,
         ``$2.5`` -> ``two dollars fifty cents``, ``$0.01`` -> ``one cent``; more than two decimals reads as a
         decimal (``$1.125`` -> ``one point one two five dollars``); ``-$5`` -> ``minus five dollars``.
       * a space is inserted where the words would touch a letter or digit (``abc123`` -> ``abc one hundred
         twenty three``).
    5. Symbols to words: ``&`` -> ``and``, ``+`` -> ``plus``, ``@`` -> ``at``, ``=`` -> ``equals``, a ``%``
       not after a number -> ``percent`` (each surrounded by spaces).
    6. Lowercase; then ``ß`` -> ``ss``, ``æ`` -> ``ae``, ``œ`` -> ``oe``, ``ø`` -> ``o``, ``ł`` -> ``l``,
       ``đ``/``ð`` -> ``d``, ``þ`` -> ``th``, ``ı`` -> ``i``, ``ħ`` -> ``h``.
    7. Brackets ``( ) [ ] { }`` become commas (``a (b) c`` -> ``a, b, c``); the separators
       ``" ` < > / \\ | _ * # ~ ^`` become spaces.
    8. Every character not in ``SYMBOLS[2:]`` is dropped (emoji, CJK, Greek, ``$`` without a number, ...).
    9. Tidy: runs of whitespace collapse to one space; spaces before ``, . ? ! ; :`` are removed; runs of
       ``-`` collapse to one; runs of commas collapse to one; a comma next to ``. ? ! ; :`` is dropped;
       a space is added after ``, ; : ? !`` when a letter follows directly; leading and trailing spaces and
       commas are stripped.
    10. If no letter remains, :class:`TextError`: ``"text has nothing to speak: ..."`` for input without
        letters or digits (empty, whitespace-only, punctuation-only, emoji-only), and ``"text has nothing this
        voice can pronounce: '你好' is written in a script it does not speak (CJK)"`` for input whose letters or
        digits are all in scripts it does not speak (named from their Unicode names: ``CJK``, ``Cyrillic``,
        ``Arabic``, ...) or Latin letters it does not know (``ŋ``, ``ə``: ``"has letters it does not know (ŋ,
        ə)"``).
    """

    name = "english-chars"
    symbols: tuple[str, ...] = SYMBOLS

    def __init__(self, *, max_chars: int = MAX_CHARS_DEFAULT) -> None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise TextError(f"max_chars must be a positive integer, not {max_chars!r}")
        self.max_chars = max_chars

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_chars={self.max_chars})"

    @property
    def num_symbols(self) -> int:
        """How many symbols there are; every id :meth:`encode` returns is below this."""
        return len(self.symbols)

    def normalize(self, text: str) -> str:
        """Normalise ``text`` by the rules in the class docstring; the result holds only ``SYMBOLS[2:]``."""
        text = _checked(text, self.max_chars)
        original = text
        text = _clean_characters(text)
        text = text.translate(_TYPOGRAPHY)
        text = _NUMBER_RE.sub(_expand_number, text)
        text = text.translate(_SYMBOL_WORDS)
        text = text.lower().translate(_LETTER_MAP)
        text = text.translate(_SEPARATORS)
        text = "".join(char for char in text if char in _SPEAKABLE)
        text = _tidy(text)
        if not any(char in _LETTERS for char in text):
            why = _unpronounceable(original, _char_speaks)
            raise TextError(why or f"text has nothing to speak: {_preview(original)} has no letters after normalisation")
        return text

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids (int64, shape ``[N]``) of :meth:`normalize` (``text``), then the end-of-text id 1."""
        normalized = self.normalize(_decode(text))
        ids = [_SYMBOL_IDS[char] for char in normalized]
        ids.append(_SYMBOL_IDS[EOS])
        return np.asarray(ids, dtype=np.int64)

    @property
    def end_id(self) -> int:
        """The end-of-text id that :meth:`encode` appends (and :meth:`sentences` leaves out)."""
        return _SYMBOL_IDS[EOS]

    def split(self, text: str | bytes) -> list[str]:
        """:meth:`normalize` (``text``) cut into sentences: each ends after a run of ``. ? ! ; :`` and the space
        that follows it, except a full stop after a known abbreviation (``dr.``, ``mr.``, ``e.g.``, ...); the
        pieces, joined, are the normalised text.  All of ``text``'s checks run here, at once."""
        normalized = self.normalize(_decode(text))
        pieces, start = [], 0
        for match in _CHAR_SENTENCE_END_RE.finditer(normalized):
            before = normalized[start:match.start()].rsplit(" ", 1)[-1]
            if match.group() == ". " and before in _ABBREVIATIONS:
                continue
            pieces.append(normalized[start:match.end()])
            start = match.end()
        if start < len(normalized):
            pieces.append(normalized[start:])
        return pieces

    def sentences(self, text: str | bytes) -> Iterator[Sentence]:
        """``text``'s :class:`Sentence` s, lazily (ids made only when the next one is asked for): their ids,
        concatenated, then :attr:`end_id`, are :meth:`encode` (``text``).  ``text`` is checked, and every
        error :meth:`encode` raises is raised, at the first ``next()``.  A word is a run of letters, digits,
        ``'`` and ``-`` of the normalised text; its tokens are its characters."""
        for piece in self.split(text):
            ids = np.asarray([_SYMBOL_IDS[char] for char in piece], dtype=np.int64)
            words = tuple(Word(m.group(), m.start(), m.end()) for m in _CHAR_WORD_RE.finditer(piece))
            yield Sentence(piece, ids, words)


_ESPEAK_SPACE_RE = re.compile(r"\s+")
_ESPEAK_WORD_RE = re.compile(r"\$?[A-Za-z0-9](?:[A-Za-z0-9'.,$%-]*[A-Za-z0-9%])?")


class EspeakFrontend:
    """Phoneme front end: user text -> cleaned text -> espeak-ng phoneme tokens -> ids.

    ``symbols`` is the voice's phoneme inventory (``addon.json`` ``text.symbols``): id 0 must be the pad
    ``"_"`` and id 1 the end of text ``"~"`` (as in :class:`CharFrontend`); the other entries are
    :meth:`melstream.espeak.Espeak.phonemize` tokens (see :mod:`melstream.espeak` for their conventions).

    :meth:`normalize` applies the :class:`CharFrontend` input checks (``bytes`` must be UTF-8, at most
    ``max_chars`` characters, something to speak), then NFKD with combining marks, control and format
    characters dropped, whitespace to single spaces, the typographic quotes and dashes of
    :class:`CharFrontend` to ASCII, and every other non-ASCII character dropped.  Text left without an
    ASCII letter or digit is refused as in :class:`CharFrontend` (rule 10): text in scripts the voice does not
    speak says so (``"text has nothing this voice can pronounce: ... (Cyrillic)"``).  Digits, punctuation and
    case stay: espeak reads numbers, abbreviations and clause punctuation itself.  :meth:`encode` is the
    ids of the tokens of the normalised text, then the end id 1; tokens missing from ``symbols`` are
    dropped (logged at debug level).
    """

    name = "espeak-phonemes"

    def __init__(self, *, symbols: Sequence[str], max_chars: int = MAX_CHARS_DEFAULT, voice: str = "en-us") -> None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
            raise TextError(f"max_chars must be a positive integer, not {max_chars!r}")
        if isinstance(symbols, str) or not all(isinstance(symbol, str) for symbol in symbols):
            raise TextError("symbols must be a list of strings")
        symbols = tuple(symbols)
        if len(symbols) < 3 or symbols[0] != PAD or symbols[1] != EOS:
            raise TextError(f"symbols must start with the pad {PAD!r} and the end {EOS!r} and name at least one phoneme")
        if len(set(symbols)) != len(symbols):
            raise TextError("symbols has duplicates")
        self.symbols: tuple[str, ...] = symbols
        self.max_chars = max_chars
        self.voice = voice
        self._ids = {symbol: index for index, symbol in enumerate(symbols)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.symbols)} symbols, max_chars={self.max_chars}, voice={self.voice!r})"

    @property
    def num_symbols(self) -> int:
        """How many symbols there are; every id :meth:`encode` returns is below this."""
        return len(self.symbols)

    def normalize(self, text: str | bytes) -> str:
        """Checked and cleaned text for espeak (rules in the class docstring)."""
        text = _checked(text, self.max_chars)
        original = text
        text = _clean_characters(text).translate(_TYPOGRAPHY)
        if not (text.isascii() and text.isprintable()):  # else this keeps every character
            text = "".join(char for char in text if char.isascii() and (char.isprintable() or char == " "))
        text = _ESPEAK_SPACE_RE.sub(" ", text).strip()
        if not any(char.isalnum() for char in text):
            why = _unpronounceable(original, _espeak_speaks)
            if why is not None:
                raise TextError(why)
            raise TextError(f"text has nothing to speak: {_preview(original)} has no letters or digits after normalisation")
        return text

    def tokens(self, text: str | bytes) -> list[str]:
        """The espeak phoneme tokens of :meth:`normalize` (``text``)."""
        from melstream.espeak import get_espeak

        return get_espeak(self.voice).phonemize(self.normalize(text))

    def encode(self, text: str | bytes) -> np.ndarray:
        """Token ids (int64, shape ``[N]``) of :meth:`tokens` (``text``), then the end-of-text id 1."""
        tokens = self.tokens(text)
        ids = [self._ids[token] for token in tokens if token in self._ids]
        if len(ids) < len(tokens):
            unknown = sorted({token for token in tokens if token not in self._ids})
            log.debug("dropped %d phoneme tokens missing from the symbol set: %s", len(tokens) - len(ids), unknown)
        if not ids:
            raise _no_phonemes(text)
        ids.append(self._ids[EOS])
        return np.asarray(ids, dtype=np.int64)

    @property
    def end_id(self) -> int:
        """The end-of-text id that :meth:`encode` appends (and :meth:`sentences` leaves out)."""
        return self._ids[EOS]

    def sentences(self, text: str | bytes) -> Iterator[Sentence]:
        """``text``'s :class:`Sentence` s, lazily: espeak-ng reads the next sentence only when it is asked for
        (:meth:`melstream.espeak.Espeak.sentences`: it ends one where espeak itself ends a clause at ``. ? ! ;
        :`` or splits one by length, or at ``,`` once the sentence is long, so the phonemes are those of the
        whole text), and their ids, concatenated, then :attr:`end_id`, are :meth:`encode` (``text``).
        :meth:`normalize`'s checks run at the first ``next()``; a text in which no sentence has a known phoneme
        is refused after its last sentence, as :meth:`encode` refuses it.

        A word is one of the sentence's text words (runs of letters, digits and ``' . , $ % -``) with the tokens
        of the phoneme words espeak makes of it.  espeak reads ``3.5`` or ``$3.50`` as several words, and joins
        short words ("to be", "on the"), so each text word is read alone and the two are paired
        (:func:`_pair_words`): a text word that espeak reads as several is one word over all of their tokens
        (``$3.50``: from ``dollars`` to ``zero``), text words espeak joins are one word, its ``text`` theirs
        with what lies between ("to be"); should nothing fit, the sentence is one word, its ``text`` the whole
        sentence's.  The words are made only when a sentence's :attr:`Sentence.words` is first read (word
        timestamps): a request without them never reads the text words alone nor pairs them."""
        from melstream.espeak import WORD_BOUNDARY, get_espeak

        normalized = self.normalize(text)
        known = 0
        for piece, clauses in get_espeak(self.voice).sentences(normalized):
            ids: list[int] = []
            spans: list[tuple[int, int]] = []
            phonemes: list[list[str]] = []
            for words, terminator in clauses:
                for i, word in enumerate(words):
                    if i and WORD_BOUNDARY in self._ids:
                        ids.append(self._ids[WORD_BOUNDARY])
                    start = len(ids)
                    ids.extend(self._ids[token] for token in word if token in self._ids)
                    spans.append((start, len(ids)))
                    phonemes.append(word)
                if terminator in self._ids:
                    ids.append(self._ids[terminator])
            known += len(ids)
            # the words are made only if they are read (word timestamps): see Sentence
            yield Sentence(piece, np.asarray(ids, dtype=np.int64), functools.partial(self._words, piece, spans, phonemes))
        if not known:
            raise _no_phonemes(text)

    def _words(self, piece: str, spans: list[tuple[int, int]], phonemes: list[list[str]]) -> tuple[Word, ...]:
        """``piece``'s text words over espeak's phoneme words ``phonemes`` (their tokens), whose token ranges in
        the sentence's ids are ``spans``: see :meth:`sentences`.  Reads the text words alone with espeak-ng (each
        call a pass of its own, under espeak's lock), so it gives the same words in any thread, at any time."""
        said = list(_ESPEAK_WORD_RE.finditer(piece))
        if not spans:
            return ()
        plan = _pair_words([self._phoneme_words(m.group()) for m in said], [_sound(word) for word in phonemes])
        if plan is None:
            return (Word(piece, spans[0][0], spans[-1][1]),)
        words, i, j = [], 0, 0
        for texts, count in plan:
            name = piece[said[i].start():said[i + texts - 1].end()]
            if count:
                words.append(Word(name, spans[j][0], spans[j + count - 1][1]))
            else:  # espeak says nothing for it: no tokens, where the next word starts
                place = spans[j][0] if j < len(spans) else spans[-1][1]
                words.append(Word(name, place, place))
            i, j = i + texts, j + count
        return tuple(words)

    def _phoneme_words(self, word: str) -> list[str]:
        """The phoneme words espeak makes of ``word`` read alone, without stress marks (kept: words recur)."""
        cache: dict[str, list[str]] = self.__dict__.setdefault("_word_sounds", {})
        sounds = cache.get(word)
        if sounds is None:
            from melstream.espeak import get_espeak

            sounds = [_sound(w) for words, _ in get_espeak(self.voice).clauses(word) for w in words]
            if len(cache) > 4096:
                cache.clear()
            cache[word] = sounds
        return sounds


def _sound(tokens: Sequence[str]) -> str:
    """A phoneme word's tokens as one string, without stress marks or pauses (to compare words' sounds)."""
    return "".join(t.lstrip("',") for t in tokens if not t.startswith("_"))


#: a text word takes 0 to this many phoneme words (``$3.50``: 5)
_MAX_SPLIT = 6
#: how many text words espeak may join into one phoneme word ("to be", "on the")
_JOINS = (2, 3)
#: how far (in phoneme words) from where the text words read alone would put it a stretch's pairing is searched
_REACH = 6
#: how many text words in a row must sound exactly as read alone for the sentence to be in step again
_IN_STEP = 2
#: how many text words past the first place in step again a stretch's pairing looks for a better one
_LOOK_PAST = 3


def _differ(a: str, b: str) -> float:
    """How much two sound strings differ: 0 when they are equal, up to 1 (nothing in common)."""
    if a == b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(a=a, b=b, autojunk=False).ratio()


def _exact(alone: list[str], sounds: list[str], j: int) -> bool:
    """Whether a text word that espeak reads alone as the phoneme words ``alone`` (at least one) is said exactly
    so from phoneme word ``j`` of ``sounds`` on."""
    return sounds[j:j + len(alone)] == alone


def _pair_words(alone: list[list[str]], sounds: list[str]) -> list[tuple[int, int]] | None:
    """How a sentence's text words, which espeak reads alone as the phoneme words ``alone[i]``, make its phoneme
    words ``sounds``: ``(text words, phoneme words)`` groups in order; ``None`` if nothing fits.

    A text word takes 0 to 6 phoneme words (``$3.50``: 5), or as many as it has read alone (``1,234,567``: 9);
    2 or 3 text words may make one (espeak joins short words: "to be", "on the").  Most text words sound in
    the sentence exactly as read alone: those are paired as they come.  From one that does not, the groups
    whose sounds differ least (:func:`_cheapest`) are taken up to a place where the two are in step again
    (:data:`_IN_STEP` text words in a row said exactly as alone, or the end of both): the one they reach at
    the least cost, among those up to :data:`_LOOK_PAST` text words past the first.  The search stays within
    :data:`_REACH` phoneme words of where the words read alone would put them and, should no such place come
    within twice that many text words, goes on from halfway along the cheapest way there.  So the work grows
    with the sentence's length, not with its square."""
    m, n = len(alone), len(sounds)
    plan: list[tuple[int, int]] = []
    i = j = 0
    while i < m:
        if alone[i] and _exact(alone[i], sounds, j):
            plan.append((1, len(alone[i])))
            j += len(alone[i])
            i += 1
            continue
        stretch = _to_next_in_step(alone, sounds, i, j)
        if stretch is None:
            break
        plan += stretch
        i += sum(t for t, _ in stretch)
        j += sum(p for _, p in stretch)
    if (i, j) == (m, n):
        return plan
    # Nothing from here reaches the end (espeak said more at the end than the words read alone, say): pair
    # the rest again from further back, along the straight line to the end, twice as far back each time.
    back = 1
    while True:
        back = min(back, len(plan))
        kept = plan[:len(plan) - back]
        i0, j0 = sum(t for t, _ in kept), sum(p for _, p in kept)
        span = _straight(alone, sounds, i0, j0)
        if span is not None:
            return kept + span
        if back == len(plan):
            return None
        back *= 2


def _to_next_in_step(alone: list[list[str]], sounds: list[str], i0: int, j0: int) -> list[tuple[int, int]] | None:
    """The groups from text word ``i0`` and phoneme word ``j0`` (where they are not in step) to the next place
    where they are (see :func:`_pair_words`); ``None`` if none is reached."""
    m, n = len(alone), len(sounds)
    expected = [j0]

    def at(i: int) -> int:
        """Where text word ``i`` would start, were the words from ``i0`` on said as read alone."""
        while len(expected) <= i - i0:  # only as far as the search goes: the sentence may go on far beyond
            expected.append(expected[-1] + len(alone[i0 + len(expected) - 1]))
        return expected[i - i0]

    def band(i: int) -> range:
        return range(max(j0, at(i) - _REACH), min(n, at(i) + _REACH) + 1)

    def near(i: int, j: int) -> bool:
        return j0 <= j <= n and abs(j - at(i)) <= _REACH

    def in_step(i: int, j: int) -> bool:
        for k in range(i, min(i + _IN_STEP, m)):
            if not alone[k] or not _exact(alone[k], sounds, j):
                return False
            j += len(alone[k])
        return i + _IN_STEP <= m or j == n

    horizon = i0 + 2 * _REACH  # as far as words joined in pairs can fall _REACH phoneme words behind
    first = next((i for i in range(i0 + 1, min(m, horizon + 1)) if any(in_step(i, j) for j in band(i))), None)
    if first is None and horizon < m:
        # Not in step again before the horizon: take the cheapest way to it, keep its first half (the second
        # may still change with what lies past the horizon) and go on from there, the search following it.
        plan = _cheapest(alone, sounds, (i0, j0), lambda i, j: i <= horizon and near(i, j),
                         lambda i, j: i == horizon, lambda i, j: (i, abs(j - at(i))))
        if plan is None:
            return None
        keep = 1
        while keep < len(plan) and sum(texts for texts, _ in plan[:keep + 1]) <= _REACH:
            keep += 1
        return plan[:keep]
    first = m if first is None else first
    last = min(m, first + _LOOK_PAST)
    return _cheapest(alone, sounds, (i0, j0), lambda i, j: i <= last and near(i, j),
                     lambda i, j: i >= first and (in_step(i, j) if i < m else j == n),
                     lambda i, j: (i, abs(j - at(i))))


def _straight(alone: list[list[str]], sounds: list[str], i0: int, j0: int) -> list[tuple[int, int]] | None:
    """The groups from text word ``i0`` and phoneme word ``j0`` to the end of both, searched within
    :data:`_REACH` phoneme words of the straight line there; ``None`` if none is reached."""
    m, n = len(alone), len(sounds)
    di, dj = m - i0, n - j0
    if di == 0 or dj > sum(max(_MAX_SPLIT, len(words)) for words in alone[i0:]):
        return [] if (di, dj) == (0, 0) else None
    return _cheapest(alone, sounds, (i0, j0), lambda i, j: j0 <= j <= n and abs((j - j0) * di - (i - i0) * dj) <= _REACH * di,
                     lambda i, j: (i, j) == (m, n), lambda i, j: (i, 0))


def _cheapest(alone: list[list[str]], sounds: list[str], start: tuple[int, int], allowed: Callable[[int, int], bool],
              end: Callable[[int, int], bool], order: Callable[[int, int], tuple[int, int]]) -> list[tuple[int, int]] | None:
    """The groups of the least-cost pairing from cell ``start`` (text words, phoneme words paired so far) to a
    cell where ``end`` holds, through cells where ``allowed`` holds; of ends that cost the same, the first by
    ``order``.  ``None`` if no end is reached.

    A group costs how much its sounds differ (:func:`_differ`, weighted by the text words' length), plus a
    little per join and per count of phoneme words other than the text word's own.  The cells are settled
    cheapest first (Dijkstra), and a group's sounds are compared only once a bound on its cost (from the
    lengths alone: difflib's ratio is at most twice the shorter over the sum) comes up: groups that cannot
    beat the end found are never compared."""
    m, n = len(alone), len(sounds)
    moves = [(1, k) for k in range(_MAX_SPLIT + 1)] + [(k, 1) for k in _JOINS]
    settled: dict[tuple[int, int], tuple[int, int] | None] = {}  # cell -> the last group of its pairing
    count = itertools.count()  # keeps the heap from comparing what follows it
    # (cost, or a bound on it; order; count; cell; its last group; the cost before comparing that group's sounds,
    # for an entry that holds only the bound)
    heap: list[tuple[float, tuple[int, int], int, tuple[int, int], tuple[int, int] | None, float | None]] = [
        (0.0, order(*start), next(count), start, None, None)]
    while heap:
        cost, _, _, cell, group, before = heapq.heappop(heap)
        if cell in settled:
            continue
        i, j = cell
        if before is not None:  # only a bound: compare the group's sounds now
            assert group is not None
            texts, phonemes = group
            a = "".join("".join(words) for words in alone[i - texts:i])
            b = "".join(sounds[j - phonemes:j])
            heapq.heappush(heap, (before + _differ(a, b) * max(len(a), 1) / 4, order(i, j), next(count), cell, group, None))
            continue
        settled[cell] = group
        if end(i, j):
            plan: list[tuple[int, int]] = []
            while cell != start:
                last = settled[cell]
                assert last is not None
                plan.append(last)
                cell = (cell[0] - last[0], cell[1] - last[1])
            return plan[::-1]
        own = [(1, len(alone[i]))] if i < m and len(alone[i]) > _MAX_SPLIT else []  # a long number: all its words
        for texts, phonemes in moves + own:
            target = (i + texts, j + phonemes)
            if target[0] > m or target[1] > n or target in settled or not allowed(*target):
                continue
            extra = 0.2 * (texts - 1) if texts > 1 else (0.0 if phonemes == len(alone[i]) else 0.5)
            a = "".join("".join(words) for words in alone[i:i + texts])
            b = "".join(sounds[j:j + phonemes])
            heapq.heappush(heap, (cost + extra + _bound(a, b), order(*target), next(count), target, (texts, phonemes), cost + extra))
    return None


def _bound(a: str, b: str) -> float:
    """The least that the group costs for comparing ``a`` with ``b`` (:func:`_cheapest`)."""
    least = 1.0 - 2.0 * min(len(a), len(b)) / (len(a) + len(b)) if a or b else 0.0
    return least * max(len(a), 1) / 4


Frontend = CharFrontend | EspeakFrontend

FRONTENDS: dict[str, type[CharFrontend] | type[EspeakFrontend]] = {
    CharFrontend.name: CharFrontend,
    EspeakFrontend.name: EspeakFrontend,
}


def get_frontend(name: str, **options: Any) -> Frontend:
    """The front end registered as ``name``, built with ``options``; an unknown name or option is a TextError."""
    try:
        cls = FRONTENDS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(FRONTENDS))
        raise TextError(f"unknown text front end {name!r}; known front ends: {known}") from None
    try:
        return cls(**options)
    except TypeError as error:
        raise TextError(f"bad options for text front end {name!r}: {error}") from None


class TextPiece(Protocol):
    """A piece of a text that arrives a few words at a time (melstream.serving.text_in.Piece)."""

    @property
    def text(self) -> str: ...


def sentences_from(frontend: Frontend, pieces: Iterable[TextPiece]) -> Iterator[Sentence]:
    """The :class:`Sentence` s of a text that arrives in pieces, each as soon as it is complete: the same
    sentences (ids, words) as ``frontend.sentences`` of the pieces joined, read as they come.

    A sentence is complete once the text after it has begun: the front end's ``sentences`` of the text not yet
    spoken (normalised) is read until it makes a second sentence with a letter or digit in it (``.`` then
    ``..`` may still become one ``...``), and the first is spoken.  The front ends end a sentence where espeak-ng
    ends a clause (or, for characters, after ``. ? ! ; :`` and a space), and reading from such an end gives the
    same phonemes as reading through it (tests/integration/test_sentences_espeak.py), so the sentences are the
    whole text's.  When ``pieces`` ends, the rest is spoken (a flush: the caller ends ``pieces`` there).  The
    text's checks: too long (``max_chars`` for the whole text) at once; nothing to speak at the end, if nothing
    at all was spoken.
    """
    raw = ""
    done = 0  # characters of the normalised text already spoken
    spoke = False

    def speak(*, final: bool) -> Iterator[Sentence]:
        nonlocal done, spoke
        _checked(raw or " ", frontend.max_chars)  # too long: at once (empty is fine until the end)
        try:
            normalized = frontend.normalize(raw)
        except TextError:
            if final and not spoke:
                raise  # the whole text has nothing to speak: say so, as for a whole text
            return  # nothing speakable yet (or only a tail of punctuation)
        base, rest = done, normalized[done:]
        if not rest.strip():
            return
        held: Sentence | None = None
        held_end = 0  # where `held` ends in `rest`
        sentences = frontend.sentences(rest)  # normalising normalised text changes nothing
        try:
            for sentence in sentences:
                at = rest.find(sentence.text, held_end)
                # a sentence after it has begun (with a letter or digit: "." then ".." may still be one "..."): it
                # is complete
                if held is not None and any(char.isalnum() for char in sentence.text):
                    spoke = True
                    yield held
                    done = base + held_end
                if at < 0 and not final:  # cannot place it in the text: wait for the end
                    return
                if held is not None and not any(char.isalnum() for char in sentence.text):
                    if not final:
                        return  # only punctuation after it so far: wait for more
                    spoke = True
                    yield held  # the end: everything is spoken, as the front end made it
                held, held_end = sentence, (held_end if at < 0 else at + len(sentence.text))
        except TextError:
            if final and not spoke:
                raise
            return
        finally:
            getattr(sentences, "close", lambda: None)()  # a generator stopped early frees espeak at once
        if final and held is not None:
            spoke = True
            yield held
        if final:
            done = len(normalized)

    for piece in pieces:
        raw += piece.text
        yield from speak(final=False)
    yield from speak(final=True)
