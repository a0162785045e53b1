"""Reference syntheses in a process of their own, for the load test's correctness check.

The locust process asks over stdin/stdout: one JSON line ``{"addon": DIR, "text": TEXT}`` in; one JSON
line ``{"shape": [frames, n_mels]}`` followed by the mel as little-endian float32 bytes out, or
``{"error": MESSAGE}``.  Exits at the end of its input.

Why a process: a reference is up to seconds of CPU (ONNX Runtime, espeak-ng).  In the locust process it
would stop gevent's loop, and every other user's chunk timestamps with it; a native thread would still
contend for the GIL, and the espeak front end does not load from a non-main thread under gevent.
Here it only competes for a core, and only when a (voice, text) is first checked.
"""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    import numpy as np

    from melstream.addon import load_addon

    pipelines: dict[str, Any] = {}
    for line in inp:
        try:
            request = json.loads(line)
            addon = str(request["addon"])
            if addon not in pipelines:
                pipelines[addon] = load_addon(addon).build()
            mel = np.ascontiguousarray(pipelines[addon].synthesize(str(request["text"])), dtype="<f4")
        except Exception as e:  # noqa: BLE001 - every failure goes back to the asker as its message
            out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode() + b"\n")
        else:
            out.write(json.dumps({"shape": list(mel.shape)}).encode() + b"\n" + mel.tobytes())
        out.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
