"""The locust load test (loadtests/) against the real server: short headless runs, locust's own CSV read back."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from melstream.serving.server import TritonServer

VOICES = ["fastvoice", "tacovoice"]
Stats = dict[tuple[str, str], dict[str, str]]  # locust_stats.csv rows by (Type, Name)


def run_locust(root: Path, server: TritonServer, out: Path, *args: str, run_time: str) -> tuple[int, Stats, list[dict[str, str]], str]:
    """(exit code, stats rows by (type, name), failure rows, output) of a bounded headless run."""
    cmd = [sys.executable, "-m", "locust", "-f", str(root / "loadtests" / "locustfile.py"), "--headless",
           "--run-time", run_time, "--csv", str(out / "locust"), "--exit-code-on-error", "1", "--only-summary",
           "--grpc-url", server.grpc_url, "--http-url", server.http_url, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=out)
    with open(out / "locust_stats.csv", newline="") as f:
        stats = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    with open(out / "locust_failures.csv", newline="") as f:
        failures = list(csv.DictReader(f))
    return proc.returncode, stats, failures, proc.stdout + proc.stderr


def test_both_users_report_chunks_utterances_and_passing_checks(root: Path, server: TritonServer, tmp_path: Path) -> None:
    code, stats, failures, output = run_locust(
        root, server, tmp_path, "--users", "2", "--spawn-rate", "2", "--check-every", "1", "--think-s", "0,0.1",
        "--texts", "short:3,sentence:1", run_time="6s")
    assert failures == [], failures
    assert code == 0, output[-3000:]
    for kind in ("grpc", "sse"):
        for voice in VOICES:
            for event in ("first_chunk", "gap", "utterance", "check"):
                row = stats.get((kind, f"{event} [{voice}]"))
                assert row is not None, (kind, event, voice, sorted(stats))
                assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0, row
            utterances = stats[(kind, f"utterance [{voice}]")]
            firsts = stats[(kind, f"first_chunk [{voice}]")]
            assert int(firsts["Request Count"]) == int(utterances["Request Count"])  # one first chunk per utterance
            assert float(utterances["Average Content Size"]) > 10  # frames per utterance
            assert 0 < float(firsts["Median Response Time"]) <= float(utterances["Median Response Time"])


def test_errors_are_failures_that_carry_the_servers_message(root: Path, server: TritonServer, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello there.\n" + "a" * 10001 + "\n")
    code, stats, failures, output = run_locust(
        root, server, tmp_path, "--users", "2", "--spawn-rate", "2", "--voices", "fastvoice,nosuchvoice",
        "--texts", f"@{texts}", "--think-s", "0,0.05", "--check-every", "1", "--reference-addons", "", run_time="4s")
    assert code == 1, output[-3000:]
    errors = {(f["Method"], f["Name"], f["Error"]) for f in failures}
    for kind in ("grpc", "sse"):
        assert any(m == kind and n == "utterance [fastvoice]" and "text is 10001 characters; the limit is 10000" in e
                   for m, n, e in errors), errors
        assert any(m == kind and n == "utterance [nosuchvoice]" and "unknown model: 'nosuchvoice'" in e for m, n, e in errors), errors
        # the good text still streams, and its check against the server's whole utterance passes
        check = stats[(kind, "check [fastvoice]")]
        assert int(check["Request Count"]) > 0 and int(check["Failure Count"]) == 0, check
    assert not any(n.startswith(("first_chunk", "gap", "check")) for _, n, _ in errors), errors
