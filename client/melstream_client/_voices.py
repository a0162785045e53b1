"""What both clients share: the voices a server serves, read from its loaded models' statistics, their ready
endpoints and model configs (the repository index is open only to the server's supervisor).

A voice's spec is plain data (:mod:`melstream_client.spec`): listing voices and reading a spec import no component
or plugin.  Subclasses say how to fetch the index and a config, and how they name the server in errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from melstream_client import wire
from melstream_client.errors import AddonError, ClientError, UnknownVoiceError

if TYPE_CHECKING:
    from melstream.addon import Addon
    from melstream_client.spec import AddonSpec


def server_side(module: str, name: str, *, what: str) -> Any:
    """``module.name`` from the ``melstream`` package, which a light client's install does not have: a
    :class:`ClientError` saying so if it is missing."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name is None or not (e.name == "melstream" or e.name.startswith("melstream.")):
            raise
        raise ClientError(f"{what} needs the melstream package (the server side), not only melstream-client: "
                          f"install melstream, or stream from the server instead") from None


class VoiceDirectory:
    """Voices and their specs (kept per voice) from a server; ``synthesize`` on top of a subclass's ``stream``."""

    #: the server as errors name it (``localhost:8001``, ``http://localhost:8000``)
    where: str

    def __init__(self) -> None:
        self._specs: dict[str, AddonSpec] = {}

    def _stats(self) -> Any:
        """The statistics of every loaded model (Triton's JSON: ``{"model_stats": [...]}``); typed errors."""
        raise NotImplementedError

    def _ready(self, model: str) -> bool:
        """Whether model ``model`` is ready (its ready endpoint); typed errors for a server that does not answer."""
        raise NotImplementedError

    def _config(self, model: str) -> dict[str, Any]:
        """Model ``model``'s config as Triton's JSON; typed errors."""
        raise NotImplementedError

    def stream(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
               timeout_s: float | None = None) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def loaded_models(self) -> set[str]:
        """The names of the models the server has loaded (voice and network models; loaded is not ready)."""
        return wire.loaded_models(self._stats())

    def is_model_ready(self, model: str) -> bool:
        """Whether model ``model`` is loaded and ready (a voice whose stub died is not, until it is reloaded)."""
        return self._ready(model)

    def voices(self) -> list[str]:
        """Names of the voices that can serve: a ready voice model (a model carrying an addon)
        whose network models are all ready too.  A voice whose stub died is left out until it is back."""
        ready = {m for m in wire.loaded_models(self._stats()) if self._ready(m)}
        networks = {}
        for name in sorted(ready):
            if wire.is_network_model(name):
                continue
            config = self._config(name)
            if wire.is_voice_config(config):
                networks[name] = list(self._spec_of(name, wire.addon_json_from_config(config)).networks)
        return wire.servable_voices(ready, networks)

    def addon_json(self, voice: str) -> str:
        """The addon JSON that the server's voice model carries in its config."""
        try:
            return wire.addon_json_from_config(self._config(voice), model=f"model {voice!r} at {self.where}")
        except wire.WireError as e:
            raise UnknownVoiceError(str(e)) from None

    def spec(self, voice: str) -> AddonSpec:
        """The voice's addon as plain data (audio parameters, networks), from its model config; kept per voice.
        Nothing is built: no component or plugin is imported."""
        spec = self._specs.get(voice)
        return spec if spec is not None else self._spec_of(voice, self.addon_json(voice))

    def _spec_of(self, voice: str, addon_json: str) -> AddonSpec:
        from melstream_client.spec import addon_spec_from_json

        try:
            spec = addon_spec_from_json(addon_json, source=f"voice {voice!r} at {self.where}")
        except AddonError as e:
            raise ClientError(f"voice {voice!r} at {self.where}: the server's addon JSON is not valid here: {e}") from e
        self._specs[voice] = spec
        return spec

    def addon(self, voice: str) -> Addon:
        """The voice's addon, with its stack validated here (this imports the stack's components: it needs the
        whole ``melstream`` package, not only this client)."""
        Addon = server_side("melstream.addon", "Addon", what="building a voice's stack here")  # noqa: N806
        return Addon(self.spec(voice))  # type: ignore[no-any-return]

    def synthesize(self, text: str, *, voice: str, pace: float | None = None, chunk_frames: int | None = None,
                   timeout_s: float | None = None) -> np.ndarray:
        """The whole utterance ``[frames, n_mels]``: the concatenation of :meth:`stream`."""
        chunks = list(self.stream(text, voice=voice, pace=pace, chunk_frames=chunk_frames, timeout_s=timeout_s))
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, self.spec(voice).audio.n_mels), np.float32)
