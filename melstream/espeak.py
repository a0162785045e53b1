"""A small ctypes binding to libespeak-ng: phonemes, audio and phoneme-aligned durations.

Nothing but the C library (``apt-get install espeak-ng``) is needed.  espeak-ng keeps global state and is
not thread-safe, so one process-wide :class:`Espeak` per voice is created lazily by :func:`get_espeak` and
every call into the library holds one module lock.  Use it from one process: do not fork a pool after it
(or torch) has been initialised.

Token conventions (:meth:`Espeak.phonemize`, the same sequence :meth:`Espeak.align` returns):

* one token per espeak phoneme, in espeak's ASCII mnemonics (``h``, ``@``, ``oU``, ``t#``, ``3:``, ...);
  a stressed vowel carries its stress mark as a prefix: ``'oU`` (primary), ``,i:`` (secondary);
* ``" "`` between two words of a clause (0 frames in :meth:`Espeak.align`);
* pauses espeak places inside a clause (brackets, quotes, dashes, between some words) are their own
  tokens: ``_:``, ``_!``, and espeak's short pause ``_`` renamed ``_s`` (``_`` is the front end's pad);
* every clause ends with one clause token naming the punctuation that ended it in brackets: ``[,]``
  ``[.]`` ``[?]`` ``[!]`` ``[;]`` ``[:]`` (brackets keep them apart from espeak's own ``;`` and ``?``
  phonemes).  The end of the text without punctuation is ``[.]`` (espeak speaks it as a full stop, and
  the training corpus only has punctuated sentences); ``[_]`` marks a clause espeak ended without
  punctuation before the end of the text (a clause split by length).  In :meth:`Espeak.align` a clause
  token covers the pause espeak speaks after the clause (often 0 frames at the very end of the text).

espeak-ng carries a little state from one utterance to the next: the same text synthesised twice in one
process can differ by a few to a few hundred samples (phoneme tokens never differ).  A fresh process
given the same sequence of texts reproduces its output exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from melstream.errors import TextError

__all__ = [
    "CLAUSE_TOKENS", "HOP_LENGTH", "LONG_SENTENCE", "SHORT_PAUSE", "STRESS_MARKS", "WORD_BOUNDARY", "Espeak", "get_espeak",
    "split_stress",
]

log = logging.getLogger(__name__)

HOP_LENGTH = 256
WORD_BOUNDARY = " "
CLAUSE_END = "[_]"
SHORT_PAUSE = "_s"
_EVENT_OF_TOKEN = {SHORT_PAUSE: "_"}
_TOKEN_OF_EVENT = {"_": SHORT_PAUSE}
CLAUSE_TOKENS = ("[,]", "[.]", "[?]", "[!]", "[;]", "[:]", CLAUSE_END)
STRESS_MARKS = "',"
_LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so", "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1")

# espeak_AUDIO_OUTPUT / flags / event types (speak_lib.h, espeak-ng 1.51)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PHONEME_SEPARATOR = ord("|")
# a clause ends where espeak's text pointer stopped, less its one character of lookahead
_TERMINATOR_RE = re.compile(r"([,.?!;:])[\s\"'\)\]\}]*\S?\Z")
_TERMINATOR_FINAL_RE = re.compile(r"([,.?!;:])[\s\"'\)\]\}]*\Z")
#: clause tokens after which a sentence (a unit of :meth:`Espeak.sentences`) ends
_SENTENCE_ENDS = frozenset({"[.]", "[?]", "[!]", "[;]", "[:]", CLAUSE_END})
#: a sentence of :meth:`Espeak.sentences` also ends at a comma once it is this many bytes long
LONG_SENTENCE = 200
_LEADING_PAUSE_RE = re.compile(r"^(_[:!]?)(?=[^:!])")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_LOCK = threading.RLock()
_LIB: Any = None
_SAMPLE_RATE = 0
_INSTANCES: dict[str, Espeak] = {}
_SELECTED: list[str] = []  # the voice espeak has now (selecting one costs ~0.1 ms: once per sentence adds up)


def _load() -> tuple[Any, int]:
    """Load and initialise libespeak-ng once per process (call with ``_LOCK`` held)."""
    global _LIB, _SAMPLE_RATE
    if _LIB is not None:
        return _LIB, _SAMPLE_RATE
    names = list(_LIBRARY_NAMES)
    found = ctypes.util.find_library("espeak-ng")
    if found:
        names.insert(0, found)
    lib = None
    errors = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as error:
            errors.append(str(error))
    if lib is None:
        raise TextError(f"cannot load libespeak-ng ({'; '.join(errors[:2])}); install espeak-ng: apt-get install espeak-ng")
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    lib.espeak_Synchronize.restype = ctypes.c_int
    sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
    if sample_rate <= 0:
        raise TextError(f"espeak_Initialize failed ({sample_rate}); install espeak-ng: apt-get install espeak-ng")
    _LIB, _SAMPLE_RATE = lib, sample_rate
    return lib, sample_rate


def split_stress(token: str) -> tuple[str, str]:
    """``"'oU"`` -> ``("'", "oU")``; a token without a stress mark -> ``("", token)``."""
    if len(token) > 1 and token[0] in STRESS_MARKS:
        return token[0], token[1:]
    return "", token


def _is_pause(name: str) -> bool:
    return name.startswith("_")


class Espeak:
    """One espeak-ng voice; use :func:`get_espeak`.  Every method holds the process-wide espeak lock."""

    def __init__(self, voice: str = "en-us") -> None:
        with _LOCK:
            self._lib, self.sample_rate = _load()
        self.voice = voice
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[str, int]] = []
        self._words: list[tuple[int, int, int, int]] = []  # word events: (character, length, sample, phonemes before it)
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: espeak calls it from C

    def __repr__(self) -> str:
        return f"Espeak(voice={self.voice!r}, sample_rate={self.sample_rate})"

    def _select(self) -> None:
        if _SELECTED != [self.voice]:
            _SELECTED.clear()
            if self._lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise TextError(f"espeak-ng has no voice {self.voice!r}")
            _SELECTED.append(self.voice)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: Any, n_samples: int, events: Any) -> int:
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                self._events.append((event.id.string.decode("utf-8", "replace"), int(event.sample)))
            elif event.type == _EVENT_WORD:
                self._words.append((int(event.text_position), int(event.length), int(event.sample), len(self._events)))
            i += 1
        return 0

    # ------------------------------------------------------------------------------------------ text

    def clauses(self, text: str) -> list[tuple[list[list[str]], str]]:
        """``text`` as espeak's clauses: ``(words, terminator)``, each word a list of phoneme tokens."""
        raw = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(raw)
        base = ctypes.addressof(buffer)
        pointer = ctypes.c_void_p(base)
        out: list[tuple[list[list[str]], str]] = []
        previous = 0
        with _LOCK:
            self._select()
            while pointer.value:
                words, terminator, consumed, previous = self._next_clause(pointer, base, raw, previous)
                if words:
                    out.append((words, terminator))
            self._drain()  # a text ending in ".." leaves espeak one "." for the next caller
        return out

    def _next_clause(self, pointer: ctypes.c_void_p, base: int, raw: bytes,
                     previous: int) -> tuple[list[list[str]], str, str, int]:
        """One clause of espeak's pass over ``raw`` (its buffer at ``base``; ``pointer`` moves on): its words,
        its terminator, the text it consumed, and the byte where the next clause starts."""
        result = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_SEPARATOR << 8)
        end = pointer.value - base if pointer.value else len(raw)
        consumed = raw[previous:end].decode("utf-8", "ignore")
        terminator = self._terminator(consumed, more=bool(pointer.value))
        words = [self._split_word(word) for word in (result or b"").decode("utf-8", "replace").split()]
        return [word for word in words if word], terminator, consumed, end

    def sentences(self, text: str) -> Iterator[tuple[str, list[tuple[list[list[str]], str]]]]:
        """``text`` a sentence at a time, lazily: ``(sentence_text, clauses)``, ``clauses`` as :meth:`clauses`
        gives them.  Concatenated, the clauses are exactly :meth:`clauses` (``text``).

        A sentence ends at a clause that espeak ended at ``.``, ``?``, ``!``, ``;`` or ``:`` or split by length,
        and at one it ended at ``,`` once the sentence is :data:`LONG_SENTENCE` bytes long (so that the first
        words of a long sentence need not wait for all of it: reading from a comma gives the same phonemes as
        reading through it, tests/integration/test_sentences_espeak.py).

        espeak reads one character past a clause's end and keeps it (its ``ungot_char``) for the next clause;
        each sentence is therefore read by a fresh pass over the rest of the text that starts at that character,
        and the pass that stops early reads that kept character away (:meth:`_drain`) before the lock is let go,
        so no other caller (another stream in this process) and no later sentence finds it.  The lock is held
        only while one sentence is read: other streams' sentences interleave with this text's."""
        raw = text.encode("utf-8")
        start = 0
        while start < len(raw):
            with _LOCK:
                self._select()
                clauses, end = self._read_sentence(raw, start)
            piece = raw[start:end].decode("utf-8", "ignore").strip()
            start = end
            if clauses:
                yield piece, clauses

    def _read_sentence(self, raw: bytes, start: int) -> tuple[list[tuple[list[list[str]], str]], int]:
        """The clauses of the sentence that starts at byte ``start`` of ``raw``, and the byte where the next
        sentence starts (``len(raw)`` at the end); call with ``_LOCK`` held and the voice selected."""
        rest = raw[start:]
        buffer = ctypes.create_string_buffer(rest)
        base = ctypes.addressof(buffer)
        pointer = ctypes.c_void_p(base)
        out: list[tuple[list[list[str]], str]] = []
        previous = 0
        while pointer.value:
            words, terminator, consumed, end = self._next_clause(pointer, base, rest, previous)
            previous = end
            if words:
                out.append((words, terminator))
            if pointer.value and consumed and (terminator in _SENTENCE_ENDS or (terminator == "[,]" and end >= LONG_SENTENCE)):
                # the clause's last character is espeak's one character of lookahead: the next sentence starts there
                self._drain()
                return out, start + end - len(consumed[-1].encode("utf-8"))
        self._drain()  # espeak may keep a character even at the end of its text (after ".."): read it away
        return out, len(raw)

    def _drain(self) -> None:
        """Read away the character espeak kept from a pass that stopped before the end of its text."""
        buffer = ctypes.create_string_buffer(b"")
        pointer = ctypes.c_void_p(ctypes.addressof(buffer))
        self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_SEPARATOR << 8)

    @staticmethod
    def _terminator(consumed: str, *, more: bool) -> str:
        pattern = _TERMINATOR_RE if more else _TERMINATOR_FINAL_RE
        match = pattern.search(consumed)
        return f"[{match.group(1)}]" if match else (CLAUSE_END if more else "[.]")

    @staticmethod
    def _split_word(word: str) -> list[str]:
        tokens: list[str] = []
        for piece in word.split("|"):
            while True:  # espeak glues a leading pause to the next phoneme: "_:D"
                match = _LEADING_PAUSE_RE.match(piece)
                if not match:
                    break
                tokens.append(_TOKEN_OF_EVENT.get(match.group(1), match.group(1)))
                piece = piece[match.end() :]
            if piece:
                tokens.append(_TOKEN_OF_EVENT.get(piece, piece))
        return tokens

    def phonemize(self, text: str) -> list[str]:
        """The token sequence of ``text`` (conventions in the module docstring)."""
        tokens: list[str] = []
        for words, terminator in self.clauses(text):
            for i, word in enumerate(words):
                if i:
                    tokens.append(WORD_BOUNDARY)
                tokens.extend(word)
            tokens.append(terminator)
        return tokens

    # ----------------------------------------------------------------------------------------- audio

    def synthesize(self, text: str) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """float32 audio in [-1, 1] at :attr:`sample_rate` and the phoneme events ``(mnemonic, start_sample)``."""
        raw = text.encode("utf-8") + b"\0"
        with _LOCK:
            self._select()
            self._chunks, self._events = [], []
            try:
                status = self._lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                self._lib.espeak_Synchronize()
                self._drain()  # what espeak kept of this text (after "..") must not reach the next text's phonemes
                if status != 0:
                    raise TextError(f"espeak_Synth failed with status {status}")
                chunks, events = self._chunks, self._events
            finally:
                self._chunks, self._events = [], []
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return (audio.astype(np.float32) / 32768.0), events

    def synthesize_words(self, text: str) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
        """:meth:`synthesize` (``text``)'s audio and espeak's own word times: ``(word, start_sample, end_sample)``
        for each of its word events, ``word`` the text it names (espeak names a number read as several words
        by pieces of it: ``$``, ``3.50``, ``.50``...).  A word starts at its event and ends where the next sound
        after its last phoneme starts (a pause, or the next word), at the latest where the next word's event is;
        the last word ends at the end of the audio."""
        with _LOCK:
            self._words = []
            try:
                audio, events = self.synthesize(text)
                marks = self._words
            finally:
                self._words = []
        raw = text.encode("utf-8")
        out: list[tuple[str, int, int]] = []
        for i, (position, length, sample, first) in enumerate(marks):
            # text_position counts characters from 1 (UTF-8 input: characters, not bytes)
            word = text[position - 1:position - 1 + length] if raw.isascii() else text[position - 1:][:length]
            after = marks[i + 1][3] if i + 1 < len(marks) else len(events)
            sounds = [k for k in range(first, after) if not _is_pause(events[k][0])]
            if i + 1 == len(marks):
                end = len(audio)
            elif sounds and sounds[-1] + 1 < len(events):
                end = events[sounds[-1] + 1][1]
            else:
                end = marks[i + 1][2]
            if i + 1 < len(marks):
                end = min(end, marks[i + 1][2])  # the next word's event can come before the sound after this one
            out.append((word.strip(), sample, max(end, sample)))
        return audio, out

    def align(self, text: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(audio, tokens, durations)``: tokens == :meth:`phonemize` (``text``), durations int64 frames per
        token on the hop-256 grid of :func:`melstream.audio.log_mel` (``T = len(audio) // 256``), summing to T.

        Raises ValueError when the synthesis events cannot be matched to the tokens, three times in a row:
        espeak-ng carries state from one utterance to the next and has been seen, rarely, to start an
        utterance's events out of step; speaking it again gives matching events."""
        for attempt in range(3):
            try:
                return self._align_once(text)
            except ValueError:
                if attempt == 2:
                    raise
                log.debug("espeak events out of step for %r; speaking it again", text)
        raise AssertionError("unreachable")

    def _align_once(self, text: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        with _LOCK:
            tokens = self.phonemize(text)
            audio, events = self.synthesize(text)
        n_frames = len(audio) // HOP_LENGTH
        starts: list[int | None] = [None] * len(tokens)
        e = 0
        for t, token in enumerate(tokens):
            if token == WORD_BOUNDARY:
                continue
            if token in CLAUSE_TOKENS:
                # the clause's pause: events named "_..." up to and including the first plain "_"
                if e < len(events) and _is_pause(events[e][0]):
                    starts[t] = events[e][1]
                    while e < len(events) and _is_pause(events[e][0]):
                        e += 1
                        if events[e - 1][0] == "_":
                            break
                continue
            name = _EVENT_OF_TOKEN.get(token, split_stress(token)[1])
            if e >= len(events) or events[e][0] != name:
                got = events[e][0] if e < len(events) else "end of events"
                raise ValueError(f"espeak events do not match phonemes at token {t} {token!r}: got {got!r} for {text!r}")
            starts[t] = events[e][1]
            e += 1
        if e != len(events):
            raise ValueError(f"{len(events) - e} espeak events left over after the last token for {text!r}")
        # tokens without an event (word boundaries, a clause without a pause) start where the next one starts
        filled = np.empty(len(tokens), np.int64)
        following = len(audio)
        for t in range(len(tokens) - 1, -1, -1):
            start = starts[t]
            following = following if start is None else min(start, following)
            filled[t] = following
        bounds = np.clip(np.rint(filled / HOP_LENGTH).astype(np.int64), 0, n_frames)
        if len(bounds):
            bounds[0] = 0
        bounds = np.maximum.accumulate(bounds)
        durations = np.diff(np.append(bounds, n_frames)).astype(np.int64)
        return audio, tokens, durations


def get_espeak(voice: str = "en-us") -> Espeak:
    """The process-wide :class:`Espeak` for ``voice`` (created, and libespeak-ng loaded, on first use)."""
    with _LOCK:
        instance = _INSTANCES.get(voice)
        if instance is None:
            instance = _INSTANCES[voice] = Espeak(voice)
        return instance
