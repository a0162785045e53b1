"""Built-in components; importing this package registers them (and the five abstractions)."""

from melstream.components import attention, core, decoder, diagnostics, effects, encoders, segments, upsampler, vocoder

__all__ = ["attention", "core", "decoder", "diagnostics", "effects", "encoders", "segments", "upsampler", "vocoder"]
