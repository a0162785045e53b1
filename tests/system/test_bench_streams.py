"""benchmarks/streams.py against the real server: the table, CSV and plot it promises (figures are not asserted)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from benchmarks.streams import PEER_PROFILE, limit_markdown, limits, main
from melstream.serving.server import TritonServer


def test_streams_benchmark_writes_every_level(server: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # long texts of 3 sentences at one level: the option's path end to end, kept short
    rc = main(["--url", server.grpc_url, "--streams", "1,3", "--texts", "short,long", "--long-streams", "1",
               "--long-sentences", "3", "--seconds-per-level", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| voice | mode | N | utts | refused | admits | first mean |" in out and "\nhost: " in out
    with open(tmp_path / "streams.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["voice"], r["mode"], r["streams"]) for r in rows] == [
        (v, m, n) for v in ("fastvoice", "tacovoice") for m, ns in (("stream", "13"), ("naive", "13"), ("stream-long", "1"))
        for n in ns]
    for r in rows:
        # with no time per level every stream makes exactly one attempt: an utterance, or a refusal as busy (not an
        # error) where the voice's capacity is full
        assert int(r["utterances"]) >= 1 and int(r["utterances"]) + int(r["refused"]) == int(r["streams"])
        assert r["errors"] == "0"
        assert 0 < float(r["first_chunk_p50_ms"]) <= float(r["first_chunk_p99_ms"])
        assert float(r["rtfx"]) > 0 and 0 <= float(r["stalled_pct"]) <= 100
        # the naive call is one response: no gaps; a stream of held-out sentences has many chunks
        assert math.isnan(float(r["gap_p50_ms"])) == (r["mode"] == "naive")
    assert (tmp_path / "streams.png").stat().st_size > 10_000
    table, _, limit = (tmp_path / "streams.md").read_text().partition("\n## limit\n")
    assert table.startswith("host: ")  # the machine the table was taken on heads it
    assert sum(line.startswith("|") for line in table.splitlines()) == len(rows) + 2
    # the limit: each voice's compute next to the served figures (N=1 for the first chunk; no N=32 level here: N=3)
    assert "| voice | source | first chunk p50 ms (N=1) | RTFX (N=3) |" in limit and "| tacovoice | served: cpu |" in limit
    assert "## limit" not in out and "limit: how far serving is from the compute" in out
    with open(tmp_path / "limit.csv") as f:
        networks = {(r["voice"], r["network"]) for r in csv.DictReader(f)}
    assert networks == {("fastvoice", "text_encoder"), ("fastvoice", "duration_predictor"), ("fastvoice", "decoder"),
                        ("tacovoice", "encoder"), ("tacovoice", "decoder_step")}


def test_streams_benchmark_measures_the_peer_and_melstream_with_one_http_client(server: TritonServer, tmp_path: Path) -> None:
    rc = main(["--url", server.http_url, "--peer", "--voices", "fastvoice", "--streams", "1", "--seconds-per-level", "0",
               "--no-limit", "--out", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "streams.csv") as f:
        rows = list(csv.DictReader(f))
    # each level's profiles side by side, both measured over HTTP (with --peer, --transport defaults to http)
    assert [(r["mode"], r["profile"], r["transport"]) for r in rows] == [
        (m, p, "http") for m in ("stream", "naive") for p in ("cpu", PEER_PROFILE)]
    assert all(r["errors"] == "0" and int(r["utterances"]) == 1 for r in rows)
    assert not (tmp_path / "limit.csv").exists()
    assert (tmp_path / "peer_fastapi.log").exists()


def test_the_limit_times_the_shipped_voices_compute() -> None:
    taco, = limits(["tacovoice"], sentences=3)
    assert taco.voice == "tacovoice" and taco.sentences == 3 and 0 < taco.first_chunk_ms < 1000
    step = next(n for n in taco.networks if n.network == "decoder_step")
    # one step with the memory of the median sentence: its token count; one call per frame
    assert step.size == taco.tokens and step.calls == round(taco.audio_s * 22050 / 256)
    assert 0 < step.batch1_ms and 0 < step.batched_ms and taco.batched_rtfx > 0
    assert "| tacovoice | decoder_step |" in limit_markdown([taco], [], ["cpu"], [1, 32])


@pytest.mark.parametrize("streams", ["0,2", "", "two"])
def test_streams_benchmark_refuses_bad_levels(tmp_path: Path, streams: str) -> None:
    with pytest.raises(SystemExit):
        main(["--streams", streams, "--out", str(tmp_path)])
