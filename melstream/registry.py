"""Component registry: the only door from a stack's ``"type"`` string to Python code.

A component is registered by a class decorator, like torchvision's model registry::

    @register_component("Gain")
    class Gain(StreamableBlock): ...

Other installed packages add components through the entry-point group ``melstream.components``;
each entry point names a module or class, and importing it runs its ``@register_component``.

This module is the mechanism only; :mod:`melstream.components` is the catalogue (the built-in
components plus the plugins): look components up there, with ``get_component``.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable
from typing import TypeVar

from melstream.blocks import Block
from melstream.errors import RegistryError, StackError

ENTRY_POINT_GROUP = "melstream.components"

_REGISTRY: dict[str, type] = {}
_plugins_loaded = False
_lock = threading.Lock()

T = TypeVar("T", bound=type)


def register_component(name: str) -> Callable[[T], T]:
    """Class decorator that registers a block class under ``name``; a duplicate name is refused."""

    def wrap(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Block)):
            raise RegistryError(f"component {name!r}: {cls!r} is not a subclass of SequenceBlock or StreamableBlock")
        if name in _REGISTRY:
            raise RegistryError(f"component {name!r} is already registered (by {_REGISTRY[name].__module__}."
                                f"{_REGISTRY[name].__qualname__}); pick another name")
        _REGISTRY[name] = cls
        cls.type_name = name
        return cls

    return wrap


def unregister_component(name: str) -> None:
    """Remove a registration (for tests and plugin reloads)."""
    _REGISTRY.pop(name, None)


def load_plugins() -> list[str]:
    """Import every ``melstream.components`` entry point once; returns their names."""
    global _plugins_loaded
    with _lock:
        if _plugins_loaded:
            return []
        _plugins_loaded = True
        loaded = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                ep.load()
            except Exception as e:
                raise RegistryError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {e}") from e
            loaded.append(ep.name)
        return loaded


def reset_plugins() -> None:
    """Let the next lookup scan entry points again (tests install plugins at run time)."""
    global _plugins_loaded
    with _lock:
        _plugins_loaded = False


def lookup(name: str) -> type:
    """The class registered under ``name`` now; an unknown name raises StackError listing the known ones.

    Only what has been imported is registered: use :func:`melstream.components.get_component`.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise StackError(f'unknown type "{name}"; known: {", ".join(sorted(_REGISTRY))}') from None


def registered() -> list[str]:
    return sorted(_REGISTRY)
