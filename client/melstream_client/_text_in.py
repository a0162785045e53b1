"""A text stream over gRPC (the wire contract: :mod:`melstream_client.wire`, "Text in pieces"): the pieces go out
as requests of one sequence on one bidirectional stream while the audio comes back on the first request's
responses.  :class:`TextStream` is the plumbing shared by :meth:`Client.stream_text`'s iterator and its async
iterator."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional, Union

from melstream_client import wire
from melstream_client._errors import grpc_error
from melstream_client.errors import ClientError, ClientTimeoutError, InvalidInputError


class Flush:
    """The piece that asks the voice to speak the text sent so far now, even mid-sentence (``FLUSH``)."""

    def __repr__(self) -> str:
        return "FLUSH"


#: put it among the pieces: ``client.stream_text(["Let me think", FLUSH, " about it."], voice=...)``
FLUSH = Flush()

Piece = Union[str, Flush]


class TextStream:
    """One text stream's requests on one tritonclient stream client (started by the caller, its callback handing
    responses to :meth:`take`).  Not thread-safe beyond: one thread (or task) sends, another reads."""

    def __init__(self, grpc: Any, client: Any, *, voice: str, where: str, n_mels: int, pace: Optional[float],
                 chunk_frames: Optional[int], words: bool = False) -> None:
        self._g, self._client, self.voice, self.where, self.n_mels = grpc, client, voice, where, n_mels
        self.pace, self.chunk_frames, self.words = pace, chunk_frames, words
        self.sequence = wire.new_sequence_id()
        self.first_id = f"{self.sequence}-0"
        self.sent = 0  # requests sent
        self.ended = False  # the request with the end flag has gone
        self.finished = False  # the first request's final response has come (or an error ended the stream)
        self.last_activity = time.monotonic()  # a piece sent or a response received: the timeout runs from here
        self.awaiting_piece = False  # the sender waits for the caller's next piece (no timeout meanwhile)
        self._lock = threading.Lock()

    def send(self, piece: Piece, *, end: bool = False) -> None:
        """One request: a piece of text (or :data:`FLUSH`), the first with the start flag and the options."""
        if isinstance(piece, Flush):
            text, flush = "", True
        elif isinstance(piece, str):
            text, flush = piece, False
        else:
            raise InvalidInputError(f"voice {self.voice!r} at {self.where}: a text stream's pieces must be str (or "
                                    f"FLUSH), got {type(piece).__name__}")
        with self._lock:
            first = self.sent == 0
            try:
                tensors = wire.piece_tensors(text, flush=flush, pace=self.pace if first else None,
                                             chunk_frames=self.chunk_frames if first else None, words=first and self.words)
            except wire.WireError as e:
                raise InvalidInputError(f"voice {self.voice!r} at {self.where}: {e}") from None
            inputs = []
            for inp, value in tensors:
                t = self._g.InferInput(inp.name, list(value.shape), inp.datatype)
                t.set_data_from_numpy(value)
                inputs.append(t)
            self._client.async_stream_infer(self.voice, inputs, request_id=f"{self.sequence}-{self.sent}",
                                            sequence_id=self.sequence, sequence_start=first, sequence_end=end,
                                            enable_empty_final_response=True)
            self.sent += 1
            self.ended = self.ended or end
            self.last_activity = time.monotonic()

    def end(self) -> None:
        """The last request: no text, the end flag (the voice speaks what is left, then ends the stream)."""
        self.send("", end=True)

    def take(self, result: Any, error: Any) -> Optional[dict[str, Any]]:
        """One response from the stream's callback: the chunk it carries, if any; raises the stream's error
        (an error on any of its requests ends it)."""
        self.last_activity = time.monotonic()
        if error is not None:
            self.finished = True
            raise grpc_error(error, where=f"voice {self.voice!r} at {self.where}")
        response = result.get_response()
        final = response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param
        if response.id != self.first_id:  # a later piece's: its text was taken
            return None
        try:
            chunk = wire.decode_chunk({o.name: result.as_numpy(o.name) for o in response.outputs}, n_mels=self.n_mels)
        except wire.WireError as e:
            raise ClientError(f"voice {self.voice!r} at {self.where}: {e}") from None
        if final:
            self.finished = True
        return chunk

    def timed_out(self, timeout_s: float) -> Optional[ClientTimeoutError]:
        """The error to raise if nothing was sent or received for ``timeout_s`` (waiting on the caller's pieces
        does not count: a language model may think for a while), else None."""
        if not self.awaiting_piece and time.monotonic() - self.last_activity > timeout_s:
            return ClientTimeoutError(f"voice {self.voice!r} at {self.where}: no response within {timeout_s} s")
        return None
