"""The unit tier's rules hold because tests/unit/conftest.py enforces them: these tests break each rule on
purpose, inside ``guard.expecting()``, and check that the guard refused it before it happened."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.conftest import ADDONS, ROOT, Guard, UnitTierViolation

ADDON_JSON = ADDONS / "fastvoice" / "addon.json"


def libraries_loaded() -> str:
    return Path("/proc/self/maps").read_text()


def test_the_guard_is_on_during_a_unit_test(guard: Guard) -> None:
    assert guard.active


@pytest.mark.parametrize("how", ["open", "open bytes path", "Path.read_text", "os.open", "listdir", "scandir", "copytree", "via a symlink"])
def test_reading_a_trained_voice_is_refused(guard: Guard, how: str, tmp_path: Path) -> None:
    link = tmp_path / "elsewhere"
    link.symlink_to(ADDONS)
    attempts = {
        "open": lambda: open(ADDON_JSON),  # noqa: SIM115 - refused before anything opens
        "open bytes path": lambda: open(os.fsencode(ADDON_JSON), "rb"),  # noqa: SIM115
        "Path.read_text": ADDON_JSON.read_text,
        "os.open": lambda: os.open(ADDON_JSON, os.O_RDONLY),
        "listdir": lambda: os.listdir(ADDONS),
        "scandir": lambda: os.scandir(ADDONS / "fastvoice"),
        "copytree": lambda: shutil.copytree(ADDONS / "fastvoice", tmp_path / "copy"),
        "via a symlink": lambda: (link / "fastvoice" / "addon.json").read_bytes(),
    }
    with guard.expecting() as seen, pytest.raises(UnitTierViolation, match="under addons/"):
        attempts[how]()
    assert len(seen) == 1 and "addons" in seen[0]


def test_loading_a_trained_voice_is_refused(guard: Guard) -> None:
    # refused by path, before anything is opened: this holds where addons/ is absent too (the tier runs so)
    import onnxruntime

    with guard.expecting() as seen, pytest.raises(UnitTierViolation, match="InferenceSession"):  # ONNX Runtime opens files in C++
        onnxruntime.InferenceSession(str(ADDONS / "fastvoice" / "decoder.onnx"))
    assert len(seen) == 1


def test_libespeak_ng_is_not_loaded(guard: Guard) -> None:
    import melstream.espeak
    from melstream.text import get_frontend

    assert "libespeak-ng" not in libraries_loaded()  # the unit tier runs first, even in a run of every tier
    with guard.expecting() as seen:
        with pytest.raises(UnitTierViolation, match="libespeak-ng"):
            ctypes.CDLL("libespeak-ng.so.1")
        with pytest.raises(UnitTierViolation, match="libespeak-ng"):
            melstream.espeak.get_espeak()
        with pytest.raises(UnitTierViolation, match="libespeak-ng"):  # an instance made before this test
            melstream.espeak.Espeak.phonemize(object.__new__(melstream.espeak.Espeak), "hello")
        with pytest.raises(UnitTierViolation, match="libespeak-ng"):  # the phoneme front end of the shipped voices
            get_frontend("espeak-phonemes", symbols=["_", "~", "h"]).encode("hello")
    assert len(seen) == 4
    assert "libespeak-ng" not in libraries_loaded()


@pytest.mark.parametrize("argv", [["espeak-ng", "--version"], ["docker-compose", "version"], ["tritonserver", "--help"],
                                  [sys.executable, "-m", "locust", "--version"]])
def test_servers_and_the_teacher_are_not_started(guard: Guard, argv: list[str]) -> None:
    with guard.expecting() as seen, pytest.raises(UnitTierViolation, match="subprocess"):
        subprocess.run(argv, capture_output=True, check=False)
    assert len(seen) == 1


def test_what_the_unit_tier_may_do_is_let_through(guard: Guard, fast_addon: object, tmp_path: Path) -> None:
    with guard.expecting() as seen:
        (tmp_path / "addons").mkdir()
        (tmp_path / "addons" / "x.json").write_text("{}")  # a directory named addons elsewhere is fine
        assert (ROOT / "pyproject.toml").read_text()
        assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True).stdout == "ok\n"
    assert seen == []
    assert not Guard().active  # a guard is off until a unit test turns it on: other tiers run unguarded


def test_a_swallowed_violation_still_fails_the_test(tmp_path: Path) -> None:
    """Code that catches the guard's error cannot hide the broken rule: the report is a failure."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.unit.conftest"]  # the unit tier\'s guard, as a plugin\n')
    (tmp_path / "test_swallow.py").write_text(textwrap.dedent(f'''
        def test_reads_a_voice_and_hides_it():
            try:
                open({str(ADDON_JSON)!r}).read()
            except Exception:
                pass

        def test_reads_nothing():
            pass
    '''))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout + proc.stderr
    assert "broke the unit tier's rules" in proc.stdout and "test_reads_a_voice_and_hides_it" in proc.stdout


def test_a_module_that_reads_a_voice_at_import_fails_to_collect(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.unit.conftest"]  # the unit tier\'s guard, as a plugin\n')
    (tmp_path / "test_at_import.py").write_text(f"import json\nDATA = json.load(open({str(ADDON_JSON)!r}))\n\n\ndef test_x():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode != 0 and "1 error" in proc.stdout, proc.stdout + proc.stderr
    assert "ERROR collecting test_at_import.py" in proc.stdout and f"open of {ADDON_JSON} under addons/" in proc.stdout
