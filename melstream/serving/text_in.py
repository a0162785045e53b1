"""Text in pieces: the text of one text stream as its requests bring it (the wire contract: melstream_client.wire).

The voice model's ``execute`` puts each piece into the stream's :class:`TextFeed` (:meth:`TextFeed.put`,
:meth:`TextFeed.close` on the last); the stream's own thread reads them in order, blocking until the next one
comes, and its front end makes sentences of them as soon as each is complete (melstream.text.sentences_from).
A flush ends an utterance (:meth:`TextFeed.utterance`): the text so far is spoken as if it ended there, and the
next piece starts the stream's next utterance, spoken on the same responses (:func:`utterances`).
While it waits for text the thread gives its compute slot up (melstream.runners.schedule.waiting): a listener
waiting on a language model must not hold up the streams that have text.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from melstream.errors import InputError
from melstream.runners.schedule import waiting
from melstream_client import wire

#: how often a thread waiting for text looks whether its stream was cancelled
CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class Piece:
    """One request's text, and whether it asked for what has come so far to be spoken now."""

    text: str
    flush: bool = False


class TextIdleError(InputError):
    """A text stream's next piece did not come in time."""


class TextFeed:
    """The pieces of one text stream, in the order their requests arrived."""

    def __init__(self, *, idle_timeout_s: float = wire.TEXT_IDLE_TIMEOUT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._clock = clock
        self._pieces: deque[Piece] = deque()
        self._closed = False
        self._cond = threading.Condition()
        self.received = 0  # pieces put, the first included

    def put(self, text: str, *, flush: bool = False) -> None:
        """Append one piece (from ``execute``).  Refused once the stream has been closed."""
        with self._cond:
            if self._closed:
                raise InputError("this text stream has ended (its last piece carried sequence_end); start a new one")
            self._pieces.append(Piece(text, flush))
            self.received += 1
            self._cond.notify_all()

    def close(self) -> None:
        """No more pieces: what is left is spoken, and the stream ends."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def pieces(self, *, stop: Callable[[], bool] = lambda: False) -> Iterator[Piece]:
        """Each piece as it comes, until the stream is closed (or ``stop()`` says the stream is over: then it
        just ends).  Waits at most ``idle_timeout_s`` for a piece: :class:`TextIdleError`."""
        while True:
            piece = self._next()
            if piece is None:
                # no compute slot held while the language model writes (and the slot is taken back outside the
                # lock, so that execute's put never waits for one)
                with waiting():
                    piece = self._wait(stop)
            if piece is None:
                return
            yield piece

    def utterance(self, *, stop: Callable[[], bool] = lambda: False) -> Iterator[Piece]:
        """The pieces of the next utterance: up to and with the next piece that asks to flush, or to the end."""
        for piece in self.pieces(stop=stop):
            yield piece
            if piece.flush:
                return

    @property
    def exhausted(self) -> bool:
        """Closed, and every piece read."""
        with self._cond:
            return self._closed and not self._pieces

    def _next(self) -> Piece | None:
        with self._cond:
            return self._pieces.popleft() if self._pieces else None

    def _wait(self, stop: Callable[[], bool]) -> Piece | None:
        """The next piece, once it comes; None when the stream is closed and read, or ``stop()``."""
        since = self._clock()
        with self._cond:
            while not self._pieces:
                if self._closed or stop():
                    return None
                if self._clock() - since > self.idle_timeout_s:
                    raise TextIdleError(f"no text for {self.idle_timeout_s:g} s: a text stream's pieces must keep coming, "
                                        "and its last must carry sequence_end")
                self._cond.wait(CANCEL_POLL_S)  # woken by put/close at once; the poll is for stop()
            return self._pieces.popleft()


def utterances(speak: Callable[[Iterator[Piece]], Iterator[dict[str, np.ndarray]]], feed: TextFeed, *,
               stop: Callable[[], bool] = lambda: False) -> Iterator[dict[str, np.ndarray]]:
    """The chunks of a text stream: ``speak`` (a pipeline's ``stream_outputs`` with the request's options) of each
    utterance of ``feed`` in turn, until the feed is closed and read.  An utterance after the first with nothing
    to speak in it (a flush right after a flush, or the end right after one) is passed over; a stream with
    nothing to speak at all is refused as a whole text would be."""
    spoken = False
    while not feed.exhausted and not stop():
        texts: list[str] = []
        try:
            for chunk in speak(_recorded(feed.utterance(stop=stop), texts)):
                spoken = True
                yield chunk
        except InputError:
            if not spoken or any(char.isalnum() for char in "".join(texts)):
                raise


def _recorded(pieces: Iterator[Piece], texts: list[str]) -> Iterator[Piece]:
    """``pieces``, each one's text noted in ``texts`` as it passes."""
    for piece in pieces:
        texts.append(piece.text)
        yield piece
