"""gRPC streaming client (tritonclient's bidirectional stream, one request per utterance)."""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream import wire
from melstream.client._errors import grpc_error
from melstream.client._voices import VoiceDirectory
from melstream.errors import ClientError, ClientTimeoutError, InvalidInputError

if TYPE_CHECKING:
    from melstream.blocks import StreamablePipeline

DEFAULT_GRPC_URL = "localhost:8001"


class Client(VoiceDirectory):
    """A connection to a melstream server's gRPC endpoint.  Options are keyword-only; times in seconds.

    Failures are :class:`~melstream.errors.ClientError`\\ s carrying the server's message:
    :class:`~melstream.errors.UnknownVoiceError`, :class:`~melstream.errors.InvalidInputError`,
    :class:`~melstream.errors.ServerUnavailableError`, :class:`~melstream.errors.ClientTimeoutError`.
    """

    def __init__(self, url: str = DEFAULT_GRPC_URL, *, timeout_s: float = 60.0) -> None:
        import tritonclient.grpc as grpcclient

        super().__init__()
        self.url = self.where = url
        self.timeout_s = timeout_s
        self._g = grpcclient
        try:
            self._client = grpcclient.InferenceServerClient(url)
        except Exception as e:
            raise grpc_error(e, where=f"cannot connect to {url}") from e
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

    # --- what the server serves (the rest is VoiceDirectory's) ----------------------------------
    def _stats(self) -> Any:
        try:
            return self._client.get_inference_statistics(as_json=True, client_timeout=self.timeout_s)
        except Exception as e:
            raise grpc_error(e, where=f"cannot list voices at {self.url}") from e

    def _ready(self, model: str) -> bool:
        try:
            return bool(self._client.is_model_ready(model, client_timeout=self.timeout_s))
        except Exception as e:
            raise grpc_error(e, where=f"model {model!r} at {self.url}") from e

    def _config(self, model: str) -> dict[str, Any]:
        try:
            return dict(self._client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)["config"])
        except Exception as e:
            raise grpc_error(e, where=f"voice {model!r} at {self.url}") from e

    def remote_pipeline(self, voice: str) -> StreamablePipeline:
        """The voice's stack, rebuilt here, with networks running on the server's network models."""
        from melstream.runners.triton_remote import TritonRemoteRunner

        fixed = wire.fixed_shapes_from_config(self._config(voice))  # the server's profile decides the shapes
        return self.addon(voice).build(TritonRemoteRunner(self.url, timeout_s=self.timeout_s, fixed_shapes=fixed))

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
        where = f"voice {voice!r} at {self.url}"
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            tensors = wire.request_tensors(text, pace=pace, chunk_frames=chunk_frames)
        except wire.WireError as e:
            raise InvalidInputError(f"{where}: {e}") from None
        n_mels = self.spec(voice).audio.n_mels
        inputs = []
        for inp, value in tensors:
            t = self._g.InferInput(inp.name, list(value.shape), inp.datatype)
            t.set_data_from_numpy(value)
            inputs.append(t)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = self._stream_client()
        finished = False
        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            # if the stream has already failed, its error comes through the callback, read below
            with contextlib.suppress(self._g.InferenceServerException):
                client.async_stream_infer(voice, inputs, request_id=uuid.uuid4().hex, enable_empty_final_response=True)
            while True:
                try:
                    result, error = responses.get(timeout=wait_s)
                except queue.Empty:
                    raise ClientTimeoutError(f"{where}: no response within {wait_s} s") from None
                if error is not None:
                    # an error ends its request on the server (a voice sends it with the final flag; Triton's own
                    # refusals never start one): nothing to cancel, and the stream may carry the next request.
                    # Cancelling a request that has ended leaks it in Triton 2.51 (benchmarks/churn.py).
                    finished = True
                    raise grpc_error(error, where=where)
                response = result.get_response()
                try:
                    chunk = wire.decode_chunk({o.name: result.as_numpy(o.name) for o in response.outputs}, n_mels=n_mels)
                except wire.WireError as e:
                    raise ClientError(f"{where}: {e}") from None
                if chunk is not None:
                    yield chunk
                if response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param:
                    finished = True
                    return
        except ClientError:
            raise
        except Exception as e:
            raise grpc_error(e, where=where) from e
        finally:
            try:
                # cancel_requests tells the server to stop work for a stream the caller abandoned (closed early,
                # or no response within the timeout)
                client.stop_stream(cancel_requests=not finished)
            finally:
                self._release(client, reusable=finished)


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
