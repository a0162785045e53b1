"""melstream.wire.error_code reads the code of Triton's own refusals of a malformed request, which reach a
gRPC stream as a message only (no status): found by the bad-input corpus (tests/bad_inputs.py), where these
came back as UNKNOWN, so the clients raised a bare ClientError instead of InvalidInputError."""

from __future__ import annotations

import pytest

from melstream.errors import InvalidInputError
from melstream_client import wire
from melstream_client._errors import client_error

# Triton 2.51's messages, as a gRPC stream delivered them to tritonclient
REFUSALS = [
    "incomplete string data for inference input 'TEXT', expecting string of length 5 but only 2 bytes available",
    "[request id: bad] input byte size mismatch for input 'CHUNK_FRAMES' for model 'fastvoice'. Expected 4, got 3",
    "[request id: bad] input 'TEXT' already exists in request",
    "[request id: bad] expected 1 inputs but got 0 inputs for model 'fastvoice__text_encoder'. Got input(s) [], "
    "but missing required input(s) ['tokens']. Please provide all required input(s).",
]


@pytest.mark.parametrize("message", REFUSALS)
def test_tritons_refusals_of_malformed_requests_are_invalid_arg(message: str) -> None:
    assert wire.error_code(message) == "INVALID_ARG"
    assert wire.error_code(message, grpc_status=None) == "INVALID_ARG"
    assert isinstance(client_error(message, where="fastvoice"), InvalidInputError)


def test_the_new_patterns_do_not_take_over_other_messages() -> None:
    assert wire.error_code("[INTERNAL] internal error: input 'x' broke") == "INTERNAL"  # the voice's tag comes first
    assert wire.error_code("expected number of inputs between 1 and 3 but got 0 inputs") == "INVALID_ARG"
    assert wire.error_code("expected the unexpected") == "UNKNOWN"
    assert wire.error_code("Request for unknown model: 'input' is not found") == "NOT_FOUND"
