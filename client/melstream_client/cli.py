"""``melstream-client``: speak a text through a melstream server, list its voices.  The same ``synth`` and
``voices`` are subcommands of the server package's ``melstream`` command (melstream.cli builds them from here).

    melstream-client voices [--url localhost:8001]
    melstream-client synth "Hello there." --voice fastvoice --out hello.wav [--http] [--url HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from melstream_client.errors import MelstreamError

#: what ``--url`` defaults to, by transport (Triton's ports)
DEFAULT_GRPC_URL = "localhost:8001"
DEFAULT_HTTP_URL = "localhost:8000"


def add_synth(sub: Any) -> argparse.ArgumentParser:
    """The ``synth`` subcommand on ``sub`` (an ``add_subparsers`` result)."""
    y = sub.add_parser("synth", help="stream one utterance from a server into a .npy or .wav file")
    y.add_argument("text")
    y.add_argument("--voice", required=True)
    y.add_argument("--url", default=None, help=f"HOST:PORT (default {DEFAULT_GRPC_URL}, or {DEFAULT_HTTP_URL} with --http)")
    y.add_argument("--out", required=True, help="FILE.npy (mel) or FILE.wav (audio; vocoded here if the voice ends at mel)")
    y.add_argument("--http", action="store_true", help="use HTTP generate_stream (SSE) instead of gRPC")
    y.add_argument("--pace", type=float, default=None)
    y.add_argument("--chunk-frames", type=int, default=None)
    y.add_argument("--timeout-s", type=float, default=60.0)
    y.add_argument("--words", action="store_true",
                   help="print each word with its start and end in seconds (the voice's word timestamps)")
    y.set_defaults(func=cmd_synth)
    return y


def add_voices(sub: Any) -> argparse.ArgumentParser:
    """The ``voices`` subcommand on ``sub``."""
    v = sub.add_parser("voices", help="list the voices a server serves")
    v.add_argument("--url", default=DEFAULT_GRPC_URL)
    v.set_defaults(func=cmd_voices)
    return v


def cmd_synth(args: argparse.Namespace) -> int:
    from melstream_client import Client, HttpClient
    from melstream_client.audio import vocode, write_wav

    out = Path(args.out)
    if out.suffix not in (".npy", ".wav"):
        raise MelstreamError(f"{out}: write .npy (the [frames, n_mels] float32 mel) or .wav (16-bit PCM audio)")
    url = args.url or (DEFAULT_HTTP_URL if args.http else DEFAULT_GRPC_URL)
    client: Any = HttpClient(url, timeout_s=args.timeout_s) if args.http else Client(url, timeout_s=args.timeout_s)
    t0 = time.perf_counter()
    first = None
    chunks = []
    options = {"words": True} if args.words else {}
    for chunk in client.stream_outputs(args.text, voice=args.voice, pace=args.pace, chunk_frames=args.chunk_frames, **options):
        if first is None:
            first = time.perf_counter() - t0
        chunks.append(chunk)
        for word in chunk.get("words", ()):
            print(f"{word.start_s:8.3f}\t{word.end_s:8.3f}\t{word.text}")
    total = time.perf_counter() - t0
    spec = client.spec(args.voice)
    mel = np.concatenate([c["mel"] for c in chunks]) if chunks else np.zeros((0, spec.audio.n_mels), np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = ""
    if out.suffix == ".npy":
        np.save(out, mel)
    else:
        # the server's audio if the voice streams it, else the mel vocoded here (Griffin-Lim, the voice's own
        # audio parameters read from the server)
        served = bool(chunks) and "audio" in chunks[0]
        audio = np.concatenate([c["audio"] for c in chunks]) if served else vocode(mel, spec.audio)
        note = f", {len(audio) / spec.audio.sample_rate:.2f} s of audio" + ("" if served else " (vocoded here)")
        write_wav(out, audio, spec.audio.sample_rate)
    print(f"time to first frame {1e3 * (first or total):.1f} ms, total {1e3 * total:.1f} ms, "
          f"{len(mel)} frames in {len(chunks)} chunks{note} -> {out}")
    return 0


def cmd_voices(args: argparse.Namespace) -> int:
    from melstream_client import Client

    with Client(args.url) as client:
        for voice in client.voices():
            spec = client.spec(voice)  # read while listing: plain data, nothing built
            print(f"{voice}\t{spec.version}\t{spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="melstream-client", description="Speak through a melstream server.")
    sub = p.add_subparsers(dest="command", required=True)
    add_synth(sub)
    add_voices(sub)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MelstreamError as e:
        print(f"{Path(sys.argv[0]).name if argv is None else 'melstream-client'} {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
