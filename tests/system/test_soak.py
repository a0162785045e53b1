"""benchmarks/soak.py, short (`make soak` is the long run): mixed traffic against `melstream serve` with Python
backend stubs killed on a schedule.  Nothing may be lost or corrupted, and every voice whose stub was killed must
answer correctly again (serve's supervision).  With MELSTREAM_FULL (``make reliability``) it runs 3 minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FULL

pytestmark = pytest.mark.reliability

MINUTES = 3.0 if FULL else 0.5


def test_soak_with_stub_kills_loses_nothing(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak"
    # a 15 s client timeout: a hang is found within the run (and a stranded stream ends) without a minute's wait
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "soak.py"), "--minutes", str(MINUTES),
                           "--kill-every-s", "10", "--workers", "4", "--lost-after-s", "15", "--recovery-timeout-s", "20",
                           "--out", str(out)], cwd=root, capture_output=True, text=True, timeout=60 * MINUTES + 240)
    said = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert (out / "soak.json").exists(), said
    report = json.loads((out / "soak.json").read_text())
    totals = report["totals"]
    assert totals["lost"] == 0 and totals["corrupted"] == 0, said
    assert totals["verified_ok"] > 0 and totals["requests"] >= totals["verified_ok"], said
    assert proc.returncode == 0, said
    kills = report["kills"]
    assert kills, f"no stub was killed: {said}"
    not_back = [k for k in kills if k["recovered_s"] is None]
    assert not not_back, f"voices that did not answer again after a kill: {not_back}\n{said}"
    assert totals["kills_recovered"] == len(kills)
    # the report: the tables, one memory sample at least every 5 s, the plot
    md = (out / "soak.md").read_text()
    assert "## per window" in md and "## errors by kind" in md and "## kills" in md
    assert len(report["memory"]) >= 60 * MINUTES / 5 and all(m["rss_mib"] > 0 for m in report["memory"])
    assert report["windows"] and (out / "requests.csv").exists()
    assert (out / "soak.png").stat().st_size > 10_000
