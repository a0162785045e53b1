"""benchmarks/streams.py against the real server: the table, CSV and plot it promises (figures are not asserted)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from benchmarks.streams import main
from melstream.serving.server import TritonServer


def test_streams_benchmark_writes_every_level(server: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--url", server.grpc_url, "--streams", "1,3", "--seconds-per-level", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "| voice | mode | N | utts | first mean |" in out
    with open(tmp_path / "streams.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["voice"], r["mode"], r["streams"]) for r in rows] == [
        (v, m, n) for v in ("fastvoice", "tacovoice") for m in ("stream", "naive") for n in ("1", "3")]
    for r in rows:
        # with no time per level every stream makes exactly one utterance
        assert int(r["utterances"]) == int(r["streams"]) and r["errors"] == "0"
        assert 0 < float(r["first_chunk_p50_ms"]) <= float(r["first_chunk_p99_ms"])
        assert float(r["rtfx"]) > 0 and 0 <= float(r["stalled_pct"]) <= 100
        # the naive call is one response: no gaps; a stream of held-out sentences has many chunks
        assert math.isnan(float(r["gap_p50_ms"])) == (r["mode"] == "naive")
    assert (tmp_path / "streams.png").stat().st_size > 10_000
    assert (tmp_path / "streams.md").read_text().count("\n") == len(rows) + 2


@pytest.mark.parametrize("streams", ["0,2", "", "two"])
def test_streams_benchmark_refuses_bad_levels(tmp_path: Path, streams: str) -> None:
    with pytest.raises(SystemExit):
        main(["--streams", streams, "--out", str(tmp_path)])
