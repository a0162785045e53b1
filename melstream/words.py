"""Word timestamps: which words a stream's chunks speak, and when.

A voice's chunks tell which text token each frame speaks: a duration-based voice's ``frame_tokens`` (its
Upsampler's, from the per-token durations, after any ``pace``), an attention voice's ``alignment`` rows (the
token each frame attends to most).  A front end tells which tokens make each word
(:class:`melstream.text.Word`, :meth:`melstream.blocks.TokenStream.words`).  :class:`WordClock` puts the two
together, chunk by chunk: ``(text, start_s, end_s)`` of each word once its speech is over, in seconds from the
start of the stream.  Frame ``j`` covers ``[j * frame_s, (j + 1) * frame_s)``, ``frame_s = hop / sample_rate``.

Rules (what :meth:`WordClock.feed` and :meth:`WordClock.finish` give, all chunks together):

* every word of the text exactly once, in order, ``start_s <= end_s``, each starting at or after the previous
  one's end (the frames' tokens are made monotonic: a running maximum, so an attention that looks back a
  token for a frame does not move time backwards);
* a word starts at its first frame and ends after its last one; frames of tokens between words (word
  boundaries, clause punctuation, pauses) belong to no word;
* a word spoken in 0 frames (its tokens have no frame: a high ``pace``, an attention that skips it) has
  ``start_s == end_s`` where the speech after it starts;
* the last word ends at the end of the audio (the frames after it are the text's closing pause);
* a word is complete once a frame of a later token has been made, or at the end of the stream; the text's
  last known word is held until a later word is known or the stream ends (it may be the last word).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["TimedWord", "WordClock", "frame_tokens"]

#: a word and its time: ``(text, start_s, end_s)``, seconds from the start of the stream
TimedWord = tuple[str, float, float]


def frame_tokens(chunk: dict[str, np.ndarray]) -> np.ndarray | None:
    """The token each of ``chunk``'s frames speaks, int64 ``[T_i]``: its ``frame_tokens``, else the argmax of its
    ``alignment`` rows; ``None`` if it carries neither."""
    tokens = chunk.get("frame_tokens")
    if tokens is not None:
        return np.asarray(tokens, np.int64)
    alignment = chunk.get("alignment")
    if alignment is not None:
        alignment = np.asarray(alignment)
        if alignment.shape[1:] == (0,):
            return np.zeros(len(alignment), np.int64)
        return np.argmax(alignment, axis=1).astype(np.int64)
    return None


class WordClock:
    """Word times from frames' tokens, fed chunk by chunk (rules in the module docstring).

    ``frame_s``: seconds per frame.  Tell it the words' token ranges with :meth:`add_words` (in order, as they
    become known; ``final=True`` once the text's last word is known), feed it each chunk's per-frame tokens
    with :meth:`feed` (the words that ended in that chunk), and call :meth:`finish` at the end of the stream
    (the rest, the last word ending at the end of the audio).
    """

    def __init__(self, frame_s: float, words: Iterable[tuple[str, int, int]] = (), *, final: bool = False) -> None:
        if not frame_s > 0:
            raise ValueError(f"frame_s must be positive, got {frame_s}")
        self.frame_s = float(frame_s)
        self.words: list[tuple[str, int, int]] = []
        self.final = False
        self.frames = 0  # frames fed so far
        self.token = -1  # the running maximum of the tokens fed
        self.next = 0  # the first word not yet closed
        self.first: int | None = None  # its first frame, once it has one
        self.last = 0  # its last frame so far (when `first` is set)
        self.closed: list[tuple[str, int, int]] = []  # closed words not yet given out: (text, start, end) frames
        self.given = 0  # words given out
        self.add_words(words, final=final)

    def add_words(self, words: Iterable[tuple[str, int, int]], *, final: bool = False) -> None:
        """More words, after those already known: ``(text, start, end)`` with tokens ``[start, end)`` (token
        positions in the whole text, not before the previous word's end).  ``final``: no more will come."""
        if self.final and not final:
            raise ValueError("the text's words were already complete")
        for text, start, end in words:
            if self.final:
                raise ValueError("the text's words were already complete")
            if end < start or (self.words and start < self.words[-1][2]):
                raise ValueError(f"word {text!r} tokens [{start}, {end}) overlap or precede the previous word's")
            self.words.append((text, int(start), int(end)))
        self.final = final

    @property
    def near_end(self) -> bool:
        """True when the stream may end with what is held: the text's words are all known, and the frames
        have reached the last one (or there are none).  Until then, :meth:`finish` can give nothing new."""
        if not self.final or self.given == len(self.words):
            return False
        return self.token >= self.words[-1][1] or self.next == len(self.words) - 1

    @property
    def pending(self) -> bool:
        """True when the text's words are all known and some are not given yet: :meth:`finish` may give them."""
        return self.final and self.given < len(self.words)

    def feed(self, tokens: np.ndarray) -> list[TimedWord]:
        """The next chunk's per-frame tokens ``[T_i]``; returns the words whose speech ended in it (or before,
        held until now)."""
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        if len(tokens):
            tokens = np.maximum.accumulate(np.maximum(tokens, self.token))
            # runs of one token: a few per word, so this loop is over tokens, not frames
            change = np.flatnonzero(np.diff(tokens)) + 1
            starts = np.concatenate(([0], change))
            ends = np.concatenate((change, [len(tokens)]))
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                self._run(int(tokens[a]), self.frames + a, self.frames + b)
            self.frames += len(tokens)
            self.token = int(tokens[-1])
        return self._give(hold=True)

    def finish(self) -> list[TimedWord]:
        """The stream has ended: every word not yet given, the last one ending at the end of the audio."""
        end = self.frames
        while self.next < len(self.words):
            self._close(end)
        if self.closed and self.given + len(self.closed) == len(self.words):
            text, start, _ = self.closed[-1]
            self.closed[-1] = (text, start, max(end, start))
        return self._give(hold=False)

    def _run(self, token: int, a: int, b: int) -> None:
        """Frames ``[a, b)`` all speak ``token``."""
        words = self.words
        while self.next < len(words) and token >= words[self.next][2]:  # past the word: it is over
            self._close(a)
        if self.next < len(words) and token >= words[self.next][1]:  # inside it
            if self.first is None:
                self.first = a
            self.last = b - 1

    def _close(self, at: int) -> None:
        """Close the next word; ``at``: the first frame after it (where a word without frames is placed)."""
        text = self.words[self.next][0]
        if self.first is None:
            self.closed.append((text, at, at))
        else:
            self.closed.append((text, self.first, self.last + 1))
        self.next += 1
        self.first = None

    def _give(self, *, hold: bool) -> list[TimedWord]:
        count = len(self.closed)
        if hold and count and self.given + count == len(self.words):
            count -= 1  # the last known word: the end of the audio may still be its end
        out = [(text, a * self.frame_s, b * self.frame_s) for text, a, b in self.closed[:count]]
        del self.closed[:count]
        self.given += count
        return out


def timed_words(frame_s: float, words: Sequence[tuple[str, int, int]], chunks: Iterable[np.ndarray]) -> list[list[TimedWord]]:
    """Every chunk's words for a whole stream at once: ``chunks`` the per-frame tokens of each chunk (the last
    list also gets what :meth:`WordClock.finish` gives)."""
    clock = WordClock(frame_s, words, final=True)
    out = [clock.feed(tokens) for tokens in chunks]
    rest = clock.finish()
    if out:
        out[-1] = out[-1] + rest
    elif rest:
        out.append(rest)
    return out
