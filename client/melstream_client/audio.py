"""Audio features shared by training and serving: one definition of the log-mel spectrogram.

Frames are centred: frame ``j`` covers samples ``[j*hop - n_fft/2, j*hop + n_fft/2)`` with a
periodic Hann window, so ``T`` frames describe ``T * hop`` samples.  The mel filterbank is
Slaney-style (librosa's default, area-normalised), built here in numpy.  Log-mel is the natural
log of the mel-weighted STFT magnitude, floored at ``1e-5``.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np

from melstream_client.spec import AudioSpec

LOG_FLOOR = 1e-5


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f >= 1000.0, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
    return np.where(m >= 15.0, log, lin)


@functools.lru_cache(maxsize=16)
def mel_filterbank(spec: AudioSpec) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` Slaney mel filterbank (float64)."""
    freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(spec.fmin)), _hz_to_mel(np.array(spec.fmax)), spec.n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    return fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@functools.lru_cache(maxsize=16)
def mel_inverse(spec: AudioSpec) -> np.ndarray:
    """``[n_fft // 2 + 1, n_mels]`` non-negative least-squares-ish inverse (pseudo-inverse, clipped later)."""
    return np.linalg.pinv(mel_filterbank(spec))


def window(n_fft: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann


def stft_frames(signal: np.ndarray, n_frames: int, spec: AudioSpec) -> np.ndarray:
    """``[n_frames, n_fft//2+1]`` complex STFT of a signal laid out on the frame grid:
    ``signal[0]`` is sample ``-n_fft/2`` of frame 0 and the signal has ``(n_frames-1)*hop + n_fft`` samples."""
    idx = np.arange(spec.n_fft)[None, :] + spec.hop_length * np.arange(n_frames)[:, None]
    return np.fft.rfft(signal[idx] * window(spec.n_fft), axis=1)


def istft_frames(frames: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """Inverse of :func:`stft_frames` (weighted overlap-add, normalised by the summed squared window)."""
    n, hop, n_fft = len(frames), spec.hop_length, spec.n_fft
    w = window(n_fft)
    chunks = np.fft.irfft(frames, n=n_fft, axis=1) * w
    if n_fft % hop == 0:  # overlap-add as a sum of n_fft/hop shifted block arrays (no Python loop over frames)
        k = n_fft // hop
        out = np.zeros((n + k - 1, hop))
        norm = np.zeros((n + k - 1, hop))
        blocks = chunks.reshape(n, k, hop)
        wblocks = (w * w).reshape(k, hop)
        for i in range(k):
            out[i:i + n] += blocks[:, i]
            norm[i:i + n] += wblocks[i]
        return (out / np.maximum(norm, 1e-8)).reshape(-1)
    length = (n - 1) * hop + n_fft
    out1, norm1 = np.zeros(length), np.zeros(length)
    for j in range(n):
        out1[j * hop:j * hop + n_fft] += chunks[j]
        norm1[j * hop:j * hop + n_fft] += w * w
    return out1 / np.maximum(norm1, 1e-8)


def log_mel(audio: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """``[T, n_mels]`` float32 log-mel of ``audio`` (float, any scale); ``T = len(audio) // hop``,
    frame ``j`` centred on sample ``j * hop`` (zero padding beyond the ends)."""
    n_frames = len(audio) // spec.hop_length
    half = spec.n_fft // 2
    padded = np.concatenate([np.zeros(half), np.asarray(audio, np.float64), np.zeros(spec.n_fft)])
    mag = np.abs(stft_frames(padded, n_frames, spec))
    return np.log(np.maximum(mag @ mel_filterbank(spec).T, LOG_FLOOR)).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV; ``audio`` in [-1, 1] (clipped)."""
    pcm = (np.clip(np.asarray(audio, np.float64), -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def griffin_lim(log_mel: np.ndarray, spec: AudioSpec, *, iterations: int, momentum: float) -> np.ndarray:
    """Audio on the frame grid (``(T-1)*hop + n_fft`` samples, starting ``n_fft/2`` before frame 0)
    from a ``[T, n_mels]`` natural-log mel, by fast Griffin-Lim (Perraudin et al. 2013) from zero phase."""
    mag = np.maximum(np.exp(log_mel.astype(np.float64)) @ mel_inverse(spec).T, 0.0)
    n = len(mag)
    angles = np.ones_like(mag, dtype=np.complex128)
    previous = np.zeros_like(angles)
    for _ in range(iterations):
        rebuilt = stft_frames(istft_frames(mag * angles, spec), n, spec)
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = accelerated / np.maximum(np.abs(accelerated), 1e-16)
        previous = rebuilt
    return istft_frames(mag * angles, spec)


def vocode(log_mel: np.ndarray, spec: AudioSpec, *, iterations: int = 32, momentum: float = 0.99,
           gain: float = 1.0) -> np.ndarray:
    """Whole-utterance audio ``[T * hop]`` float32 for a ``[T, n_mels]`` log-mel (frame ``j`` <-> samples
    ``[j*hop, (j+1)*hop)``): what the ``GriffinLim`` block makes with its defaults, for clients of a voice
    that ends at mel."""
    hop, half = spec.hop_length, spec.n_fft // 2
    signal = griffin_lim(log_mel, spec, iterations=iterations, momentum=momentum)
    return (gain * signal[half:len(log_mel) * hop + half]).astype(np.float32)
