"""Audio features and the Griffin-Lim vocoder block (streamed audio equals whole-utterance audio)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from melstream.addon import Addon, AudioSpec, addon_from_data
from melstream.components.vocoder import GriffinLim
from melstream_client.audio import istft_frames, log_mel, mel_filterbank, stft_frames, write_wav

SPEC = AudioSpec(sample_rate=22050, hop_length=256, win_length=1024, n_fft=1024, n_mels=80, fmin=0.0, fmax=8000.0)
AUDIO_TOL = 1e-5  # streamed vs whole-utterance audio, max abs difference (float rounding only)


def vocoder(addon: Addon, **params: object) -> GriffinLim:
    stack = addon.raw["stack"] + [{"type": "GriffinLim", **params}]
    block = addon.build(stack=stack).streamable_block.stack[-1]  # type: ignore[attr-defined]
    assert isinstance(block, GriffinLim)
    return block


def stream_audio(block: GriffinLim, mel: np.ndarray, *, upstream_chunk: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    upstream = iter([{"mel": mel[i:i + upstream_chunk]} for i in range(0, len(mel), upstream_chunk)])
    chunks = list(block.generate({"chunk_frames": np.asarray(chunk)}, upstream))
    assert all(len(c["audio"]) == len(c["mel"]) * SPEC.hop_length for c in chunks)
    mels = np.concatenate([c["mel"] for c in chunks]) if chunks else np.zeros((0, 80), np.float32)
    audio = np.concatenate([c["audio"] for c in chunks]) if chunks else np.zeros(0, np.float32)
    return mels, audio


def test_filterbank_shape_and_coverage() -> None:
    fb = mel_filterbank(SPEC)
    assert fb.shape == (80, 513) and (fb >= 0).all()
    assert (fb.sum(axis=1) > 0).all()  # no empty filter
    freqs = np.linspace(0, SPEC.sample_rate / 2, 513)
    assert fb[:, freqs > SPEC.fmax + 100].max() == 0.0


def test_log_mel_of_a_sine_peaks_at_its_frequency() -> None:
    t = np.arange(SPEC.sample_rate) / SPEC.sample_rate
    low, high = log_mel(0.5 * np.sin(2 * np.pi * 300 * t), SPEC), log_mel(0.5 * np.sin(2 * np.pi * 3000 * t), SPEC)
    assert low.shape == (SPEC.sample_rate // SPEC.hop_length, 80) and low.dtype == np.float32
    assert low[40].argmax() < high[40].argmax()
    assert log_mel(np.zeros(2560), SPEC).max() == pytest.approx(np.log(1e-5))


def test_stft_istft_round_trip() -> None:
    rng = np.random.default_rng(0)
    n = 20
    signal = rng.standard_normal((n - 1) * SPEC.hop_length + SPEC.n_fft)
    rebuilt = istft_frames(stft_frames(signal, n, SPEC), SPEC)
    half = SPEC.n_fft // 2  # the samples the frames describe; the outer halves of the end windows fade to 0
    np.testing.assert_allclose(rebuilt[half:-half], signal[half:-half], atol=1e-9)


@pytest.mark.parametrize("chunk", [1, 7, 32])
@pytest.mark.parametrize("frames_rel", ["0", "1", "chunk-1", "chunk", "chunk+1", "long"])
def test_streamed_audio_equals_whole(fast_addon: Addon, chunk: int, frames_rel: str) -> None:
    total = {"0": 0, "1": 1, "chunk-1": chunk - 1, "chunk": chunk, "chunk+1": chunk + 1, "long": 300}[frames_rel]
    block = vocoder(fast_addon, iterations=4)  # exactness holds for any iteration count; 4 keeps the test fast
    mel = np.random.default_rng(total).normal(-4.0, 1.5, (total, 80)).astype(np.float32)
    mels, audio = stream_audio(block, mel, upstream_chunk=5, chunk=chunk)
    np.testing.assert_array_equal(mels, mel)
    assert audio.shape == (total * SPEC.hop_length,)
    if total:
        assert float(np.abs(audio - block.vocode(mel)).max()) <= AUDIO_TOL


def test_default_iterations_stream_exactly_on_a_voice(fast_addon: Addon) -> None:
    block = vocoder(fast_addon)
    assert block.context_frames == 32 * 3 + 2
    mel = fast_addon.build().synthesize("Hear this.")
    _, audio = stream_audio(block, mel, upstream_chunk=32, chunk=32)
    whole = block.vocode(mel)
    assert float(np.abs(audio - whole).max()) <= AUDIO_TOL * max(1.0, float(np.abs(whole).max()))


def test_too_little_context_is_not_exact(fast_addon: Addon) -> None:
    """The context rule is what makes streaming exact: with less, the seams show."""
    block = vocoder(fast_addon, iterations=8, context_frames=4)
    mel = np.random.default_rng(1).normal(-4.0, 1.5, (120, 80)).astype(np.float32)
    _, audio = stream_audio(block, mel, upstream_chunk=16, chunk=16)
    assert float(np.abs(audio - block.vocode(mel)).max()) > 1e-3


def test_griffin_lim_resynthesis_recovers_the_mel(fast_addon: Addon) -> None:
    t = np.arange(SPEC.sample_rate) / SPEC.sample_rate
    signal = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t)
    mel = log_mel(signal, SPEC)

    def error(iterations: int) -> float:
        rebuilt = vocoder(fast_addon, iterations=iterations).vocode(mel)
        return float(np.abs(log_mel(rebuilt, SPEC) - mel)[5:-5].mean())

    # phase retrieval must do most of the work (zero phase alone: ~0.86; 80 mel bins cannot give 0)
    assert error(32) < 0.6 * error(0)


def test_bad_vocoder_parameters(fast_addon: Addon) -> None:
    from melstream.errors import StackError

    with pytest.raises(StackError, match=r"stack\[2\]: needs iterations >= 0"):
        vocoder(fast_addon, momentum=1.5)


def test_write_wav(tmp_path: Path) -> None:
    audio = np.array([0.0, 0.5, -0.5, 2.0], np.float32)
    write_wav(tmp_path / "x.wav", audio, 22050)
    with wave.open(str(tmp_path / "x.wav")) as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth(), f.getnframes()) == (22050, 1, 2, 4)
        pcm = np.frombuffer(f.readframes(4), "<i2")
    np.testing.assert_array_equal(pcm, [0, 16383, -16383, 32767])


def test_a_stack_ending_in_a_vocoder_streams_audio(fast_addon: Addon) -> None:
    from melstream.serving.repo import get_profile, pipeline_config

    pipeline = fast_addon.build(stack=fast_addon.raw["stack"] + [{"type": "GriffinLim", "iterations": 4}])
    assert pipeline.produces_audio and not fast_addon.build().produces_audio
    chunks = list(pipeline.stream_outputs("Audio too."))
    assert chunks and all(set(c) == {"mel", "audio"} and len(c["audio"]) == 256 * len(c["mel"]) for c in chunks)
    np.testing.assert_allclose(np.concatenate([c["mel"] for c in chunks]), fast_addon.build().synthesize("Audio too."), atol=1e-5)
    data = dict(fast_addon.raw, stack=fast_addon.raw["stack"] + [{"type": "GriffinLim"}])
    cfg = pipeline_config(addon_from_data(data, path=fast_addon.path), get_profile("cpu"))
    assert [(o.name, list(o.dims)) for o in cfg.output] == [("MEL", [-1, 80]), ("AUDIO", [-1]), ("WORDS", [1])]
    assert [o.name for o in pipeline_config(fast_addon, get_profile("cpu")).output] == ["MEL", "WORDS"]


def test_the_clients_vocoder_is_the_griffin_lim_block(fast_addon: Addon) -> None:
    """melstream_client.audio.vocode (what `melstream-client synth --out x.wav` does for a mel-only voice) makes
    what the GriffinLim block makes with its defaults; with other settings it differs (the check can fail)."""
    from melstream.components.vocoder import default_vocoder
    from melstream_client.audio import vocode

    mel = np.random.default_rng(3).normal(-4.0, 1.5, (50, SPEC.n_mels)).astype(np.float32)
    block = default_vocoder(fast_addon)
    expected = block.vocode(mel)
    assert expected.shape == (50 * fast_addon.audio.hop_length,)
    np.testing.assert_array_equal(vocode(mel, fast_addon.audio), expected)
    assert float(np.abs(vocode(mel, fast_addon.audio, iterations=4) - expected).max()) > 1e-3
