"""The pure parts of benchmarks/overload.py: the long texts (by sentences or by characters), what counts as
unanswered, the row, the table and the verdicts (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.overload import (
    ERROR,
    HANG,
    MAX_CHARS,
    REFUSED,
    SERVED,
    Request,
    Run,
    long_text,
    main,
    markdown,
    row,
    verdicts,
)
from melstream_client.errors import ClientError, ClientTimeoutError, ServerBusyError
from tests.integration.test_admission import SENTENCES


def test_a_long_text_by_sentences_is_the_clients_window() -> None:
    text = long_text(3, 4)
    assert text == f"{SENTENCES[3]} {SENTENCES[4]} {SENTENCES[5]} {SENTENCES[6]}"
    last = len(SENTENCES) - 1  # the window wraps round
    assert long_text(last, 2) == f"{SENTENCES[last]} {SENTENCES[0]}"


@pytest.mark.parametrize("k", [0, 17, 99])
def test_a_long_text_by_characters_is_whole_sentences_up_to_the_limit(k: int) -> None:
    text = long_text(k, chars=9000)
    assert 8000 < len(text) <= 9000 < MAX_CHARS
    # whole sentences, the client's window in order (wrapping round the held-out file more than once)
    n = 0
    rest = text
    while rest:
        sentence = SENTENCES[(k + n) % len(SENTENCES)]
        assert rest.startswith(sentence), (n, rest[:80])
        rest = rest[len(sentence):].removeprefix(" ")
        n += 1
    assert n > len(SENTENCES)
    assert len(text) + 1 + len(SENTENCES[(k + n) % len(SENTENCES)]) > 9000  # the next sentence would not fit
    assert long_text(k, 4, chars=9000) == text  # --chars wins over --sentences


def test_a_limit_shorter_than_the_first_sentence_still_gives_one() -> None:
    assert long_text(5, chars=10) == SENTENCES[5]
    assert long_text(5, chars=len(SENTENCES[5]) + len(SENTENCES[6]) + 1) == f"{SENTENCES[5]} {SENTENCES[6]}"


def request(outcome: str, chunks: int, exc: BaseException | None = None, first_s: float | None = 0.05) -> Request:
    return Request("tacovoice", "load", 0.0, outcome, first_s, 1.0, chunks, completed=outcome == SERVED, exc=exc)


def test_unanswered_is_neither_a_chunk_nor_a_refusal() -> None:
    assert request(HANG, 0, first_s=None).unanswered
    assert request(ERROR, 0, ClientTimeoutError("deadline exceeded")).unanswered
    assert not request(ERROR, 0, ClientError("internal")).unanswered  # an error response is an answer
    assert not request(REFUSED, 0, ServerBusyError("busy")).unanswered
    assert not request(SERVED, 12).unanswered
    assert not request(HANG, 3).unanswered  # it hangs after chunks came: a hang, but it was answered


def test_the_row_counts_unanswered_and_gives_the_latency_percentiles() -> None:
    run = Run("tacovoice", "fastvoice", streams=6, seconds=0, limit=2, text_chars=8923)
    run.requests = [request(SERVED, 10, first_s=0.2), request(SERVED, 10, first_s=0.4),
                    request(REFUSED, 0, ServerBusyError("busy"), first_s=0.01),
                    request(REFUSED, 0, ServerBusyError("busy"), first_s=0.03),
                    request(ERROR, 0, ClientTimeoutError("deadline"), first_s=60.0), request(HANG, 0, first_s=None)]
    r = row(run)
    assert (r["served"], r["refused"], r["errors"], r["hangs"], r["unanswered"], r["text_chars"]) == (2, 2, 1, 1, 2, 8923)
    assert r["first_p50_ms"] == pytest.approx(300.0) and r["first_p99_ms"] == pytest.approx(398.0)
    assert r["refusal_p50_ms"] == pytest.approx(20.0) and r["refusal_p99_ms"] == pytest.approx(29.8)
    nothing_else = verdicts(r)[2]
    assert not nothing_else[0] and "2 unanswered" in nothing_else[1]
    header, _, line = markdown([r]).splitlines()
    cells = dict(zip(header.split(" | "), line.split(" | "), strict=True))
    assert cells["unanswered"] == "2" and cells["chars"] == "8923"

    run.requests = run.requests[:4]  # served and refused only: nothing unanswered
    assert verdicts(row(run))[2][0]


@pytest.mark.parametrize("argv", [["--chars", "0"], ["--chars", str(MAX_CHARS + 1)], ["--sentences", "0"]])
def test_bad_text_lengths_are_refused_before_anything_runs(tmp_path: Path, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), *argv])


def test_help_says_how_to_run_long_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--chars 9000 is the long-text run" in help_text and "--sentences 60" in help_text
