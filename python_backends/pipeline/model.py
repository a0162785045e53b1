"""Triton Python-backend decoupled model: one voice (addon) streaming MEL (and AUDIO) chunks as they exist.

Generated into model_repository/<addon>/1/model.py by `melstream build-repo`.  The addon JSON
comes from this model's config (parameter addon_json); networks run as Triton models through BLS.
Each request (stream) runs in its own worker thread, so execute() returns at once.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from melstream.addon import addon_from_json
from melstream.errors import MelstreamError, TextError
from melstream.runners.triton_bls import TritonBLSRunner

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0].item()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        addon = addon_from_json(params["addon_json"], source=f"model {config['name']!r} parameter addon_json")
        self.pipeline = addon.build(TritonBLSRunner(pb_utils))
        self.pool = ThreadPoolExecutor(max_workers=int(params.get("max_streams", "64")), thread_name_prefix=addon.name)

    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._stream, request)
        return None

    def _stream(self, request):
        sender = request.get_response_sender()
        chunks = None
        try:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            if text.size != 1:
                raise TextError(f"TEXT must hold exactly one string, got {text.size}")
            chunks = self.pipeline.stream_outputs(text[0], pace=_optional(request, "PACE"),
                                                  chunk_frames=_optional(request, "CHUNK_FRAMES"))
            while not request.is_cancelled():  # a cancelled or disconnected client stops the work here
                chunk = next(chunks, None)
                if chunk is None:
                    break
                sender.send(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name.upper(), np.ascontiguousarray(value, np.float32)) for name, value in chunk.items()]))
        except MelstreamError as e:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}")))
        except Exception as e:  # an unexpected failure still reaches the client, and the model keeps serving
            pb_utils.Logger.log_error(f"pipeline failed: {type(e).__name__}: {e}")
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {type(e).__name__}: {e}")))
        finally:
            if chunks is not None:
                chunks.close()
            sender.send(flags=FINAL)

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
