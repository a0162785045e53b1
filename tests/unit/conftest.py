"""The unit tier: no server, no trained voice, no espeak-ng; fast.

Fixtures: the synthetic voices of tests/synthetic.py (tiny networks with seeded random weights, built once
per session in a temporary directory).

Rules, enforced while a unit test is collected, set up, run and torn down (an audit hook, see
:class:`Guard`): nothing may open or list a path under ``addons/`` (the trained voices), load
libespeak-ng, or start espeak-ng, tritonserver, docker-compose or locust.  A broken rule fails the
test even if the code under test swallowed the error it raised.
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import melstream
from tests import synthetic

ROOT = Path(__file__).resolve().parents[2]
ADDONS = ROOT / "addons"
#: programs a unit test must not start (servers, load generators, the espeak-ng teacher)
FORBIDDEN_PROGRAMS = ("espeak", "tritonserver", "docker-compose", "docker", "locust")


class UnitTierViolation(AssertionError):
    """A unit test broke a rule of the unit tier."""


class Guard:
    """An audit hook (:func:`sys.addaudithook`, installed once, inert while ``active`` is false) that
    refuses, while a unit test runs:

    * ``open`` of a path under ``addons/`` (event args: path, mode, flags; the path may be str, bytes,
      a path-like object or a file descriptor), ``os.listdir``/``os.scandir`` of one (args: path) and
      ``shutil.copytree`` from one (args: src, dst);
    * ``ctypes.dlopen`` of libespeak-ng (args: name; what ``ctypes.CDLL`` raises before it loads);
    * ``subprocess.Popen`` of a forbidden program (args: executable, args, cwd, env).

    ONNX Runtime opens model files in C++, where no audit event is raised, so ``InferenceSession``
    is wrapped to apply the same path rule; and melstream.espeak's entry points are wrapped, since a run
    of several tiers may have loaded libespeak-ng before the unit tests (no dlopen left to see).

    The hook raises :class:`UnitTierViolation` (the operation does not happen) and records it; the
    test's report is turned into a failure when anything was recorded during it.
    """

    def __init__(self) -> None:
        self.active = False
        self.violations: list[str] = []
        self.addons = os.path.realpath(ADDONS)

    def under_addons(self, path: Any) -> bool:
        if path is None or isinstance(path, int):
            return False
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        for candidate in (os.path.abspath(text), os.path.realpath(text)):
            if candidate == self.addons or candidate.startswith(self.addons + os.sep):
                return True
        return False

    def violation(self, what: str) -> None:
        here = os.path.realpath(__file__)
        stack = [f for f in traceback.extract_stack() if os.path.realpath(f.filename) != here]
        where = "".join(traceback.format_list(stack[-6:])).rstrip()
        self.violations.append(f"{what}, from\n{where}")
        raise UnitTierViolation(f"unit tier: {what} (move the test to tests/quality/ or tests/system/, or use the synthetic voices)")

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "open" or event in ("os.listdir", "os.scandir") or event == "shutil.copytree":
            path = args[0] if args else None
            if self.under_addons(path):
                self.violation(f"{event} of {path!s} under addons/ (a trained voice)")
        elif event == "ctypes.dlopen":
            name = args[0] if args else None
            if name is not None and "espeak" in os.fsdecode(name):
                self.violation(f"ctypes.dlopen of {name} (libespeak-ng)")
        elif event == "subprocess.Popen":
            executable, argv = args[0], args[1]
            words = [executable] + (list(argv) if isinstance(argv, (list, tuple)) else [argv])
            for word in words:
                if word is None:
                    continue
                base = os.path.basename(os.fsdecode(word) if isinstance(word, (str, bytes, os.PathLike)) else str(word))
                if any(base == p or base.startswith(p + "-") or base.startswith(p + ".") for p in FORBIDDEN_PROGRAMS):
                    self.violation(f"subprocess {base} ({' '.join(map(str, words))[:200]})")
                    return

    @contextmanager
    def on(self) -> Iterator[None]:
        previous, self.active = self.active, True
        try:
            yield
        finally:
            self.active = previous

    @contextmanager
    def expecting(self) -> Iterator[list[str]]:
        """For the guard's own tests: violations inside are collected here instead of failing the test."""
        saved, self.violations = self.violations, []
        seen = self.violations
        try:
            yield seen
        finally:
            self.violations = saved

    def take(self) -> list[str]:
        found, self.violations = self.violations, []
        return found


GUARD = Guard()
sys.addaudithook(GUARD.audit)


def _wrap_onnxruntime() -> None:
    import onnxruntime

    cls = onnxruntime.InferenceSession
    original: Callable[..., None] = cls.__init__
    if getattr(original, "unit_tier_guard", False):
        return

    def init(self: Any, path_or_bytes: Any, *args: Any, **kwargs: Any) -> None:
        if GUARD.active and not isinstance(path_or_bytes, bytes) and GUARD.under_addons(path_or_bytes):
            GUARD.violation(f"onnxruntime.InferenceSession of {path_or_bytes} under addons/ (a trained voice)")
        original(self, path_or_bytes, *args, **kwargs)

    init.unit_tier_guard = True  # type: ignore[attr-defined]
    cls.__init__ = init  # type: ignore[method-assign]


_wrap_onnxruntime()


def _wrap_espeak() -> None:
    """libespeak-ng is loaded once per process: in a run of several tiers another tier may have loaded it
    already (no dlopen left to see), so using it through melstream.espeak is refused too."""
    import melstream.espeak as espeak

    def refusing(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if GUARD.active:
                GUARD.violation(f"melstream.espeak.{name} (libespeak-ng)")
            return original(*args, **kwargs)

        call.unit_tier_guard = True  # type: ignore[attr-defined]
        return call

    if getattr(espeak.get_espeak, "unit_tier_guard", False):
        return
    espeak.get_espeak = refusing("get_espeak", espeak.get_espeak)  # type: ignore[assignment]
    for name, member in vars(espeak.Espeak).items():
        if inspect.isfunction(member) and not name.startswith("__"):  # methods (a plain function binds as they do)
            setattr(espeak.Espeak, name, refusing(f"Espeak.{name}", member))


_wrap_espeak()


def _fail_report(report: Any, found: list[str]) -> None:
    report.outcome = "failed"
    report.longrepr = "broke the unit tier's rules:\n" + "\n".join(found)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    with GUARD.on():
        outcome = yield
    found = GUARD.take()
    if found:
        _fail_report(outcome.get_result(), found)


# Setup, call and teardown hooks reach this conftest only for tests below its directory (pytest calls them
# through item.ihook); pytest_runtest_protocol would see every test of the session, other tiers' too.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with GUARD.on():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with GUARD.on():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with GUARD.on():
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    found = GUARD.take()
    if found:
        _fail_report(outcome.get_result(), found)


@pytest.fixture
def guard() -> Guard:
    return GUARD


# --- the synthetic voices ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic_addons(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory laid out like addons/, holding the two synthetic voices (``tinyfast``, ``tinytaco``)."""
    return synthetic.build_addons(tmp_path_factory.mktemp("synthetic") / "addons")


@pytest.fixture(scope="session")
def fast_addon(synthetic_addons: Path) -> melstream.Addon:
    """The synthetic duration-based voice (fastvoice's architecture and stack, toy sizes)."""
    return melstream.load_addon(synthetic_addons / synthetic.FAST)


@pytest.fixture(scope="session")
def taco_addon(synthetic_addons: Path) -> melstream.Addon:
    """The synthetic attention voice (tacovoice's architecture and stack, toy sizes)."""
    return melstream.load_addon(synthetic_addons / synthetic.TACO)
