"""gRPC streaming client (tritonclient's bidirectional stream, one request per utterance), over one server or
several replicas of it."""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np

from melstream_client import wire
from melstream_client._balance import RoundRobin, is_balanced_target, is_retryable, parse_targets
from melstream_client._errors import grpc_error
from melstream_client._text_in import Piece, TextStream
from melstream_client._voices import VoiceDirectory, server_side
from melstream_client.errors import ClientError, ClientTimeoutError, InvalidInputError, ServerUnavailableError

if TYPE_CHECKING:
    from melstream.blocks import StreamablePipeline

DEFAULT_GRPC_URL = "localhost:8001"
#: idle stream clients kept per replica (tritonclient allows one open stream per client object)
MAX_IDLE_STREAM_CLIENTS = 16

T = TypeVar("T")


class _Replica:
    """One server address: a client for metadata calls and a pool of idle stream clients."""

    def __init__(self, url: str, connect: Callable[[str], Any]) -> None:
        self.url = url
        self._connect = connect
        self.client = connect(url)
        # a new channel costs ~50 ms, so idle stream clients are kept for the next utterance
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def stream_client(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect(self.url)

    def release(self, client: Any, *, reusable: bool) -> None:
        with self._lock:
            if reusable and len(self._idle) < MAX_IDLE_STREAM_CLIENTS:
                self._idle.append(client)
                return
        client.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()
        self.client.close()


class Client(VoiceDirectory):
    """A connection to a melstream server's gRPC endpoint, or to several replicas of one.  Options are
    keyword-only; times in seconds.

    ``url`` is a ``"host:port"``, several of them (a list, or one string with commas:
    ``"tts1:8001,tts2:8001"``), or a gRPC target that resolves to several addresses (``"dns:///tts:8001"``).
    Over several addresses new streams go round robin, one replica after the other; metadata (voices, specs,
    readiness) comes from the first replica that answers.  A ``dns:///`` target is one channel whose calls gRPC
    itself balances round robin over the resolved addresses: each stream is one call, so it stays on one
    replica for its life.

    A stream refused before its first chunk by a replica that cannot take it (unreachable, being reloaded,
    busy: :class:`~melstream_client.errors.ServerUnavailableError`) is tried on the next replica, each at most once,
    up to ``retries`` times (default: every other replica).  Once a chunk has reached the caller a failure is
    raised, never retried: the caller would hear the start of the utterance twice.  A ``dns:///`` target counts
    as one replica here (gRPC's round robin itself sends calls only to the addresses it is connected to).

    Failures are :class:`~melstream_client.errors.ClientError`\\ s carrying the server's message:
    :class:`~melstream_client.errors.UnknownVoiceError`, :class:`~melstream_client.errors.InvalidInputError`,
    :class:`~melstream_client.errors.ServerUnavailableError`, :class:`~melstream_client.errors.ClientTimeoutError`.
    """

    def __init__(self, url: str | Sequence[str] = DEFAULT_GRPC_URL, *, timeout_s: float = 60.0,
                 retries: int | None = None) -> None:
        import tritonclient.grpc as grpcclient

        super().__init__()
        self._g = grpcclient
        self.urls = parse_targets(url)
        self.url = self.where = ",".join(self.urls)
        self.timeout_s = timeout_s
        if retries is not None and retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.retries = len(self.urls) - 1 if retries is None else retries
        self._replicas: list[_Replica] = []
        for target in self.urls:
            try:
                self._replicas.append(_Replica(target, self._connect))
            except Exception as e:
                self.close()
                raise grpc_error(e, where=f"cannot connect to {target}") from e
        self._balance = RoundRobin(len(self._replicas))
        self._answering = 0  # the replica that last answered a metadata call is asked first next time

    def _connect(self, url: str) -> Any:
        """A tritonclient ``InferenceServerClient`` for one address (tests replace this with fakes)."""
        if not is_balanced_target(url):
            return self._g.InferenceServerClient(url)
        # channel_args replaces tritonclient's defaults rather than adding to them: keep its message sizes and
        # keepalive, and add the round-robin policy (gRPC's default, pick_first, would send every call to the
        # first address the name resolves to)
        keepalive = self._g.KeepAliveOptions()
        return self._g.InferenceServerClient(url, channel_args=[
            ("grpc.max_send_message_length", self._g.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", self._g.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.lb_policy_name", "round_robin"),
        ])

    def close(self) -> None:
        for replica in self._replicas:
            replica.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the server serves (the rest is VoiceDirectory's) ----------------------------------
    def _ask(self, call: Callable[[Any], T], what: Callable[[str], str]) -> T:
        """``call(client)`` on the first replica that answers, starting with the one that answered last;
        ``what(url)`` says in an error what was asked of whom.  Only a replica that cannot be reached is
        passed over: any other error is the server's answer."""
        n = len(self._replicas)
        first = self._answering
        tried: list[str] = []
        for i in range(n):
            replica = self._replicas[(first + i) % n]
            tried.append(replica.url)
            try:
                result = call(replica.client)
            except Exception as e:
                error = grpc_error(e, where=what(replica.url))
                if not isinstance(error, ServerUnavailableError) or i == n - 1:
                    raise _naming_tried(error, tried) from e
                continue
            self._answering = (first + i) % n
            return result
        raise AssertionError("unreachable: the last replica's error is raised")  # pragma: no cover

    def _stats(self) -> Any:
        return self._ask(lambda c: c.get_inference_statistics(as_json=True, client_timeout=self.timeout_s),
                         lambda url: f"cannot list voices at {url}")

    def _ready(self, model: str) -> bool:
        return self._ask(lambda c: bool(c.is_model_ready(model, client_timeout=self.timeout_s)),
                         lambda url: f"model {model!r} at {url}")

    def _config(self, model: str) -> dict[str, Any]:
        return self._ask(
            lambda c: dict(c.get_model_config(model, as_json=True, client_timeout=self.timeout_s)["config"]),
            lambda url: f"voice {model!r} at {url}")

    def remote_pipeline(self, voice: str) -> StreamablePipeline:
        """The voice's stack, rebuilt here, with networks running on the server's network models (those of the
        replica that answered for the voice's config)."""
        TritonRemoteRunner = server_side("melstream.runners.triton_remote", "TritonRemoteRunner",  # noqa: N806
                                         what="rebuilding a voice's pipeline here (remote_pipeline)")
        fixed = wire.fixed_shapes_from_config(self._config(voice))  # the server's profile decides the shapes
        url = self._replicas[self._answering].url
        return self.addon(voice).build(TritonRemoteRunner(url, timeout_s=self.timeout_s, fixed_shapes=fixed))

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
                       words: bool = False, timeout_s: float | None = None) -> Iterator[dict[str, Any]]:
        """Like :meth:`stream`, yielding ``{"mel": [frames, n_mels], "audio": [frames * hop]}`` per chunk
        (``audio`` only from voices whose stack ends in a vocoder); with ``words``, also ``"words"``: the
        :class:`~melstream_client.wire.Word` s whose speech ends in the chunk (text, start and end in seconds from
        the start of the stream; every word of the text once, in order)."""
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            tensors = wire.request_tensors(text, pace=pace, chunk_frames=chunk_frames, words=words)
        except wire.WireError as e:
            raise InvalidInputError(f"voice {voice!r} at {self.where}: {e}") from None
        n_mels = self.spec(voice).audio.n_mels
        inputs = []
        for inp, value in tensors:
            t = self._g.InferInput(inp.name, list(value.shape), inp.datatype)
            t.set_data_from_numpy(value)
            inputs.append(t)
        tried: list[str] = []
        refusals: list[ClientError] = []
        for index in self._balance.order(retries=self.retries):
            replica = self._replicas[index]
            tried.append(replica.url)
            sent = False
            # closing: a caller that stops early closes this generator, and the replica's stream is cancelled now
            with contextlib.closing(self._stream_on(replica, voice, inputs, n_mels=n_mels, wait_s=wait_s)) as chunks:
                try:
                    for chunk in chunks:
                        sent = True
                        yield chunk
                    return
                except ClientError as e:
                    if sent or not is_retryable(e):
                        raise
                    refusals.append(e)
        last = refusals[-1]
        if len(tried) == 1:
            raise last
        raise _naming_tried(last, tried) from last

    # --- text in pieces ------------------------------------------------------------------------
    @overload
    def stream_text(self, pieces: Iterable[Piece], *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                    words: bool = False, timeout_s: float | None = None) -> Iterator[dict[str, Any]]: ...

    @overload
    def stream_text(self, pieces: AsyncIterable[Piece], *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                    words: bool = False, timeout_s: float | None = None) -> AsyncIterator[dict[str, Any]]: ...

    def stream_text(self, pieces: Iterable[Piece] | AsyncIterable[Piece], *, voice: str, pace: float | None = None,
                    chunk_frames: int | None = None, words: bool = False,
                    timeout_s: float | None = None) -> Iterator[dict[str, Any]] | AsyncIterator[dict[str, Any]]:
        r"""Speak a text that comes in pieces (``str``\ s, a few words each, as a language model writes them; or
        :data:`~melstream_client.FLUSH` to have what came so far spoken now), streaming its audio back while the
        pieces are still coming: ``{"mel": [frames, n_mels], "audio": ...}`` per chunk, each sentence's as soon as
        it is complete.  The pieces joined are spoken exactly as :meth:`stream_outputs` of the whole text
        (flushes aside).

        ``pieces`` is any iterable (read in a thread of its own, so it may block) or async iterable; with an
        async one this returns an async iterator (``async for chunk in client.stream_text(agen, voice=...)``).
        ``timeout_s`` bounds each wait for the server (not for the next piece: the voice itself ends a stream
        whose next piece does not come within :data:`~melstream_client.wire.TEXT_IDLE_TIMEOUT_S`).  Closing the
        iterator early cancels the stream.  A text stream is not retried on another replica: it goes to the
        next replica in turn, once."""
        if isinstance(pieces, AsyncIterable):
            return self._text_async(pieces, voice=voice, options=(pace, chunk_frames, words), timeout_s=timeout_s)
        return self._text_sync(pieces, voice=voice, options=(pace, chunk_frames, words), timeout_s=timeout_s)

    def _text_stream(self, voice: str, options: tuple[float | None, int | None, bool]) -> tuple[_Replica, Any, TextStream]:
        replica = self._replicas[next(iter(self._balance.order(retries=0)))]
        n_mels = self.spec(voice).audio.n_mels
        client = replica.stream_client()
        pace, chunk_frames, words = options
        return replica, client, TextStream(self._g, client, voice=voice, where=replica.url, n_mels=n_mels, pace=pace,
                                           chunk_frames=chunk_frames, words=words)

    def _text_sync(self, pieces: Iterable[Piece], *, voice: str, options: tuple[float | None, int | None, bool],
                   timeout_s: float | None) -> Iterator[dict[str, Any]]:
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        replica, client, text = self._text_stream(voice, options)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        failure: list[BaseException] = []
        stop = threading.Event()

        def send_all() -> None:
            try:
                iterator = iter(pieces)
                while not stop.is_set():
                    text.awaiting_piece = True
                    piece = next(iterator, None)
                    text.awaiting_piece = False
                    if piece is None or stop.is_set():
                        break
                    text.send(piece)
                if not stop.is_set():
                    text.end()
            except BaseException as e:  # the caller's pieces failed, or a piece was refused here: end the stream
                text.awaiting_piece = False
                failure.append(e)
                responses.put((None, None))

        try:
            client.start_stream(callback=lambda result, error: responses.put((result, error)))
            text.send("")  # the stream's start: its options, no text yet
            sender = threading.Thread(target=send_all, daemon=True, name=f"text-stream-{text.sequence}")
            sender.start()
            while not text.finished:
                try:
                    result, error = responses.get(timeout=0.05)  # short: the timeout is checked against activity
                except queue.Empty:
                    late = text.timed_out(wait_s)
                    if late is not None:
                        raise late from None
                    continue
                if failure:
                    raise failure[0]
                chunk = text.take(result, error)
                if chunk is not None:
                    yield chunk
        except ClientError:
            raise
        except Exception as e:
            if failure and e is failure[0]:
                raise
            raise grpc_error(e, where=f"voice {voice!r} at {replica.url}") from e
        finally:
            stop.set()
            try:
                client.stop_stream(cancel_requests=not text.finished)
            finally:
                replica.release(client, reusable=text.finished)

    async def _text_async(self, pieces: AsyncIterable[Piece], *, voice: str, options: tuple[float | None, int | None, bool],
                          timeout_s: float | None) -> AsyncIterator[dict[str, Any]]:
        import asyncio

        wait_s = self.timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        replica, client, text = await loop.run_in_executor(None, self._text_stream, voice, options)
        responses: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()

        async def send_all() -> None:
            async for piece in pieces:
                text.send(piece)  # tritonclient queues it for its stream's own thread: no wait here
            text.end()

        sender: asyncio.Task[None] | None = None
        try:
            client.start_stream(callback=lambda result, error: loop.call_soon_threadsafe(responses.put_nowait, (result, error)))
            text.send("")  # the stream's start: its options, no text yet
            sender = asyncio.ensure_future(send_all())
            while not text.finished:
                if sender.done() and sender.exception() is not None:
                    raise sender.exception()  # type: ignore[misc]
                text.awaiting_piece = not sender.done()
                try:
                    result, error = await asyncio.wait_for(responses.get(), timeout=0.05)
                except asyncio.TimeoutError:
                    late = text.timed_out(wait_s)
                    if late is not None:
                        raise late from None
                    continue
                chunk = text.take(result, error)
                if chunk is not None:
                    yield chunk
        except ClientError:
            raise
        except Exception as e:
            if sender is not None and sender.done() and not sender.cancelled() and sender.exception() is e:
                raise
            raise grpc_error(e, where=f"voice {voice!r} at {replica.url}") from e
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            try:
                client.stop_stream(cancel_requests=not text.finished)
            finally:
                replica.release(client, reusable=text.finished)

    def _stream_on(self, replica: _Replica, voice: str, inputs: list[Any], *, n_mels: int,
                   wait_s: float) -> Generator[dict[str, Any], None, None]:
        """One stream of the request on one replica; its failures are typed errors naming the replica."""
        where = f"voice {voice!r} at {replica.url}"
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client = replica.stream_client()
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
                replica.release(client, reusable=finished)


def _naming_tried(error: ClientError, tried: list[str]) -> ClientError:
    """``error`` itself after one try; after several, an error of its kind whose text also names every replica
    tried, in order (the error's own text names the last, and keeps its server's message)."""
    if len(tried) < 2:
        return error
    return type(error)(f"{error} (tried {len(tried)} replicas: {', '.join(tried)})")


def stream(text: str, *, voice: str, url: str | Sequence[str] = DEFAULT_GRPC_URL, pace: float | None = None,
           chunk_frames: int | None = None, timeout_s: float = 60.0) -> Iterator[np.ndarray]:
    """Module-level shortcut for :meth:`Client.stream`."""
    client = Client(url, timeout_s=timeout_s)
    try:
        yield from client.stream(text, voice=voice, pace=pace, chunk_frames=chunk_frames)
    finally:
        client.close()


def synthesize(text: str, *, voice: str, url: str | Sequence[str] = DEFAULT_GRPC_URL, pace: float | None = None,
               chunk_frames: int | None = None, timeout_s: float = 60.0) -> np.ndarray:
    """Module-level shortcut for :meth:`Client.synthesize`."""
    with Client(url, timeout_s=timeout_s) as client:
        return client.synthesize(text, voice=voice, pace=pace, chunk_frames=chunk_frames)
