"""``make demo``: build the repository, start Triton, stream a sentence from every voice over gRPC
and over HTTP, print time to first frame, write results under ``out/``, stop the server."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

SENTENCE = "Streaming speech, one chunk at a time: melstream served this sentence on the 25th of November."


def run_demo(out: Path, *, addons: Path, repo: Path) -> int:
    from melstream.addon import load_addon
    from melstream.serving.repo import build_repository
    from melstream.serving.server import TritonServer
    from melstream_client import Client, HttpClient

    out.mkdir(parents=True, exist_ok=True)
    report = build_repository(addons, repo)
    print(f"built {repo}: voices {', '.join(report.voices)}")
    server = TritonServer.on_free_ports(repo, log_file=out / "tritonserver.log")
    t0 = time.perf_counter()
    results = []
    with server:
        print(f"tritonserver ready in {time.perf_counter() - t0:.1f} s (gRPC {server.grpc_url}, HTTP {server.http_url})")
        grpc = Client(server.grpc_url)
        http = HttpClient(server.http_url)
        voices = grpc.voices()
        for voice in voices:  # warm-up: the first request opens the channel and runs each model once
            grpc.synthesize("Warm up.", voice=voice)
            http.spec(voice)  # each client reads a voice's spec (its n_mels) once, before its first stream
        print("(after one warm-up request per voice)")
        print(f"\n{'voice':<12} {'protocol':<9} {'first frame ms':>14} {'total ms':>9} {'frames':>7} {'chunks':>7}  equals in-process")
        for voice in voices:
            reference = load_addon(addons / voice).build().synthesize(SENTENCE)
            for protocol, client in (("grpc", grpc), ("http-sse", http)):
                t = time.perf_counter()
                first = None
                chunks = []
                for mel in client.stream(SENTENCE, voice=voice):
                    if first is None:
                        first = time.perf_counter() - t
                    chunks.append(mel)
                total = time.perf_counter() - t
                mel = np.concatenate(chunks)
                same = mel.shape == reference.shape and float(np.abs(mel - reference).max()) <= 1e-4
                np.save(out / f"{voice}.{protocol}.npy", mel)
                row = {"voice": voice, "protocol": protocol, "first_frame_ms": round(1e3 * (first or total), 2),
                       "total_ms": round(1e3 * total, 2), "frames": len(mel), "chunks": len(chunks), "equals_in_process": same}
                results.append(row)
                print(f"{voice:<12} {protocol:<9} {row['first_frame_ms']:>14.1f} {row['total_ms']:>9.1f} {len(mel):>7} "
                      f"{len(chunks):>7}  {same}")
        grpc.close()
    (out / "demo.json").write_text(json.dumps({"text": SENTENCE, "results": results}, indent=2) + "\n")
    listen(out, addons, [str(r["voice"]) for r in results if r["protocol"] == "grpc"])
    print(f"wrote {out}/*.npy, *.wav, *.png and {out}/demo.json; server stopped")
    ok = all(r["equals_in_process"] for r in results) and len(results) >= 4
    if not ok:
        print("demo FAILED: a voice is missing or streamed frames differ from in-process synthesis", file=sys.stderr)
    return 0 if ok else 1


def listen(out: Path, addons: Path, voices: list[str]) -> None:
    """A WAV (Griffin-Lim) and a mel-spectrogram PNG of each voice's streamed mel."""
    from melstream.addon import load_addon
    from melstream.components.vocoder import default_vocoder
    from melstream_client.audio import write_wav

    for voice in voices:
        addon = load_addon(addons / voice)
        mel = np.load(out / f"{voice}.grpc.npy")
        audio = default_vocoder(addon).vocode(mel)
        peak = float(np.abs(audio).max()) or 1.0
        write_wav(out / f"{voice}.wav", 0.9 * audio / peak, addon.audio.sample_rate)  # Griffin-Lim output level varies: normalise the peak
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            continue
        fig, ax = plt.subplots(figsize=(10, 3))
        ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(f"{voice}: {len(mel)} frames ({len(mel) * addon.audio.hop_length / addon.audio.sample_rate:.2f} s)")
        ax.set_xlabel("frame")
        ax.set_ylabel("mel bin")
        fig.tight_layout()
        fig.savefig(out / f"{voice}.png", dpi=100)
        plt.close(fig)
