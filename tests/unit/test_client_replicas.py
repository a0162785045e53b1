"""melstream.client.Client over several replicas, with fake tritonclient clients (no server): new streams go round
robin, a stream refused before its first chunk goes to the next replica, and nothing is retried once a chunk has
reached the caller (that would repeat speech)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc
from tritonclient.utils import InferenceServerException

import melstream
from melstream.errors import (
    ClientError,
    InvalidInputError,
    ServerBusyError,
    ServerUnavailableError,
    UnknownVoiceError,
)
from melstream_client import Client, wire
from melstream_client._balance import RoundRobin, parse_targets

TEXT = "Hello there."
CHUNKS = 3  # chunks per served stream


def refused(status: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=f"StatusCode.{status}")


UNREACHABLE = refused("UNAVAILABLE", "failed to connect to all addresses; last error: Connection refused")


@dataclass
class FakeServer:
    """One replica: what its streams do, and what was asked of it.  ``plan`` says what each stream in turn does
    (None: serve it whole; an exception: refuse it before any chunk; ``(n, exception)``: fail after ``n``
    chunks), the default for streams past the plan being to serve; ``down`` refuses metadata calls too."""

    url: str
    n_mels: int
    addon_json: str
    plan: list[Any] = field(default_factory=list)
    down: bool = False
    streams: int = 0  # streams started
    served: int = 0  # streams that got their final response
    cancelled: int = 0  # streams stopped with cancel_requests
    metadata_calls: int = 0

    def chunk(self, k: int) -> np.ndarray:
        # each chunk says which chunk it is, so a repeated or missing one shows
        return np.full((2, self.n_mels), float(k), np.float32)

    def run(self, callback: Callable[[Any, Any], None]) -> None:
        what = self.plan[self.streams] if self.streams < len(self.plan) else None
        self.streams += 1
        if self.down:
            what = UNREACHABLE
        if isinstance(what, InferenceServerException):
            callback(None, what)
            return
        fail_after, error = what if what is not None else (CHUNKS, None)
        for k in range(fail_after):
            callback(FakeResult({wire.MEL: self.chunk(k)}, final=False), None)
        if error is not None:
            callback(None, error)
            return
        self.served += 1
        callback(FakeResult({}, final=True), None)

    def metadata(self) -> None:
        self.metadata_calls += 1
        if self.down:
            raise UNREACHABLE


class FakeResult:
    """What tritonclient hands a stream's callback: ``get_response()`` (output names, parameters) and ``as_numpy``."""

    def __init__(self, outputs: dict[str, np.ndarray], *, final: bool) -> None:
        self._outputs = outputs
        self._final = final

    def get_response(self) -> Any:
        outputs = [_Named(name) for name in self._outputs]
        return _Response(outputs, {wire.FINAL_RESPONSE_PARAMETER: _Bool(self._final)})

    def as_numpy(self, name: str) -> np.ndarray:
        return self._outputs[name]


@dataclass
class _Named:
    name: str


@dataclass
class _Bool:
    bool_param: bool


@dataclass
class _Response:
    outputs: list[_Named]
    parameters: dict[str, _Bool]


class FakeTriton:
    """The part of tritonclient.grpc.InferenceServerClient the client uses, answering from a FakeServer."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self._callback: Callable[[Any, Any], None] | None = None

    def start_stream(self, callback: Callable[[Any, Any], None]) -> None:
        assert self._callback is None, "one stream at a time per client object"
        self._callback = callback

    def async_stream_infer(self, model: str, inputs: list[Any], **kwargs: Any) -> None:
        assert self._callback is not None
        self.server.run(self._callback)  # the responses queue up at once: the client reads them afterwards

    def stop_stream(self, cancel_requests: bool = False) -> None:
        self.server.cancelled += bool(cancel_requests)
        self._callback = None

    def close(self) -> None:
        pass

    def get_model_config(self, model: str, **kwargs: Any) -> dict[str, Any]:
        self.server.metadata()
        return {"config": {"name": model, "parameters": {wire.ADDON_PARAMETER: {"string_value": self.server.addon_json}}}}

    def is_model_ready(self, model: str, **kwargs: Any) -> bool:
        self.server.metadata()
        return True


class FakeClient(Client):
    """A Client whose per-replica connections are FakeTritons."""

    def __init__(self, url: str | Sequence[str], servers: dict[str, FakeServer], **options: Any) -> None:
        self.servers = servers
        super().__init__(url, **options)

    def _connect(self, url: str) -> Any:
        return FakeTriton(self.servers[url])


@pytest.fixture
def voice(fast_addon: melstream.Addon) -> str:
    return fast_addon.name


@pytest.fixture
def make(fast_addon: melstream.Addon) -> Callable[..., tuple[FakeClient, list[FakeServer]]]:
    """``make(n, plans={i: plan}, down={i}, **options)``: a FakeClient over ``n`` fake replicas."""

    def make_(n: int, *, plans: dict[int, list[Any]] | None = None, down: Sequence[int] = (),
              **options: Any) -> tuple[FakeClient, list[FakeServer]]:
        servers = [FakeServer(f"tts{i}:8001", fast_addon.spec.audio.n_mels, fast_addon.to_json(),
                              plan=list((plans or {}).get(i, [])), down=i in down) for i in range(n)]
        client = FakeClient([s.url for s in servers], {s.url: s for s in servers}, **options)
        return client, servers

    return make_


def expected_chunks(server: FakeServer) -> list[np.ndarray]:
    return [server.chunk(k) for k in range(CHUNKS)]


def assert_same_chunks(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_new_streams_go_round_robin(make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(3)
    for _ in range(6):
        assert len(list(client.stream(TEXT, voice=voice))) == CHUNKS
    assert [s.streams for s in servers] == [2, 2, 2]
    assert [s.served for s in servers] == [2, 2, 2]
    assert [s.cancelled for s in servers] == [0, 0, 0]


@pytest.mark.parametrize("refusal", [
    UNREACHABLE,
    refused("UNAVAILABLE", wire.error_message(wire.BUSY_ERROR, wire.busy_detail("tinyfast", "it serves 1 stream at once"))),
], ids=["unreachable", "busy"])
def test_a_refusal_before_the_first_chunk_goes_to_the_next_replica(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str, refusal: InferenceServerException) -> None:
    client, servers = make(3, plans={0: [refusal]})
    got = list(client.stream(TEXT, voice=voice))  # the first stream starts at replica 0
    assert_same_chunks(got, expected_chunks(servers[1]))  # every chunk exactly once
    assert [s.streams for s in servers] == [1, 1, 0]
    assert [s.served for s in servers] == [0, 1, 0]


def test_busy_is_a_retryable_refusal() -> None:
    from melstream_client._balance import is_retryable

    assert is_retryable(ServerBusyError("x")) and is_retryable(ServerUnavailableError("x"))
    assert not is_retryable(InvalidInputError("x")) and not is_retryable(UnknownVoiceError("x"))
    assert not is_retryable(ClientError("x"))


def test_a_failure_after_the_first_chunk_is_raised_not_retried(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(3, plans={0: [(1, UNREACHABLE)]})
    got: list[np.ndarray] = []
    with pytest.raises(ServerUnavailableError) as info:
        got.extend(client.stream(TEXT, voice=voice))
    assert "tts0:8001" in str(info.value), info.value
    assert_same_chunks(got, expected_chunks(servers[0])[:1])
    assert [s.streams for s in servers] == [1, 0, 0]  # no other replica was asked


@pytest.mark.parametrize(("refusal", "error"), [
    (refused("INVALID_ARGUMENT", "[INVALID_ARG] input PACE: must be a finite number"), InvalidInputError),
    (refused("NOT_FOUND", "Request for unknown model: 'nosuch' is not found"), UnknownVoiceError),
], ids=["invalid-input", "unknown-voice"])
def test_input_errors_are_not_retried(make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str,
                                      refusal: InferenceServerException, error: type[ClientError]) -> None:
    client, servers = make(3, plans={0: [refusal]})
    with pytest.raises(error) as info:
        list(client.stream(TEXT, voice=voice))
    assert type(info.value) is error and "tts0:8001" in str(info.value), info.value
    assert [s.streams for s in servers] == [1, 0, 0]


def test_every_replica_refusing_raises_the_last_error_naming_the_replicas_tried(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    busy = refused("UNAVAILABLE", wire.error_message(wire.BUSY_ERROR, wire.busy_detail(voice, "it serves 1 stream at once")))
    client, servers = make(3, plans={0: [UNREACHABLE], 1: [UNREACHABLE], 2: [busy]})
    with pytest.raises(ServerBusyError) as info:  # the last replica's refusal, of its own kind
        list(client.stream(TEXT, voice=voice))
    message = str(info.value)
    assert message.startswith("voice 'tinyfast' at tts2:8001: ") and "is busy" in message, message
    assert "tts0:8001, tts1:8001, tts2:8001" in message, message
    assert isinstance(info.value.__cause__, ServerBusyError)
    assert [s.streams for s in servers] == [1, 1, 1]  # each replica once


def test_retries_bounds_the_replicas_tried(make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(3, plans={0: [UNREACHABLE], 1: [UNREACHABLE]}, retries=1)
    with pytest.raises(ServerUnavailableError, match="tts0:8001, tts1:8001"):
        list(client.stream(TEXT, voice=voice))
    assert [s.streams for s in servers] == [1, 1, 0]
    client, servers = make(3, plans={0: [UNREACHABLE]}, retries=0)
    with pytest.raises(ServerUnavailableError) as info:
        list(client.stream(TEXT, voice=voice))
    assert "tried" not in str(info.value)  # one try: the replica's own error, unchanged
    assert [s.streams for s in servers] == [1, 0, 0]


def test_one_address_keeps_its_errors_unchanged(make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(1, plans={0: [UNREACHABLE]})
    assert client.url == client.where == "tts0:8001"
    with pytest.raises(ServerUnavailableError) as info:
        list(client.stream(TEXT, voice=voice))
    assert str(info.value).startswith("voice 'tinyfast' at tts0:8001: ") and "tried" not in str(info.value), info.value


def test_closing_a_stream_early_cancels_it_and_tries_no_other_replica(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(2)
    chunks = client.stream(TEXT, voice=voice)
    next(chunks)
    chunks.close()
    assert [s.streams for s in servers] == [1, 0]
    assert servers[0].cancelled == 1


def test_metadata_comes_from_the_first_replica_that_answers(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(3, down=[0])
    assert client.spec(voice).audio.n_mels == servers[1].n_mels
    assert client.is_model_ready(voice)
    # the replica that answered is asked first from then on: the one that is down is not asked again
    assert [s.metadata_calls for s in servers] == [1, 2, 0]
    for s in servers:
        s.down = True
    with pytest.raises(ServerUnavailableError) as info:
        client.is_model_ready(voice)
    assert "tts1:8001, tts2:8001, tts0:8001" in str(info.value), info.value


def test_the_stream_after_a_down_replica_is_still_served(
        make: Callable[..., tuple[FakeClient, list[FakeServer]]], voice: str) -> None:
    client, servers = make(2, down=[0])
    for _ in range(4):
        assert_same_chunks(list(client.stream(TEXT, voice=voice)), expected_chunks(servers[1]))
    assert servers[1].served == 4 and servers[0].served == 0


@pytest.mark.parametrize(("url", "targets"), [
    ("localhost:8001", ("localhost:8001",)),
    (" tts1:8001 ", ("tts1:8001",)),
    ("tts1:8001,tts2:8001", ("tts1:8001", "tts2:8001")),
    ("tts1:8001, tts2:8001 ,tts3:8001", ("tts1:8001", "tts2:8001", "tts3:8001")),
    (["tts1:8001", "tts2:8001"], ("tts1:8001", "tts2:8001")),
    (("tts1:8001",), ("tts1:8001",)),
    ("dns:///tts.internal:8001", ("dns:///tts.internal:8001",)),
    ("ipv4:10.0.0.1:8001,10.0.0.2:8001", ("ipv4:10.0.0.1:8001,10.0.0.2:8001",)),  # the resolver's own list
])
def test_url_parsing(url: str | Sequence[str], targets: tuple[str, ...]) -> None:
    assert parse_targets(url) == targets


@pytest.mark.parametrize("url", ["", "tts1:8001,", [], ["tts1:8001", ""], [8001], 8001])
def test_bad_urls_are_refused_naming_them(url: Any) -> None:
    with pytest.raises(ValueError, match="address"):
        parse_targets(url)


def test_the_channels_a_client_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain address gets tritonclient's default channel; a ``dns:///`` target keeps tritonclient's
    message-size and keepalive arguments and adds gRPC's round-robin policy."""
    opened: list[tuple[str, Any]] = []

    class Recorder(FakeTriton):
        def __init__(self, url: str, channel_args: Any = None) -> None:
            opened.append((url, channel_args))

    monkeypatch.setattr(tritonclient.grpc, "InferenceServerClient", Recorder)
    client = Client(["tts1:8001", "dns:///tts.internal:8001"])
    assert client.urls == ("tts1:8001", "dns:///tts.internal:8001")
    assert client.url == client.where == "tts1:8001,dns:///tts.internal:8001"
    assert opened[0] == ("tts1:8001", None)
    url, args = opened[1]
    assert url == "dns:///tts.internal:8001"
    assert dict(args)["grpc.lb_policy_name"] == "round_robin"
    assert dict(args)["grpc.max_receive_message_length"] == tritonclient.grpc.MAX_GRPC_MESSAGE_SIZE
    assert "grpc.keepalive_time_ms" in dict(args)


def test_round_robin_is_fair_across_threads() -> None:
    import threading

    ring = RoundRobin(3)
    starts: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(100):
            first = ring.order(retries=2)[0]
            with lock:
                starts.append(first)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(starts.count(i) for i in range(3)) == [200, 200, 200]
    assert ring.order(retries=5) == [0, 1, 2] and ring.order(retries=0) == [1]
