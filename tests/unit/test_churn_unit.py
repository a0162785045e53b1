"""The pure parts of benchmarks/churn.py: how a storm spreads its streams, the growth fit, what counts as a crash
in the server's log, PSS read from smaps_rollup (of this test's own process), and the --long text."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmarks.churn import LOG_ALARMS, LONG_WORDS, SENTENCES, TEXT, alive, growth, log_alarms, long_text, main, memory, plan, slope


def test_plan_spreads_the_streams_evenly_over_the_voices_and_interleaves_http() -> None:
    p = plan(500, 200, ("fastvoice", "tacovoice"))
    assert {v: (k.count("grpc"), k.count("http")) for v, k in p.items()} == {"fastvoice": (250, 100), "tacovoice": (250, 100)}
    for kinds in p.values():  # HTTP streams among the gRPC ones, not bunched at one end
        first_http = [i for i, k in enumerate(kinds) if k == "http"]
        assert first_http[0] < 5 and first_http[-1] > len(kinds) - 5
    assert plan(3, 0, ("a", "b")) == {"a": ["grpc", "grpc"], "b": ["grpc"]}
    assert plan(0, 0, ("a",)) == {"a": []}


def test_growth_is_the_slope_after_the_warm_up_over_the_rounds_the_server_survived() -> None:
    assert math.isclose(slope([1, 2, 3], [10.0, 12.0, 14.0]), 2.0)
    assert math.isnan(slope([1], [1.0]))
    ok = {"ready": True, "stubs_alive": 12, "stubs": 12, "log_alarms": 0}
    rows = [{**ok, "round": r, "pss_mib": pss} for r, pss in ((1, 480.0), (2, 490.0), (3, 493.0), (4, 494.0), (5, 495.0))]
    fit = growth(rows, warmup=2)
    assert fit is not None and math.isclose(fit[0], 1.0)
    dead = {**rows[-1], "round": 6, "pss_mib": 450.0, "ready": False}  # a crashed server's round is left out
    assert not alive(dead) and growth([*rows, dead], warmup=2) == fit
    assert growth(rows[:3], warmup=2) is None  # one round after the warm-up: no figure
    assert not alive({**ok, "stubs_alive": 11}) and not alive({**ok, "log_alarms": 1})


def test_log_alarms_are_crashes_not_a_stop_or_a_refusal(tmp_path: Path) -> None:
    crashes = ["Signal (6) received.", "Signal (11) received.",
               "E1125 20:36:07.745 7692 call_op_set.h:975] API misuse of type GRPC_CALL_ERROR_TOO_MANY_OPERATIONS observed",
               "E1125 20:19:39.274 22357 interceptor_common.h:239] ASSERTION FAILED: ops_",
               "terminate called after throwing an instance of 'boost::interprocess::lock_exception'",
               "I1125 20:19:40.266 22141 pb_stub.cc:2145]  Non-graceful termination detected. "]
    fine = ["Signal (2) received.", "Signal (15) received.",
            "W1125 voice_model.py:327] \"voice 'fastvoice': stream refused by a network model: Request timeout expired\"",
            "ConnectionAbortedError: [Errno 103] Software caused connection abort"]
    assert all(LOG_ALARMS.search(line) for line in crashes)
    assert not any(LOG_ALARMS.search(line) for line in fine)
    log = tmp_path / "tritonserver.log"
    log.write_text("\n".join(fine + crashes[:2]) + "\n")
    assert log_alarms(log) == crashes[:2]
    assert log_alarms(tmp_path / "missing.log") == [] and log_alarms(None) == []


def test_memory_sums_pss_and_rss_over_a_process_group() -> None:
    pss, rss, procs = memory(os.getpgid(0))
    assert procs >= 1 and 0 < pss <= rss


def test_the_long_text_is_whole_held_out_sentences_of_about_600_words() -> None:
    text = long_text()
    sentences = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]
    words = len(text.split())
    longest = max(len(x.split()) for x in sentences)
    assert LONG_WORDS <= words < LONG_WORDS + longest  # stops at the sentence that reaches 600
    assert text.startswith(sentences[0] + " " + sentences[1])
    assert 3000 < len(text) < 10_000  # far longer than the one sentence, under the voices' limit
    assert len(text) > 10 * len(TEXT)


def test_the_long_text_goes_round_the_sentences_again_if_need_be(tmp_path: Path) -> None:
    few = tmp_path / "sentences.txt"
    few.write_text("One two three.\n\nFour five.\n")
    assert long_text(6, few) == "One two three. Four five. One two three."
    assert long_text(1, few) == "One two three."
    few.write_text("\n")
    with pytest.raises(ValueError):
        long_text(6, few)


def test_help_offers_long_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--long" in capsys.readouterr().out


def test_the_wave_is_sized_to_what_the_voice_admits_now_else_its_config() -> None:
    """admission_limit reads the voice's melstream_admitted_streams gauge; a voice without one (or a server without
    metrics) falls back to the config's max_streams, here unreachable: the default."""
    import http.server
    import threading

    from benchmarks.churn import admission_limit

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b'melstream_admitted_streams{voice="tacovoice"} 23\nmelstream_active_streams{voice="fastvoice"} 2\n'
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        metrics = f"127.0.0.1:{server.server_address[1]}"
        nowhere = "127.0.0.1:9"  # discard port: nothing answers there
        assert admission_limit(nowhere, "tacovoice", default=5, metrics_url=metrics) == 23
        assert admission_limit(nowhere, "fastvoice", default=5, metrics_url=metrics) == 5
        assert admission_limit(nowhere, "tacovoice", default=7) == 7
    finally:
        server.shutdown()
