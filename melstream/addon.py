"""Addons: a validated :class:`~melstream.spec.AddonSpec` plus the step that builds its stack.

Parsing ``addon.json`` is plain data (:mod:`melstream.spec`); this module builds the block tree
from the spec's ``stack`` on a runner.  :func:`load_addon` validates the stack once (building it
with network handles that cannot run), so a mis-wired stack fails at load, with its JSON path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from melstream.errors import AddonError, TextError
from melstream.runners.base import UnboundRunner
from melstream.stack import build_stack
from melstream.text import FRONTENDS, get_frontend
from melstream_client.spec import (
    AddonSpec,
    AudioSpec,
    NetworkSpec,
    TensorSpec,
    addon_spec_from_json,
    discover_addons,
    parse_addon_spec,
    read_addon_spec,
)

if TYPE_CHECKING:
    from melstream.blocks import StreamablePipeline
    from melstream.runners.base import Runner

__all__ = ["Addon", "AudioSpec", "NetworkSpec", "TensorSpec", "addon_from_json", "discover_addons", "load_addon"]


class Addon:
    """A loaded addon whose stack has been validated.  ``build()`` gives its StreamablePipeline, running in-process."""

    def __init__(self, spec: AddonSpec) -> None:
        self.spec = spec
        frontend = spec.text["frontend"]
        if frontend not in FRONTENDS:
            raise spec.fail("text.frontend", f"unknown front end {frontend!r}; known: {', '.join(sorted(FRONTENDS))}")
        # Validate the stack now, not at the first request: build it once with handles that cannot run.
        try:
            self.build(UnboundRunner())
        except AddonError as e:
            raise type(e)(f"{spec.source}: {e}") from e

    # the spec's fields, read through the addon
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def audio(self) -> AudioSpec:
        return self.spec.audio

    @property
    def text(self) -> dict[str, Any]:
        return self.spec.text

    @property
    def networks(self) -> dict[str, NetworkSpec]:
        return self.spec.networks

    @property
    def raw(self) -> dict[str, Any]:
        return self.spec.raw

    @property
    def path(self) -> Path | None:
        return self.spec.path

    @property
    def source(self) -> str:
        return self.spec.source

    def network_path(self, name: str) -> Path:
        return self.spec.network_path(name)

    def to_json(self) -> str:
        return self.spec.to_json()

    def frontend(self) -> Any:
        options = {k: v for k, v in self.spec.text.items() if k != "frontend"}
        try:
            return get_frontend(self.spec.text["frontend"], **options)
        except TextError as e:
            raise self.spec.fail("text", str(e)) from e

    def build(self, runner: Runner | None = None, *, stack: list[Any] | None = None) -> StreamablePipeline:
        """Build the stack (``stack`` overrides the addon's own) with networks on ``runner``.

        The default runner runs networks in-process with ONNX Runtime.
        """
        if runner is None:
            from melstream.runners.onnx import OnnxRuntimeRunner  # onnxruntime loads only when networks run here

            runner = OnnxRuntimeRunner()
        return build_stack(self.spec.stack if stack is None else stack, self, runner)

    def __repr__(self) -> str:
        return f"Addon(name={self.name!r}, version={self.version!r}, networks={list(self.networks)})"


def load_addon(path: str | Path, *, check_files: bool = True) -> Addon:
    """Load and validate the addon in directory ``path`` (or the ``addon.json`` file itself)."""
    return Addon(read_addon_spec(path, check_files=check_files))


def addon_from_json(text: str, *, source: str = "addon JSON") -> Addon:
    """An addon rebuilt from its JSON alone (no directory): for remote and BLS runners."""
    return Addon(addon_spec_from_json(text, source=source))


def addon_from_data(data: Any, *, source: str = "addon JSON", path: Path | None = None) -> Addon:
    """An addon from already-parsed JSON ``data`` (``path``: its directory, if any)."""
    return Addon(parse_addon_spec(data, source=source, path=path, check_files=path is not None))
