"""The wire contract of a melstream voice, written once: used by the server side, both clients and the load tests.

Standard library and numpy only, so a light client can import it.

A voice is one decoupled Triton model named after its addon:

* inputs: ``TEXT`` BYTES ``[1]`` (UTF-8), optional ``PACE`` FP32 ``[1]``, optional ``CHUNK_FRAMES`` INT32 ``[1]``;
* responses: ``MEL`` FP32 ``[frames, n_mels]`` per chunk (and ``AUDIO`` FP32 ``[frames * hop]`` from voices
  whose stack ends in a vocoder), in order, then an empty final response;
* the model config's ``addon_json`` parameter carries the addon, so a client can rebuild its stack.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WireInput:
    """One input of a voice model: its Triton name and datatype, the request option it carries, whether it may be left out."""

    name: str
    datatype: str  # Triton's wire datatype (BYTES, FP32, INT32)
    config_type: str  # the same type as config.pbtxt spells it
    numpy_dtype: str  # numpy dtype a client builds the tensor with ("object" for BYTES)
    option: str  # the keyword of Client.stream / pipeline.stream that fills it
    optional: bool


TEXT = WireInput("TEXT", "BYTES", "TYPE_STRING", "object", "text", optional=False)
PACE = WireInput("PACE", "FP32", "TYPE_FP32", "float32", "pace", optional=True)
CHUNK_FRAMES = WireInput("CHUNK_FRAMES", "INT32", "TYPE_INT32", "int32", "chunk_frames", optional=True)

#: every input of a voice model, in config order
INPUTS: tuple[WireInput, ...] = (TEXT, PACE, CHUNK_FRAMES)

#: a chunk's tensors (as blocks name them) -> the voice model's output names
OUTPUTS: dict[str, str] = {"mel": "MEL", "audio": "AUDIO"}
MEL = OUTPUTS["mel"]
AUDIO = OUTPUTS["audio"]

#: the voice model's config parameter that carries the addon JSON
ADDON_PARAMETER = "addon_json"
#: the response parameter Triton sets on a stream's last response
FINAL_RESPONSE_PARAMETER = "triton_final_response"
