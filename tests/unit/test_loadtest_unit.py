"""The load test's pure parts (loadtests/scenario.py, loadtests/streams.py): no server, no locust."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from loadtests.scenario import CATEGORIES, PARAGRAPHS, SHORT, parse_range, parse_text_mix, parse_weights
from loadtests.streams import check_equal, check_shape, grpc_request
from melstream_client.wire import WireError, timed_sse_events


def test_voice_weights() -> None:
    w = parse_weights("fastvoice:3, tacovoice:1", what="voice")
    assert w.items == ("fastvoice", "tacovoice") and w.share("fastvoice") == 0.75
    assert parse_weights("a,b").weights == (1.0, 1.0)
    rng = random.Random(0)
    picks = [w.pick(rng) for _ in range(4000)]
    assert 0.72 < picks.count("fastvoice") / len(picks) < 0.78


@pytest.mark.parametrize("spec, message", [
    ("", "no voice"), ("a:0", "must be > 0"), ("a:-1", "must be > 0"), ("a:x", "not a number"), ("a:nan", "must be > 0"),
    ("a,a", "given twice"), (":3", "empty voice name"),
])
def test_voice_weights_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weights(spec, what="voice")


def test_text_mixes() -> None:
    mix = parse_text_mix("mix")
    assert mix.categories.share("short") == 0.5 and mix.categories.share("paragraph") == 0.1
    rng = random.Random(1)
    drawn = [mix.pick(rng) for _ in range(5000)]
    assert 0.07 < sum(t in PARAGRAPHS for t in drawn) / len(drawn) < 0.13
    assert {parse_text_mix("short").pick(rng) for _ in range(200)} <= set(SHORT)
    assert parse_text_mix("short:1,paragraph:1").categories.items == ("short", "paragraph")
    with pytest.raises(ValueError, match="unknown text category 'poems'"):
        parse_text_mix("poems:1")


def test_text_lengths_and_ascii() -> None:
    for category, (lo, hi) in {"short": (2, 5), "sentence": (8, 25), "paragraph": (40, 120)}.items():
        for text in CATEGORIES[category]:
            assert text.isascii() and lo <= len(text.split()) <= hi, (category, text)


def test_texts_file(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("# comment\nfirst text\n\n  second text\n")
    assert sorted(parse_text_mix(f"@{f}").all_texts()) == ["  second text", "first text"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no texts"):
        parse_text_mix(f"@{tmp_path / 'empty.txt'}")
    with pytest.raises(ValueError, match="cannot read"):
        parse_text_mix(f"@{tmp_path / 'missing.txt'}")


def test_think_range() -> None:
    assert parse_range("0.5,2") == (0.5, 2.0) and parse_range("1") == (1.0, 1.0)
    for bad in ("2,1", "-1,1", "a,b", "1,2,3", ""):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_sse_events_are_timed_at_their_data_line() -> None:
    body = io.BytesIO(b'data: {"MEL": [1, 2]}\n\n: comment\nevent: x\ndata: {"error":\ndata: "boom"}\n\ndata: {"MEL": []}')
    clock = iter(range(100))
    events = list(timed_sse_events(body, lambda: float(next(clock))))  # the load test reads the response line by line
    assert events == [(0.0, {"MEL": [1, 2]}), (1.0, {"error": "boom"}), (2.0, {"MEL": []})]
    with pytest.raises(WireError):  # a ValueError: the load test reports it as the utterance's error
        list(timed_sse_events(io.BytesIO(b"data: [1]\n\n"), lambda: 0.0))


def test_shape_check() -> None:
    ok = [np.zeros((3, 80), np.float32), np.ones((1, 80), np.float32)]
    assert check_shape(ok, 80) is None
    assert check_shape([], 80) == "no chunks"
    assert "float32 [n>0, 80]" in str(check_shape([np.zeros((0, 80), np.float32)], 80))
    assert "float64" in str(check_shape([np.zeros((2, 80))], 80))
    assert "[2, 79]" in str(check_shape([np.zeros((2, 79), np.float32)], 80))
    assert "NaN" in str(check_shape([np.full((2, 80), np.nan, np.float32)], 80))


def test_equality_check() -> None:
    ref = np.arange(160, dtype=np.float32).reshape(2, 80)
    assert check_equal([ref[:1], ref[1:]], ref, 1e-4) == (None, 0.0)
    why, diff = check_equal([ref + 1e-3], ref, 1e-4)
    assert why is not None and "max |diff| 0.001" in why and diff == pytest.approx(1e-3, rel=1e-2)
    assert check_equal([ref[:1]], ref, 1e-4)[0] == "1 frames, the reference has 2"
    assert check_equal([np.full_like(ref, np.nan)], ref, 1.0)[0] is not None  # NaN never passes


def test_grpc_request_encodes_text_as_triton_bytes() -> None:
    r = grpc_request("fastvoice", "héllo", chunk_frames=7)
    assert r.model_name == "fastvoice" and [i.name for i in r.inputs] == ["TEXT", "CHUNK_FRAMES"]
    data = "héllo".encode()
    assert r.raw_input_contents[0] == struct.pack("<I", len(data)) + data
    assert np.frombuffer(r.raw_input_contents[1], "<i4").tolist() == [7]
    assert r.parameters["triton_enable_empty_final_response"].bool_param
    assert [i.name for i in grpc_request("v", "x").inputs] == ["TEXT"]
