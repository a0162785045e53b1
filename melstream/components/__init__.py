"""The component catalogue: the built-in components (importing this package registers them) and the
plugins of installed packages (entry points, loaded at the first lookup)."""

from melstream.components import attention, core, decoder, diagnostics, effects, encoders, segments, upsampler, vocoder
from melstream.registry import load_plugins, lookup, registered

__all__ = ["attention", "core", "decoder", "diagnostics", "effects", "encoders", "get_component", "known_components",
           "segments", "upsampler", "vocoder"]


def get_component(name: str) -> type:
    """The class registered under ``name`` (built-in or plugin); an unknown name raises StackError listing the known ones."""
    load_plugins()
    return lookup(name)


def known_components() -> list[str]:
    load_plugins()
    return registered()
