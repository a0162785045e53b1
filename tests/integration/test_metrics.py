"""The voice models' own Prometheus metrics on Triton's metrics port (python_backends/pipeline/model.py)."""

from __future__ import annotations

import time
import urllib.request

import pytest

from melstream.errors import ClientError
from melstream.serving.server import TritonServer
from melstream_client import Client
from tests.servers import network_calls_key, quiet, scrape, streams_key, wait_for

LONG = " ".join(["A long paragraph keeps the server busy for a good while, frame after frame."] * 20)


def delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.mark.parametrize("voice", ["fastvoice", "tacovoice"])
def test_first_chunk_latency_and_chunks_per_stream(server: TritonServer, voice: str) -> None:
    v = f'{{voice="{voice}"}}'
    before = quiet(server, voice)
    with Client(server.grpc_url) as client:
        t0 = time.perf_counter()
        chunks = list(client.stream("Metrics count what Triton cannot see.", voice=voice, chunk_frames=16))
        client_first_s = time.perf_counter() - t0  # an upper bound of the server's own figure
    key = f'melstream_streams_total{{outcome="completed",voice="{voice}"}}'
    after = quiet(server, voice)  # a stream is counted just after its final response; no longer active last
    assert delta(after, before, key) == 1
    assert delta(after, before, f"melstream_first_chunk_seconds_count{v}") == 1
    first_s = delta(after, before, f"melstream_first_chunk_seconds_sum{v}")
    assert 0 < first_s <= client_first_s
    assert delta(after, before, f"melstream_chunks_per_stream_count{v}") == 1
    assert delta(after, before, f"melstream_chunks_per_stream_sum{v}") == len(chunks) > 1
    assert delta(after, before, f"melstream_frames_total{v}") == sum(len(c) for c in chunks)
    # a histogram's buckets are cumulative and end in +Inf = count
    assert after[f'melstream_chunks_per_stream_bucket{{voice="{voice}",le="+Inf"}}'] == after[f"melstream_chunks_per_stream_count{v}"]


def test_errors_and_cancellations_are_counted(server: TritonServer) -> None:
    cancelled, error, completed = (streams_key("fastvoice", o) for o in ("cancelled", "error", "completed"))
    decoder_calls = network_calls_key("fastvoice", "decoder")  # wherever the decoder runs
    before = quiet(server, "fastvoice")
    with Client(server.grpc_url) as client:
        with pytest.raises(ClientError, match="TextError"):
            list(client.stream("   ", voice="fastvoice"))
        it = client.stream(LONG, voice="fastvoice", chunk_frames=1)
        next(it)
        during = scrape(server)
        it.close()  # cancels the request on the server
    assert during['melstream_active_streams{voice="fastvoice"}'] == 1
    # the stream's own end, waited for (a stalled server never records it)
    after = quiet(server, "fastvoice")
    assert delta(after, before, cancelled) == 1
    assert delta(after, before, error) == 1
    assert delta(after, before, completed) == 0
    # a cancelled stream sent its first chunk but is not a finished stream's chunk count
    assert delta(after, before, 'melstream_first_chunk_seconds_count{voice="fastvoice"}') == 1
    assert delta(after, before, 'melstream_chunks_per_stream_count{voice="fastvoice"}') == 0
    # the frames it did send are counted (at least the one read), and are all the decoder work it cost (one
    # call per one-frame chunk; the empty text never reached a network); the text has about 12 000 frames
    sent = delta(after, before, 'melstream_frames_total{voice="fastvoice"}')
    assert 1 <= sent < 200
    assert sent <= delta(after, before, decoder_calls) <= sent + 1  # exported as the stream ended, before its outcome


def test_metrics_from_many_concurrent_streams_add_up(server: TritonServer) -> None:
    # Triton 2.51's stub crashed the server when streams updated metrics from several threads at
    # once; the voice model serialises its metric calls.  16 streams at once, both voices.
    from concurrent.futures import ThreadPoolExecutor

    before = quiet(server, "fastvoice", "tacovoice")
    voices = ["fastvoice", "tacovoice"] * 8
    with Client(server.grpc_url) as client, ThreadPoolExecutor(max_workers=len(voices)) as pool:
        frames = list(pool.map(lambda v: sum(len(m) for m in client.stream("Sixteen streams at once.", voice=v, chunk_frames=4)), voices))
    for voice in ("fastvoice", "tacovoice"):
        key = f'melstream_streams_total{{outcome="completed",voice="{voice}"}}'
        after = wait_for(server, key, before.get(key, 0.0) + 8)
        assert delta(after, before, key) == 8
        sent = sum(f for f, v in zip(frames, voices, strict=True) if v == voice)
        assert delta(after, before, f'melstream_frames_total{{voice="{voice}"}}') == sent
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/live", timeout=5) as resp:
        assert resp.status == 200


def test_each_voice_exports_what_it_admits_now_within_its_upper_bound(server: TritonServer) -> None:
    """melstream_admitted_streams: what the voice measured at load that this host keeps in real time (with the
    headroom its config gives), a whole number of streams from 1 to the config's max_streams."""
    import json

    from melstream_client import wire

    samples = scrape(server)
    for voice in ("fastvoice", "tacovoice"):
        with urllib.request.urlopen(f"http://{server.http_url}{wire.model_config_path(voice)}", timeout=10) as resp:
            parameters = json.loads(resp.read())["parameters"]
        upper = int(parameters["max_streams"]["string_value"])
        assert float(parameters["admission_headroom"]["string_value"]) > 0
        admitted = samples[f'melstream_admitted_streams{{voice="{voice}"}}']
        assert 1 <= admitted <= upper and admitted == int(admitted), (voice, admitted, upper)
