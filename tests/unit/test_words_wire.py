"""Word timestamps on the wire (issue 13): the TIMESTAMPS input, the WORDS output, and the voice model sending
them with every chunk only when asked; with fakes (no server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from melstream.serving.voice_model import VoiceModel
from melstream_client import wire
from tests.unit.test_voice_model import WAIT_S, FakePb, FakeRequest, FakeTensor


def test_words_round_trip_through_grpc_and_server_sent_events() -> None:
    words = [("hello", 0.0, 0.31234), ("wörld", 0.31234, 0.8), ("", 0.8, 0.8)]
    value = wire.encode_words(words)
    assert value.dtype == object and value.shape == (1,)
    expected = [wire.Word("hello", 0.0, 0.3123), wire.Word("wörld", 0.3123, 0.8), wire.Word("", 0.8, 0.8)]
    assert wire.decode_words(value) == expected  # gRPC: an object array of one JSON bytes
    text = value[0].decode()
    assert wire.decode_words(text) == expected and wire.decode_words([text]) == expected  # SSE: the JSON, or a list of it
    assert wire.decode_words(wire.encode_words([])) == []


@pytest.mark.parametrize("bad", [b"not json", json.dumps([{"word": "x"}]).encode(), ["a", "b"], json.dumps({"word": 1}).encode()])
def test_a_bad_words_output_is_a_wire_error(bad: Any) -> None:
    with pytest.raises(wire.WireError, match="WORDS"):
        wire.decode_words(bad)


def test_a_chunk_carries_words_only_when_sent() -> None:
    mel = np.zeros((2, 3), np.float32)
    assert "words" not in wire.decode_chunk({wire.MEL: mel}, n_mels=3)
    chunk = wire.decode_chunk({wire.MEL: mel, wire.WORDS: wire.encode_words([("a", 0.0, 0.1)])}, n_mels=3)
    assert chunk is not None and chunk["words"] == [wire.Word("a", 0.0, 0.1)]


def test_the_request_asks_for_words_only_when_told() -> None:
    names = [inp.name for inp, _ in wire.request_tensors("Hi.")]
    assert wire.TIMESTAMPS.name not in names
    tensors = dict((inp.name, value) for inp, value in wire.request_tensors("Hi.", words=True))
    assert tensors[wire.TIMESTAMPS.name].tolist() == [True]
    assert json.loads(wire.request_json("Hi.", words=True))[wire.TIMESTAMPS.name] is True
    with pytest.raises(wire.WireError, match="TIMESTAMPS must be a bool"):
        wire.request_tensors("Hi.", words="yes")  # type: ignore[arg-type]


class WordsPipeline:
    """Two chunks, each with the words that end in it (when asked for words)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def inputs_for(self, text: Any, **kw: Any) -> dict[str, np.ndarray]:
        return {}

    def stream_outputs(self, text: Any, **kw: Any) -> Iterator[dict[str, Any]]:
        self.calls.append(kw)
        words = kw.get("words", False)
        for i, spoken in enumerate([[("hello", 0.0, 0.2)], [("there", 0.2, 0.45)]]):
            chunk: dict[str, Any] = {"mel": np.full((3, 4), float(i), np.float32)}
            if words:
                chunk["words"] = spoken
            yield chunk


def run(model: VoiceModel, inputs: dict[str, Any]) -> FakeRequest:
    req = FakeRequest({name: FakeTensor(name, value) for name, value in inputs.items()})
    model.execute([req])
    assert req.sender.done.wait(WAIT_S)
    return req


def test_the_voice_sends_words_with_every_chunk_only_when_asked() -> None:
    pipeline = WordsPipeline()
    model = VoiceModel(FakePb())
    model.serve("tiny", pipeline)
    text = np.array([b"Hello there."], dtype=object)
    plain = run(model, {wire.TEXT.name: text})
    assert pipeline.calls[-1] == {"pace": None, "chunk_frames": None}  # no word clock when not asked
    assert all(set(c) == {wire.MEL} for c in plain.sender.chunks())
    timed = run(model, {wire.TEXT.name: text, wire.TIMESTAMPS.name: np.array([True])})
    assert pipeline.calls[-1]["words"] is True
    chunks = timed.sender.chunks()
    assert [set(c) for c in chunks] == [{wire.MEL, wire.WORDS}] * 2
    assert [wire.decode_words(c[wire.WORDS]) for c in chunks] == [[wire.Word("hello", 0.0, 0.2)], [wire.Word("there", 0.2, 0.45)]]
    bad = run(model, {wire.TEXT.name: text, wire.TIMESTAMPS.name: np.array([3], np.int32)})
    assert "input TIMESTAMPS must be BOOL" in bad.sender.errors()[0][1]


def test_a_voice_that_cannot_time_its_words_refuses_timestamps_as_bad_input() -> None:
    pipeline = WordsPipeline()
    pipeline.gives_words = False  # type: ignore[attr-defined]  # e.g. a stack ending in a vocoder
    model = VoiceModel(FakePb())
    model.serve("tiny", pipeline)
    refused = run(model, {wire.TEXT.name: np.array([b"Hi."], dtype=object), wire.TIMESTAMPS.name: np.array([True])})
    (code, message), = refused.sender.errors()
    assert code == "INVALID_ARG" and "TIMESTAMPS" in message and "cannot time its words" in message
    assert not pipeline.calls  # nothing was spoken
    assert run(model, {wire.TEXT.name: np.array([b"Hi."], dtype=object)}).sender.chunks()  # without: fine
