"""Addons: a directory with ``addon.json`` and the exported networks it names.

``addon.json`` (every key is checked; errors name the file and the JSON path)::

    {
      "name": "fastvoice",                 # [a-z][a-z0-9-]*, becomes the Triton model name
      "version": "0.1.0",
      "description": "...",                # optional
      "audio": {"sample_rate": 22050, "hop_length": 256, "win_length": 1024,
                "n_fft": 1024, "n_mels": 80, "fmin": 0.0, "fmax": 8000.0},
      "text": {"frontend": "english-chars", "max_chars": 10000},   # "espeak-phonemes" also takes "symbols"
      "networks": {                        # order matters: Encoders runs role "encoder" in this order
        "text_encoder": {
          "file": "text_encoder.onnx",     # ONNX: symbols + parameters, never pickle
          "role": "encoder",               # encoder | decoder | other
          "inputs":  {"tokens":    {"dtype": "int64",   "shape": [-1]}},
          "outputs": {"encodings": {"dtype": "float32", "shape": [-1, 128]}},
          "arch": {"type": "ConvTextEncoder", "config": {...}},   # optional: torch runner
          "max_batch_size": 8,             # optional, Triton dynamic batching (0 = off)
          "context_frames": 6              # optional, network-specific facts used by blocks
        }, ...
      },
      "stack": [ {"type": "StreamablePipeline", ...} ]
    }

Tensor shapes exclude the batch dimension: every network takes and returns a leading batch of 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melstream.errors import AddonError, MelstreamError

if TYPE_CHECKING:
    from melstream.blocks import StreamablePipeline
    from melstream.runners.base import Runner

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
DTYPES = ("float32", "int64", "int32", "float16", "bool")
ROLES = ("encoder", "decoder", "other")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]  # without the batch dimension; -1 = variable


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    file: str
    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    arch: dict[str, Any] | None = None
    max_batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)

    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int
    hop_length: int
    win_length: int
    n_fft: int
    n_mels: int
    fmin: float = 0.0
    fmax: float = 8000.0


class _Reader:
    """Typed access to JSON with errors that name the file and the JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, msg: str) -> AddonError:
        return AddonError(f"{self.source}: {path}: {msg}")

    def get(self, obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: str, default: Any = ...) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in obj:
            if default is ...:
                raise self.fail(where, "missing")
            return default
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python, but "sample_rate": true is a mistake
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(where, f"expected {names}, got {type(value).__name__} {json.dumps(value)[:60]}")
        return value

    def no_extra(self, obj: Mapping[str, Any], allowed: set[str], path: str) -> None:
        extra = sorted(set(obj) - allowed)
        if extra:
            raise self.fail(f"{path}.{extra[0]}" if path else extra[0], f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _tensors(r: _Reader, obj: Any, path: str) -> tuple[TensorSpec, ...]:
    if not isinstance(obj, dict) or not obj:
        raise r.fail(path, "expected a non-empty object of tensor name -> {dtype, shape}")
    out = []
    for name, spec in obj.items():
        p = f"{path}.{name}"
        if not isinstance(spec, dict):
            raise r.fail(p, "expected an object with dtype and shape")
        r.no_extra(spec, {"dtype", "shape"}, p)
        dtype = r.get(spec, "dtype", str, p)
        if dtype not in DTYPES:
            raise r.fail(f"{p}.dtype", f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        shape = r.get(spec, "shape", list, p)
        if not all(isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d > 0) for d in shape):
            raise r.fail(f"{p}.shape", f"dimensions must be positive integers or -1, got {shape}")
        out.append(TensorSpec(name, dtype, tuple(shape)))
    return tuple(out)


class Addon:
    """A loaded, validated addon.  ``build()`` gives its StreamablePipeline running in-process."""

    def __init__(self, data: dict[str, Any], *, path: Path | None = None, source: str = "addon.json",
                 check_files: bool = True) -> None:
        r = _Reader(source)
        if not isinstance(data, dict):
            raise r.fail("(root)", f"expected a JSON object, got {type(data).__name__}")
        r.no_extra(data, {"name", "version", "description", "audio", "text", "networks", "stack", "license"}, "")
        self.raw = data
        self.path = path
        self.source = source
        self.name: str = r.get(data, "name", str, "")
        if not NAME_RE.match(self.name):
            raise r.fail("name", f"{self.name!r} must match {NAME_RE.pattern} (it becomes a Triton model name)")
        self.version: str = r.get(data, "version", str, "")
        self.description: str = r.get(data, "description", str, "", default="")

        audio = r.get(data, "audio", dict, "")
        r.no_extra(audio, set(AudioSpec.__dataclass_fields__), "audio")
        ints = {k: r.get(audio, k, int, "audio") for k in ("sample_rate", "hop_length", "win_length", "n_fft", "n_mels")}
        for k, v in ints.items():
            if v <= 0:
                raise r.fail(f"audio.{k}", f"must be positive, got {v}")
        self.audio = AudioSpec(**ints, fmin=float(r.get(audio, "fmin", (int, float), "audio", default=0.0)),
                               fmax=float(r.get(audio, "fmax", (int, float), "audio", default=ints["sample_rate"] / 2)))

        text = r.get(data, "text", dict, "")
        r.no_extra(text, {"frontend", "max_chars", "symbols"}, "text")
        symbols = r.get(text, "symbols", list, "text", default=None)
        if symbols is not None and (len(symbols) < 3 or symbols[:2] != ["_", "~"]
                                    or not all(isinstance(x, str) and x for x in symbols) or len(set(symbols)) != len(symbols)):
            raise r.fail("text.symbols", 'expected distinct non-empty strings starting with "_" (pad) and "~" (end)')
        self.text: dict[str, Any] = dict(text)
        from melstream.text import FRONTENDS

        frontend = r.get(text, "frontend", str, "text")
        if frontend not in FRONTENDS:
            raise r.fail("text.frontend", f"unknown front end {frontend!r}; known: {', '.join(sorted(FRONTENDS))}")
        max_chars = r.get(text, "max_chars", int, "text", default=None)
        if max_chars is not None and max_chars <= 0:
            raise r.fail("text.max_chars", f"must be positive, got {max_chars}")

        nets = r.get(data, "networks", dict, "")
        if not nets:
            raise r.fail("networks", "an addon needs at least one network")
        self.networks: dict[str, NetworkSpec] = {}
        for name, spec in nets.items():
            p = f"networks.{name}"
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise r.fail(p, "network names must match [a-z][a-z0-9_]*")
            if not isinstance(spec, dict):
                raise r.fail(p, f"expected an object, got {type(spec).__name__}")
            file = r.get(spec, "file", str, p)
            if "/" in file or "\\" in file or file.startswith("."):
                raise r.fail(f"{p}.file", f"{file!r} must be a plain file name inside the addon directory")
            if not file.endswith(".onnx"):
                raise r.fail(f"{p}.file", f"{file!r}: networks are exported as ONNX (.onnx)")
            if check_files and path is not None and not (path / file).is_file():
                raise r.fail(f"{p}.file", f"network file {path / file} does not exist")
            role = r.get(spec, "role", str, p, default="other")
            if role not in ROLES:
                raise r.fail(f"{p}.role", f"unknown role {role!r}; known: {', '.join(ROLES)}")
            arch = r.get(spec, "arch", dict, p, default=None)
            if arch is not None:
                r.get(arch, "type", str, f"{p}.arch")
                r.get(arch, "config", dict, f"{p}.arch", default={})
            mbs = r.get(spec, "max_batch_size", int, p, default=8)
            if mbs < 0:
                raise r.fail(f"{p}.max_batch_size", f"must be >= 0, got {mbs}")
            known = {"file", "role", "inputs", "outputs", "arch", "max_batch_size"}
            self.networks[name] = NetworkSpec(
                name=name, file=file, role=role,
                inputs=_tensors(r, r.get(spec, "inputs", dict, p), f"{p}.inputs"),
                outputs=_tensors(r, r.get(spec, "outputs", dict, p), f"{p}.outputs"),
                arch=arch, max_batch_size=mbs,
                options={k: v for k, v in spec.items() if k not in known})
        stack = r.get(data, "stack", list, "")
        self.stack_json: list[Any] = stack
        # Validate the stack now, not at the first request: build it once with handles that cannot run.
        from melstream.runners.base import UnboundRunner

        try:
            self.build(UnboundRunner())
        except AddonError as e:
            raise type(e)(f"{source}: {e}") from e

    def network_path(self, name: str) -> Path:
        if self.path is None:
            raise AddonError(f"{self.source}: addon {self.name!r} has no directory; its networks cannot run in-process")
        return self.path / self.networks[name].file

    def frontend(self) -> Any:
        from melstream.text import get_frontend

        options = {k: v for k, v in self.text.items() if k != "frontend"}
        return get_frontend(self.text["frontend"], **options)

    def to_json(self) -> str:
        """The addon JSON, canonical (what the server's model config carries)."""
        return json.dumps(self.raw, separators=(",", ":"))  # key order matters: it orders networks and tensors

    def build(self, runner: Runner | None = None, *, stack: list[Any] | None = None) -> StreamablePipeline:
        """Build the stack (``stack`` overrides the addon's own) with networks on ``runner``.

        The default runner runs networks in-process with ONNX Runtime.
        """
        from melstream.stack import BuildContext, build_stack

        if runner is None:
            from melstream.runners.onnx import OnnxRuntimeRunner

            runner = OnnxRuntimeRunner()
        return build_stack(self.stack_json if stack is None else stack, BuildContext(self, runner))

    def __repr__(self) -> str:
        return f"Addon(name={self.name!r}, version={self.version!r}, networks={list(self.networks)})"


def load_addon(path: str | Path, *, check_files: bool = True) -> Addon:
    """Load and validate the addon in directory ``path`` (or the ``addon.json`` file itself)."""
    p = Path(path)
    file = p if p.suffix == ".json" else p / "addon.json"
    if not file.is_file():
        raise AddonError(f"{file}: no such file (an addon is a directory with addon.json)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise AddonError(f"{file}: line {e.lineno} column {e.colno}: malformed JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise AddonError(f"{file}: not UTF-8 text: {e}") from e
    return Addon(data, path=file.parent, source=str(file), check_files=check_files)


def addon_from_json(text: str, *, source: str = "addon JSON") -> Addon:
    """An addon rebuilt from its JSON alone (no directory): for remote and BLS runners."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AddonError(f"{source}: malformed JSON: {e}") from e
    return Addon(data, path=None, source=source, check_files=False)


def discover_addons(root: str | Path) -> list[Path]:
    """Addon directories (those holding addon.json) directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise MelstreamError(f"{root}: addons directory does not exist")
    return sorted(p for p in root.iterdir() if (p / "addon.json").is_file())
