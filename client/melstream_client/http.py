"""HTTP client: ``POST /v2/models/<voice>/generate_stream``, responses as server-sent events."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream_client import wire
from melstream_client._errors import client_error
from melstream_client._voices import VoiceDirectory
from melstream_client.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerUnavailableError,
)

if TYPE_CHECKING:
    pass

DEFAULT_HTTP_URL = "localhost:8000"


class HttpClient(VoiceDirectory):
    """Streams mel chunks over Triton's HTTP generate_stream (SSE).  Times in seconds, keyword-only.

    Failures are :class:`~melstream_client.errors.ClientError`\\ s carrying the server's message (Triton's
    ``{"error": "..."}``): :class:`~melstream_client.errors.UnknownVoiceError`, :class:`~melstream_client.errors.InvalidInputError`,
    :class:`~melstream_client.errors.ServerUnavailableError`, :class:`~melstream_client.errors.ClientTimeoutError`.
    A voice's ``n_mels`` comes from its config (the addon's ``audio.n_mels``), read once per voice.
    """

    def __init__(self, url: str = DEFAULT_HTTP_URL, *, timeout_s: float = 60.0) -> None:
        super().__init__()
        self.url = url.removeprefix("http://").rstrip("/")
        self.where = f"http://{self.url}"
        self.timeout_s = timeout_s

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        host, _, port = self.url.partition(":")
        return http.client.HTTPConnection(host, int(port or 80), timeout=timeout_s)

    def _request(self, method: str, path: str, *, where: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request's status and body; no answer raises the typed error."""
        conn = self._connection(self.timeout_s)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        except TimeoutError as e:
            raise ClientTimeoutError(f"{where}: no response within {self.timeout_s} s") from e
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnavailableError(f"{where}: {type(e).__name__}: {e}") from e
        finally:
            conn.close()

    def _json(self, method: str, path: str, *, where: str, body: bytes | None = None) -> Any:
        """The JSON answer of one request; an error status raises the typed error with Triton's message."""
        status, data = self._request(method, path, where=where, body=body)
        if status != 200:
            raise client_error(wire.http_error_message(status, data), where=where, http_status=status)
        try:
            return json.loads(data)
        except ValueError as e:
            raise ClientError(f"{where}: the answer is not JSON: {data[:80]!r}") from e

    # --- what the server serves (the rest is VoiceDirectory's) ----------------------------------
    def _stats(self) -> Any:
        return self._json("GET", wire.MODEL_STATS_PATH, where=f"cannot list voices at {self.where}")

    def _ready(self, model: str) -> bool:
        status, _ = self._request("GET", wire.model_ready_path(model), where=f"model {model!r} at {self.where}")
        return status == 200  # Triton answers 400 for a model that is not ready (or not loaded any more)

    def _config(self, model: str) -> dict[str, Any]:
        return dict(self._json("GET", wire.model_config_path(model), where=f"voice {model!r} at {self.where}"))

    # --- streaming ----------------------------------------------------------------------------
    def stream(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
               timeout_s: float | None = None) -> Iterator[np.ndarray]:
        """Yield ``[frames, n_mels]`` float32 chunks as events arrive; closing it closes the connection.
        ``timeout_s`` bounds each wait for the server (default: the client's)."""
        for chunk in self.stream_outputs(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s):
            yield chunk["mel"]

    def stream_outputs(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                       words: bool = False, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Like :meth:`stream`, yielding ``{"mel": ..., "audio": ...}`` (``audio`` if the voice makes audio; with
        ``words``, ``"words"``: the :class:`~melstream_client.wire.Word` s whose speech ends in the chunk)."""
        where = f"voice {voice!r} at http://{self.url}"
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            body = wire.request_json(text, pace=pace, chunk_frames=chunk_frames, words=words)
        except wire.WireError as e:
            raise InvalidInputError(f"{where}: {e}") from None
        n_mels = self.spec(voice).audio.n_mels
        conn = self._connection(wait_s)
        try:
            conn.request("POST", wire.generate_stream_path(voice), body=body, headers=wire.GENERATE_STREAM_HEADERS)
            resp = conn.getresponse()
            if resp.status != 200:
                raise client_error(wire.http_error_message(resp.status, resp.read()), where=where, http_status=resp.status)
            for event in wire.sse_events(resp):
                error = wire.event_error(event)
                if error is not None:
                    raise client_error(error, where=where)
                chunk = wire.decode_chunk(event, n_mels=n_mels)
                if chunk is not None:
                    yield chunk
            # Triton streams the events chunked and ends the body with its last chunk after the final response;
            # a body cut off (the server died mid-utterance) ends the events silently, and http.client then has
            # a chunk length still pending instead of None: a truncated utterance must not pass as a whole one
            if resp.chunked and resp.chunk_left is not None:
                raise ServerUnavailableError(f"{where}: the stream was cut off before its end (the server went away "
                                             "mid-utterance)")
        except TimeoutError as e:
            raise ClientTimeoutError(f"{where}: no response within {wait_s} s") from e
        except (OSError, http.client.HTTPException) as e:
            raise ServerUnavailableError(f"{where}: {type(e).__name__}: {e}") from e
        except wire.WireError as e:
            raise ClientError(f"{where}: {e}") from e
        finally:
            conn.close()
