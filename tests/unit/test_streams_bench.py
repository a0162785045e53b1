"""The pure parts of benchmarks/streams.py: reading Triton's metrics, the mean batch per network, the table, a stream's
loop with a fake client (a busy refusal is retried and counted, not an error), the long texts, the host facts (no
server)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.streams import (
    ADMITTED,
    BATCH_PREFIX,
    LONG_SENTENCES,
    NAIVE,
    PEER_PROFILE,
    REFUSED_JITTER,
    REFUSED_PAUSE_S,
    STREAM,
    STREAM_LONG,
    Level,
    NetworkLimit,
    Tally,
    VoiceLimit,
    batch_cell,
    default_metrics_url,
    host_facts,
    host_line,
    level_plan,
    limit_markdown,
    limit_rows,
    long_texts,
    main,
    markdown,
    mean_batches,
    model_counters,
    row,
    side_by_side,
    stream_loop,
    texts,
    write_csv,
)
from melstream.timing import stream_timing
from melstream_client.errors import ServerBusyError, ServerUnavailableError

# What Triton's metrics endpoint says (trimmed): other metrics with the same prefix, labels in either order,
# two versions of one model, a voice model (no "__"), a network that never ran, the melstream_ metrics.
BEFORE = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="fastvoice__decoder",version="1"} 40
nv_inference_request_success{model="fastvoice",version="1"} 10
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="fastvoice__encoder",version="1"} 10
nv_inference_count{version="1",model="fastvoice__decoder"} 40
nv_inference_count{model="fastvoice",version="1"} 10
nv_inference_count{model="tacovoice__decoder",version="1"} 0
nv_inference_count{model="tacovoice__postnet",version="1"} 5
nv_inference_count{model="tacovoice__postnet",version="2"} 5
# HELP nv_inference_exec_count Number of model executions performed (does not include cached requests)
# TYPE nv_inference_exec_count counter
nv_inference_exec_count{model="fastvoice__encoder",version="1"} 10
nv_inference_exec_count{version="1",model="fastvoice__decoder"} 40
nv_inference_exec_count{model="fastvoice",version="1"} 10
nv_inference_exec_count{model="tacovoice__decoder",version="1"} 0
nv_inference_exec_count{model="tacovoice__postnet",version="1"} 5
nv_inference_exec_count{model="tacovoice__postnet",version="2"} 5
nv_inference_count_total{model="fastvoice__decoder",version="1"} 999
nv_inference_queue_duration_us{model="fastvoice__decoder",version="1"} 1234
nv_cpu_utilization 0.5
melstream_streams_total{voice="fastvoice",outcome="completed"} 10
"""

AFTER = """\
# HELP nv_inference_count Number of inferences performed (does not include cached requests)
# TYPE nv_inference_count counter
nv_inference_count{model="fastvoice__encoder",version="1"} 30
nv_inference_count{version="1",model="fastvoice__decoder"} 132
nv_inference_count{model="fastvoice",version="1"} 30
nv_inference_count{model="tacovoice__decoder",version="1"} 0
nv_inference_count{model="tacovoice__postnet",version="1"} 15
nv_inference_count{model="tacovoice__postnet",version="2"} 11
nv_inference_exec_count{model="fastvoice__encoder",version="1"} 30
nv_inference_exec_count{version="1",model="fastvoice__decoder"} 80
nv_inference_exec_count{model="fastvoice",version="1"} 30
nv_inference_exec_count{model="tacovoice__decoder",version="1"} 0
nv_inference_exec_count{model="tacovoice__postnet",version="1"} 10
nv_inference_exec_count{model="tacovoice__postnet",version="2"} 8
nv_inference_count_total{model="fastvoice__decoder",version="1"} 5000
melstream_streams_total{voice="fastvoice",outcome="completed"} 30
# TYPE melstream_admitted_streams gauge
melstream_admitted_streams{voice="fastvoice"} 23
melstream_admitted_streams{voice="tacovoice"} 7
"""


def test_counters_per_model_sum_over_versions_and_skip_other_metrics() -> None:
    assert model_counters(BEFORE, "nv_inference_count") == {
        "fastvoice__encoder": 10, "fastvoice__decoder": 40, "fastvoice": 10, "tacovoice__decoder": 0, "tacovoice__postnet": 10}
    assert model_counters(AFTER, "nv_inference_exec_count")["tacovoice__postnet"] == 18
    assert model_counters(BEFORE, "nv_cpu_utilization") == {}  # no model label
    assert model_counters("", "nv_inference_count") == {}
    # a voice's gauge, by its voice label: the streams it admits at once
    assert model_counters(AFTER, ADMITTED, label="voice") == {"fastvoice": 23, "tacovoice": 7}
    assert model_counters(BEFORE, ADMITTED, label="voice") == {}  # a server without the gauge
    assert model_counters(AFTER, ADMITTED) == {}  # it has no model label


def test_counters_read_the_exposition_format_edge_cases() -> None:
    text = ('nv_inference_count{model="a__b",version="1"} 1.5e+03 1700000000000\n'  # a timestamp after the value
            '  nv_inference_count{ model = "a__b" , version="2", } 2\n'  # spaces and a trailing comma
            'nv_inference_count{gpu_uuid="x\\"}y",model="c__d"} 7\n'  # an escaped quote and a brace in a value
            'nv_inference_count{model="e__f",version="1"} NaN\n'
            'nv_inference_count{model="g__h"} not-a-number\n'
            'nv_inference_count 3\n')  # no labels
    assert model_counters(text, "nv_inference_count") == {"a__b": 1502.0, "c__d": 7.0}


def test_mean_batch_is_items_per_execution_of_network_models_that_ran() -> None:
    batches = mean_batches(BEFORE, AFTER)
    # voices are not networks; tacovoice__decoder ran no execution: no figure, no division by zero
    assert set(batches) == {"fastvoice__encoder", "fastvoice__decoder", "tacovoice__postnet"}
    assert batches["fastvoice__encoder"] == 1.0
    assert batches["fastvoice__decoder"] == pytest.approx(92 / 40)
    assert batches["tacovoice__postnet"] == pytest.approx(16 / 8)  # both versions' counts
    assert mean_batches(BEFORE, BEFORE) == {}
    # a model that appears only after (loaded during the level) counts from zero
    assert mean_batches("", AFTER)["fastvoice__decoder"] == pytest.approx(132 / 80)


def _row(profile: str, voice: str, mode: str, streams: int, **batches: float) -> dict[str, object]:
    r: dict[str, object] = {"profile": profile, "voice": voice, "mode": mode, "streams": streams, "utterances": 3,
                            "refused": 0, "admits": float("nan"), "errors": 0, "wall_s": 1.0, "rtf_mean": 0.2, "rtf_p95": 0.3,
                            "audio_s": 5.0, "rtfx": 5.0,
                            "stalled_pct": 0.0, "stalls_per_utt": 0.0, "stall_s_per_utt": 0.0}
    for name in ("first_chunk", "gap"):
        for k in ("mean", "p50", "p90", "p95", "p99"):
            r[f"{name}_{k}_ms"] = float("nan") if name == "gap" and mode == "naive" else 12.0
    r.update({BATCH_PREFIX + k: v for k, v in batches.items()})
    return r


def test_rows_of_each_level_sit_side_by_side_and_show_their_batches(tmp_path: Path) -> None:
    rows = [_row("cpu", "fastvoice", "stream", 1, fastvoice__encoder=1.0, fastvoice__decoder=1.0),
            _row("cpu", "fastvoice", "stream", 2, fastvoice__decoder=1.3),
            _row("cpu", "tacovoice", "stream", 1),
            _row("cpu-static", "fastvoice", "stream", 1, fastvoice__encoder=1.0, fastvoice__decoder=1.0),
            _row("cpu-static", "fastvoice", "stream", 2, fastvoice__decoder=2.3),
            _row("cpu-static", "tacovoice", "stream", 1, tacovoice__postnet=1.5)]
    ordered = side_by_side(rows, ["cpu", "cpu-static"])
    assert [(r["voice"], r["streams"], r["profile"]) for r in ordered] == [
        ("fastvoice", 1, "cpu"), ("fastvoice", 1, "cpu-static"), ("fastvoice", 2, "cpu"), ("fastvoice", 2, "cpu-static"),
        ("tacovoice", 1, "cpu"), ("tacovoice", 1, "cpu-static")]
    assert batch_cell(ordered[0]) == "decoder 1.0, encoder 1.0"
    assert batch_cell(ordered[3]) == "decoder 2.3"
    assert batch_cell(ordered[4]) == "–"

    table = markdown(ordered).splitlines()
    assert table[0].startswith("| profile | voice | mode | N | utts | refused | admits | first mean |")
    assert table[0].endswith("| mean batch |")
    assert len(table) == len(rows) + 2
    assert table[4].startswith("| cpu | fastvoice | stream | 2 | 3 | 0 | – |") and table[4].endswith("| decoder 1.3 |")
    assert all(line.count("|") == table[0].count("|") for line in table)

    write_csv(ordered, tmp_path / "streams.csv")
    with open(tmp_path / "streams.csv") as f:
        read = list(csv.DictReader(f))
    batch_columns = [k for k in read[0] if k.startswith(BATCH_PREFIX)]
    assert batch_columns == ["batch fastvoice__decoder", "batch fastvoice__encoder", "batch tacovoice__postnet"]
    assert [r["profile"] for r in read] == [r["profile"] for r in ordered]
    assert read[2]["batch fastvoice__encoder"] == "" and float(read[3]["batch fastvoice__decoder"]) == 2.3
    assert float(read[5]["batch tacovoice__postnet"]) == 1.5
    assert not math.isnan(float(read[0]["gap_p50_ms"]))


def test_metrics_url_defaults_to_tritons_port_on_the_servers_host() -> None:
    assert default_metrics_url("localhost:8001") == "http://localhost:8002/metrics"
    assert default_metrics_url("10.0.0.7:31001") == "http://10.0.0.7:8002/metrics"


@pytest.mark.parametrize("argv", [
    ["--profiles", ""], ["--profiles", "cpu,cpu"], ["--profiles", "no-such-profile"],
    ["--profiles", "cpu,cpu-static", "--url", "localhost:8001"], ["--profiles", "cpu,cpu-static", "--repo", "r"],
])
def test_bad_profiles_are_refused_before_anything_runs(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path)])


def test_the_limit_sits_next_to_the_served_figures() -> None:
    # 2 s of speech; calls per utterance at batch 32: 1 x 32 ms + 100 x 3.2 ms = 1 + 10 ms per stream -> RTFX 2 / 0.011
    limit = VoiceLimit("tacovoice", first_chunk_ms=1.5, sentences=10, tokens=50, audio_s=2.0,
                       networks=(NetworkLimit("encoder", 1, 50, 0.4, 32.0), NetworkLimit("decoder_step", 100, 50, 0.05, 3.2)))
    assert limit.batched_rtfx == pytest.approx(2.0 / 0.011)
    rows = [{**_row(p, "tacovoice", "stream", n), "first_chunk_p50_ms": f, "rtfx": x}
            for p, n, f, x in (("cpu", 1, 4.0, 90.0), ("cpu", 32, 40.0, 101.0), (PEER_PROFILE, 1, 6.0, 50.0))]
    rows.append({**_row("cpu", "tacovoice", "naive", 32), "rtfx": 999.0})  # the naive call is not the stream's figure
    table = limit_markdown([limit], rows, ["cpu", PEER_PROFILE], [1, 8, 32]).splitlines()
    assert table[0] == "| voice | source | first chunk p50 ms (N=1) | RTFX (N=32) |"
    assert table[2].startswith("| tacovoice | compute:") and table[2].endswith("| 1.5 | 182 |")
    assert table[3] == "| tacovoice | served: cpu | 4.0 | 101.0 |"
    assert table[4] == f"| tacovoice | served: {PEER_PROFILE} | 6.0 | – |"  # no level of 32 streams on the peer
    assert "| tacovoice | decoder_step | 100 | 50 | 0.050 | 3.200 | 0.1000 |" in table
    # a level missing from the run: the nearest measured ones head the columns
    assert limit_markdown([limit], rows, ["cpu"], [2, 8]).startswith("| voice | source | first chunk p50 ms (N=2) | RTFX (N=8) |")
    assert [r["network"] for r in limit_rows([limit])] == ["encoder", "decoder_step"]
    assert limit_rows([limit])[1]["per_row_ms"] == pytest.approx(0.1)


def test_help_says_the_peer_is_measured_over_http_and_the_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--transport", "udp", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    assert "--peer" in help_text and "http with --peer" in help_text and "1,2,4,8,16,32,48,64" in help_text


# --- a stream's loop: a busy refusal is its own outcome ------------------------------------------------------
class FakeTime:
    """A clock the fake client and the loop's sleep move on, so the loop's deadline is exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeClient:
    """melstream's Client as the loop uses it: ``stream`` yields mel chunks, or raises (lazily, as the real one does)
    the next of ``failures`` before any chunk; each utterance takes ``utterance_s`` on the fake clock."""

    def __init__(self, time_: FakeTime, failures: list[Exception], utterance_s: float = 0.5) -> None:
        self.time, self.failures, self.utterance_s = time_, list(failures), utterance_s
        self.texts: list[str] = []

    def stream(self, text: str, *, voice: str, chunk_frames: int | None, timeout_s: float) -> Iterator[np.ndarray]:
        self.texts.append(text)
        if self.failures:
            raise self.failures.pop(0)
        self.time.now += self.utterance_s
        for _ in range(3):
            yield np.zeros((4, 80), dtype=np.float32)


def test_a_busy_refusal_is_counted_retried_with_the_same_text_and_not_an_error() -> None:
    t = FakeTime()
    client = FakeClient(t, [ServerBusyError("voice 'v' is busy")])
    tally = Tally()
    stream_loop(client, "v", ["first", "second", "third"], 0, 1, chunk_frames=None, frame_s=0.01, seconds=1.0,
                tally=tally, sleep=t.sleep, clock=t.clock)
    # refused, then the same text again after one pause; then the next text; the deadline (1 s) passed after it
    assert client.texts == ["first", "first", "second"]
    assert tally.refused == 1 and tally.errors == [] and len(tally.timings) == 2
    assert len(t.sleeps) == 1
    assert REFUSED_PAUSE_S * (1 - REFUSED_JITTER) <= t.sleeps[0] <= REFUSED_PAUSE_S * (1 + REFUSED_JITTER)
    assert all(timing.chunks == 3 and timing.frames == 12 for timing in tally.timings)


def test_another_unavailable_is_an_error_and_a_refusal_at_the_deadline_is_not_retried() -> None:
    # ServerBusyError is a ServerUnavailableError: the other way round is not busy, but an error
    t = FakeTime()
    tally = Tally()
    stream_loop(FakeClient(t, [ServerUnavailableError("the server is down")]), "v", ["a", "b"], 1, 2, chunk_frames=None,
                frame_s=0.01, seconds=0.0, tally=tally, sleep=t.sleep, clock=t.clock)
    assert tally.refused == 0 and len(tally.errors) == 1 and tally.errors[0].startswith("ServerUnavailableError:")
    assert tally.timings == []

    t = FakeTime()
    tally = Tally()
    client = FakeClient(t, [ServerBusyError("busy")])
    stream_loop(client, "v", ["a", "b"], 1, 2, chunk_frames=None, frame_s=0.01, seconds=0.0, tally=tally, sleep=t.sleep,
                clock=t.clock)
    assert client.texts == ["b"] and tally.refused == 1 and tally.errors == [] and tally.timings == [] and t.sleeps == []


def test_refusals_are_their_own_column_and_stalls_count_only_admitted_utterances() -> None:
    smooth = stream_timing([0.1, 0.2, 0.3], [20, 20, 20], total_s=0.3, frame_s=0.01)
    stalled = stream_timing([0.1, 0.5, 0.6], [20, 20, 20], total_s=0.6, frame_s=0.01)  # 0.2 s of audio, next at +0.4 s
    assert (smooth.stalls, stalled.stalls) == (0, 1)
    r = row(Level("fastvoice", STREAM, 4, 2.0, (smooth, stalled), (), refused=6, admits=2))
    assert (r["utterances"], r["refused"], r["admits"], r["errors"]) == (2, 6, 2, 0)
    assert r["stalled_pct"] == 50.0  # 1 of the 2 admitted; the 6 refusals are not utterances
    nobody = row(Level("fastvoice", STREAM, 64, 2.0, (), (), refused=64))
    assert nobody["refused"] == 64 and math.isnan(nobody["stalled_pct"]) and nobody["utterances"] == 0
    assert markdown([r, nobody]).splitlines()[2].split(" | ")[4:7] == ["2", "6", "2"]  # utts, refused, admits
    cells = markdown([r, nobody]).splitlines()[3].split(" | ")
    assert cells[4:7] == ["0", "64", "–"]  # utts, refused, admits (not read)
    assert cells[-4] == "–"  # stalled %: no admitted utterance, no figure
    assert cells[-2] == "0"  # errors


# --- long texts --------------------------------------------------------------------------------------------
def test_long_texts_are_consecutive_held_out_sentences_a_minute_of_speech_and_under_the_text_limit() -> None:
    pool = texts()
    long = long_texts(pool)
    assert len(long) == len(pool)
    for i in (0, 7, len(pool) - 1):  # the last one wraps round to the first sentences
        assert long[i].startswith(pool[i] + " ")
        assert long[i].endswith(" " + pool[(i + LONG_SENTENCES - 1) % len(pool)])
    short = sorted(len(t) for t in pool)
    # about a minute of speech (~15 characters a second); far under the front end's 10,000 characters
    assert all(500 < len(t) < 2500 for t in long)
    assert min(len(t) for t in long) > 6 * short[len(short) // 2]
    assert long_texts(["a.", "b.", "c."], 2) == ["a. b.", "b. c.", "c. a."]
    with pytest.raises(ValueError):
        long_texts(pool, 0)


def test_level_plan_runs_long_texts_streamed_only_at_their_own_levels() -> None:
    assert level_plan(["short"], [1, 8]) == [(STREAM, [1, 8]), (NAIVE, [1, 8])]
    assert level_plan(["long", "short"], [1, 64], [4]) == [(STREAM, [1, 64]), (NAIVE, [1, 64]), (STREAM_LONG, [4])]
    assert level_plan(["long"], [32]) == [(STREAM_LONG, [32])]
    for bad in ([], ["medium"], ["short", "longer"]):
        with pytest.raises(ValueError):
            level_plan(bad, [1])


@pytest.mark.parametrize("argv", [["--texts", "medium"], ["--texts", ""], ["--long-streams", "0"], ["--long-sentences", "0"]])
def test_bad_text_options_are_refused_before_anything_runs(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path)])


# --- the host ----------------------------------------------------------------------------------------------
def test_host_facts_name_the_machine() -> None:
    facts = host_facts()
    assert {"cpu", "cpus", "usable_cpus", "memory", "system", "date"} <= set(facts)
    assert int(facts["cpus"]) >= int(facts["usable_cpus"]) >= 1
    assert facts["memory"].endswith(" GiB") and float(facts["memory"].split()[0]) > 0
    assert facts["cpu"] and facts["cpu"] != "?"  # Linux (the only host the benchmarks run on) names its CPU
    line = host_line({"cpu": "Some CPU 9000", "cpus": "16", "usable_cpus": "2", "memory": "7.5 GiB", "system": "Linux 6",
                      "date": "2026-01-02 03:04 UTC", "cpu_quota": "1.5 CPUs"})
    assert line == "host: Some CPU 9000, 16 CPUs, 2 usable (cgroup quota 1.5 CPUs), 7.5 GiB memory, Linux 6; 2026-01-02 03:04 UTC"
