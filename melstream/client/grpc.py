"""gRPC streaming client (tritonclient's bidirectional stream, one request per utterance)."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream.errors import ClientError

if TYPE_CHECKING:
    from melstream.addon import Addon
    from melstream.blocks import StreamablePipeline

DEFAULT_GRPC_URL = "localhost:8001"


def _text_inputs(g: Any, text: str, pace: float | None, chunk_frames: int | None) -> list[Any]:
    inp = g.InferInput("TEXT", [1], "BYTES")
    inp.set_data_from_numpy(np.array([text.encode("utf-8")], dtype=np.object_))
    inputs = [inp]
    if pace is not None:
        p = g.InferInput("PACE", [1], "FP32")
        p.set_data_from_numpy(np.array([pace], dtype=np.float32))
        inputs.append(p)
    if chunk_frames is not None:
        c = g.InferInput("CHUNK_FRAMES", [1], "INT32")
        c.set_data_from_numpy(np.array([chunk_frames], dtype=np.int32))
        inputs.append(c)
    return inputs


class Client:
    """A connection to a melstream server's gRPC endpoint.  Options are keyword-only; times in seconds."""

    def __init__(self, url: str = DEFAULT_GRPC_URL, *, timeout_s: float = 60.0) -> None:
        import tritonclient.grpc as grpcclient

        self.url = url
        self.timeout_s = timeout_s
        self._g = grpcclient
        try:
            self._client = grpcclient.InferenceServerClient(url)
        except Exception as e:
            raise ClientError(f"cannot connect to {url}: {e}") from e
        # tritonclient allows one open stream per client object and a new channel costs ~50 ms,
        # so idle stream clients are kept for the next utterance.
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _stream_client(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._g.InferenceServerClient(self.url)

    def _release(self, client: Any, *, reusable: bool) -> None:
        with self._lock:
            if reusable and len(self._idle) < 16:
                self._idle.append(client)
                return
        client.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the server serves -------------------------------------------------------------
    def voices(self) -> list[str]:
        """Names of the voices that can serve: a ready voice model (a model carrying an addon)
        whose network models are all ready too."""
        from melstream.addon import addon_from_json
        from melstream.runners.base import servable_voices

        try:
            index = self._client.get_model_repository_index(as_json=True).get("models", [])
            ready = {m["name"] for m in index if m.get("state") == "READY"}
            networks = {}
            for name in ready:
                params = self._client.get_model_config(name, as_json=True)["config"].get("parameters", {})
                if "addon_json" in params:
                    networks[name] = list(addon_from_json(params["addon_json"]["string_value"], source=f"voice {name!r}").networks)
            return servable_voices(ready, networks)
        except Exception as e:
            raise ClientError(f"cannot list voices at {self.url}: {e}") from e

    def addon_json(self, voice: str) -> str:
        """The addon JSON that the server's voice model carries in its config."""
        try:
            cfg = self._client.get_model_config(voice, as_json=True)["config"]
        except Exception as e:
            raise ClientError(f"voice {voice!r} at {self.url}: {e}") from e
        try:
            return str(cfg["parameters"]["addon_json"]["string_value"])
        except KeyError:
            raise ClientError(f"model {voice!r} at {self.url} is not a melstream voice (no addon_json parameter)") from None

    def addon(self, voice: str) -> Addon:
        from melstream.addon import addon_from_json

        return addon_from_json(self.addon_json(voice), source=f"voice {voice!r} at {self.url}")

    def remote_pipeline(self, voice: str) -> StreamablePipeline:
        """The voice's stack, rebuilt here, with networks running on the server's network models."""
        from melstream.runners.triton_remote import TritonRemoteRunner

        return self.addon(voice).build(TritonRemoteRunner(self.url, timeout_s=self.timeout_s))

    # --- streaming ----------------------------------------------------------------------------
    def stream(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
               timeout_s: float | None = None) -> Iterator[np.ndarray]:
        """Yield ``[frames, n_mels]`` float32 chunks as the server sends them.

        The iterator ends on the server's final response.  Closing it early (``break``, garbage
        collection) cancels the request on the server.  ``timeout_s`` bounds the wait for each
        chunk (default: the client's).
        """
        for chunk in self.stream_outputs(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s):
            yield chunk["mel"]

    def stream_outputs(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                       timeout_s: float | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Like :meth:`stream`, yielding ``{"mel": [frames, n_mels], "audio": [frames * hop]}`` per chunk
        (``audio`` only from voices whose stack ends in a vocoder)."""
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = self._stream_client()
        request_id = uuid.uuid4().hex
        finished = threading.Event()
        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            client.async_stream_infer(voice, _text_inputs(self._g, text, pace, chunk_frames), request_id=request_id,
                                      enable_empty_final_response=True)
            while True:
                try:
                    result, error = responses.get(timeout=wait_s)
                except queue.Empty:
                    raise ClientError(f"voice {voice!r} at {self.url}: no response within {wait_s} s") from None
                if error is not None:
                    raise ClientError(f"voice {voice!r} at {self.url}: {error.message() if hasattr(error, 'message') else error}")
                response = result.get_response()
                mel = result.as_numpy("MEL") if len(response.outputs) else None
                if mel is not None:
                    audio = result.as_numpy("AUDIO")
                    yield {"mel": mel} if audio is None else {"mel": mel, "audio": audio}
                if response.parameters["triton_final_response"].bool_param:
                    finished.set()
                    return
        except ClientError:
            raise
        except Exception as e:
            raise ClientError(f"voice {voice!r} at {self.url}: {e}") from e
        finally:
            clean = finished.is_set()
            try:
                # cancel_requests tells the server to stop work for a stream the caller abandoned
                client.stop_stream(cancel_requests=not clean)
            finally:
                self._release(client, reusable=clean)

    def synthesize(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                   timeout_s: float | None = None) -> np.ndarray:
        """The whole utterance ``[frames, n_mels]``: the concatenation of :meth:`stream`."""
        chunks = list(self.stream(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s))
        if not chunks:
            return np.zeros((0, 80), np.float32)
        return np.concatenate(chunks, axis=0)


def stream(text: str, *, voice: str, url: str = DEFAULT_GRPC_URL, pace: float | None = None,
           chunk_frames: int | None = None, timeout_s: float = 60.0) -> Iterator[np.ndarray]:
    """Module-level shortcut for :meth:`Client.stream`."""
    client = Client(url, timeout_s=timeout_s)
    try:
        yield from client.stream(text, voice=voice, pace=pace, chunk_frames=chunk_frames)
    finally:
        client.close()


def synthesize(text: str, *, voice: str, url: str = DEFAULT_GRPC_URL, pace: float | None = None,
               chunk_frames: int | None = None, timeout_s: float = 60.0) -> np.ndarray:
    """Module-level shortcut for :meth:`Client.synthesize`."""
    with Client(url, timeout_s=timeout_s) as client:
        return client.synthesize(text, voice=voice, pace=pace, chunk_frames=chunk_frames)
