"""HTTP client: ``POST /v2/models/<voice>/generate_stream``, responses as server-sent events."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from melstream.errors import ClientError

if TYPE_CHECKING:
    from melstream.addon import Addon

DEFAULT_HTTP_URL = "localhost:8000"


class HttpClient:
    """Streams mel chunks over Triton's HTTP generate_stream (SSE).  Times in seconds, keyword-only."""

    def __init__(self, url: str = DEFAULT_HTTP_URL, *, timeout_s: float = 60.0, n_mels: int = 80) -> None:
        self.url = url.removeprefix("http://")
        self.timeout_s = timeout_s
        self.n_mels = n_mels

    def addon(self, voice: str) -> Addon:
        """The voice's addon, rebuilt from the JSON in its model config (``GET /v2/models/<voice>/config``)."""
        from melstream.addon import addon_from_json

        host, _, port = self.url.partition(":")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=self.timeout_s)
        try:
            conn.request("GET", f"/v2/models/{voice}/config")
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            raise ClientError(f"voice {voice!r} at http://{self.url}: {e}") from e
        finally:
            conn.close()
        if resp.status != 200:
            raise ClientError(f"voice {voice!r} at http://{self.url}: HTTP {resp.status}: {body[:200]!r}")
        try:
            text = json.loads(body)["parameters"]["addon_json"]["string_value"]
        except (KeyError, json.JSONDecodeError):
            raise ClientError(f"model {voice!r} at http://{self.url} is not a melstream voice (no addon_json parameter)") from None
        return addon_from_json(text, source=f"voice {voice!r} at http://{self.url}")

    def stream(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
               timeout_s: float | None = None) -> Iterator[np.ndarray]:
        """Yield ``[frames, n_mels]`` float32 chunks as events arrive; closing it closes the connection."""
        for chunk in self.stream_outputs(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s):
            yield chunk["mel"]

    def stream_outputs(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                       timeout_s: float | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Like :meth:`stream`, yielding ``{"mel": ..., "audio": ...}`` (``audio`` if the voice makes audio)."""
        body: dict[str, object] = {"TEXT": text}
        if pace is not None:
            body["PACE"] = pace
        if chunk_frames is not None:
            body["CHUNK_FRAMES"] = chunk_frames
        host, _, port = self.url.partition(":")
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=self.timeout_s if timeout_s is None else timeout_s)
        try:
            try:
                conn.request("POST", f"/v2/models/{voice}/generate_stream", body=json.dumps(body),
                             headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
                resp = conn.getresponse()
            except OSError as e:
                raise ClientError(f"voice {voice!r} at http://{self.url}: {e}") from e
            for event in _events(resp):
                if "error" in event:
                    raise ClientError(f"voice {voice!r} at http://{self.url}: {event['error']}")
                if "MEL" in event:
                    chunk = {"mel": np.asarray(event["MEL"], dtype=np.float32).reshape(-1, self.n_mels)}
                    if "AUDIO" in event:
                        chunk["audio"] = np.asarray(event["AUDIO"], dtype=np.float32).reshape(-1)
                    yield chunk
            if resp.status != 200:
                raise ClientError(f"voice {voice!r} at http://{self.url}: HTTP {resp.status} {resp.reason}")
        finally:
            conn.close()

    def synthesize(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                   timeout_s: float | None = None) -> np.ndarray:
        chunks = list(self.stream(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_mels), np.float32)


def _events(resp: http.client.HTTPResponse) -> Iterator[dict[str, object]]:
    """Parse an SSE body into JSON events (``data: {...}`` lines; other fields ignored)."""
    data: list[str] = []
    while True:
        line = resp.readline()
        if not line:
            break
        text = line.decode("utf-8").rstrip("\r\n")
        if text.startswith("data:"):
            data.append(text[5:].lstrip())
        elif text == "" and data:
            yield _parse("\n".join(data))
            data = []
    if data:
        yield _parse("\n".join(data))


def _parse(payload: str) -> dict[str, object]:
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as e:
        raise ClientError(f"malformed server-sent event: {payload[:80]!r}") from e
    if not isinstance(event, dict):
        raise ClientError(f"unexpected server-sent event: {payload[:80]!r}")
    return event
