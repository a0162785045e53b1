"""The quality tier: the shipped, trained voices in addons/ (and espeak-ng, their teacher and text front end)."""

from __future__ import annotations

from pathlib import Path

import pytest

import melstream

ADDONS = Path(__file__).resolve().parents[2] / "addons"


@pytest.fixture(scope="session")
def fast_addon() -> melstream.Addon:
    return melstream.load_addon(ADDONS / "fastvoice")


@pytest.fixture(scope="session")
def taco_addon() -> melstream.Addon:
    return melstream.load_addon(ADDONS / "tacovoice")
