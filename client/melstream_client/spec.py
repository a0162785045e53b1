"""``addon.json`` as plain data: parsed and validated, nothing built (standard library only).

A client reads a voice's spec (its audio parameters, its networks) from the JSON a server publishes,
without importing any component, plugin, ONNX Runtime or numpy.  Building the block tree from
``AddonSpec.stack`` is a separate step (:mod:`melstream.addon`).

``addon.json`` (every key is checked; errors name the file and the JSON path)::

    {
      "name": "fastvoice",                 # [a-z][a-z0-9-]*, becomes the Triton model name
      "version": "0.1.0",
      "description": "...",                # optional
      "license": "...",                    # optional
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
          "buckets": [16, 32, 64, 128],    # optional: the sizes its variable axis is compiled for (fixed-shape
                                           # profiles pad to the smallest that fits); increasing, each above twice
                                           # the network's context_tokens/context_frames
          "length_input": "length",        # optional: an int64 [1] input holding the true size of the variable
                                           # axis (the network masks what lies beyond it, so padded inputs give
                                           # the values of unpadded ones); the integration layer fills it, blocks
                                           # never see it
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
from typing import Any

from melstream_client.errors import AddonError

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
NETWORK_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
DTYPES = ("float32", "int64", "int32", "float16", "bool")
ROLES = ("encoder", "decoder", "other")
TOP_KEYS = ("name", "version", "description", "license", "audio", "text", "networks", "stack")
TEXT_KEYS = ("frontend", "max_chars", "symbols")
NETWORK_KEYS = ("file", "role", "inputs", "outputs", "arch", "max_batch_size", "buckets", "length_input")
#: the options that declare a network's context on each side of a window, in its variable axis
CONTEXT_OPTIONS = ("context_tokens", "context_frames")


@dataclass(frozen=True)
class TensorSpec:
    """One network input or output: ``shape`` excludes the batch dimension; ``-1`` is a variable size."""

    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class NetworkSpec:
    """One exported network of an addon (ONNX file, tensors, and network-specific ``options`` such as
    ``context_frames`` that blocks read)."""

    name: str
    file: str
    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    arch: dict[str, Any] | None = None
    max_batch_size: int = 8
    options: dict[str, Any] = field(default_factory=dict)
    #: the sizes its variable axis (every ``-1`` of its inputs: one length) is compiled for, increasing; () = any
    buckets: tuple[int, ...] = ()
    #: the input that carries the true size of the variable axis (int64 ``[1]``), filled by the integration layer
    #: (melstream.runners.base.Network), not by blocks: ``inputs`` does not list it, :meth:`all_inputs` does
    length: TensorSpec | None = None

    def input_names(self) -> tuple[str, ...]:
        """The inputs blocks provide (the length input excluded)."""
        return tuple(t.name for t in self.inputs)

    def all_inputs(self) -> tuple[TensorSpec, ...]:
        """Every input of the exported network, in its order: the blocks' inputs, then the length input."""
        return self.inputs + ((self.length,) if self.length is not None else ())

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

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass(frozen=True, eq=False)
class AddonSpec:
    """A validated ``addon.json``.  ``stack`` is the stack JSON, not yet built; ``path`` the addon's
    directory (``None`` for an addon rebuilt from JSON alone, e.g. from a server's model config)."""

    name: str
    version: str
    description: str
    license: str
    audio: AudioSpec
    text: dict[str, Any]
    networks: dict[str, NetworkSpec]
    stack: list[Any]
    raw: dict[str, Any]
    source: str = "addon.json"
    path: Path | None = None

    def to_json(self) -> str:
        """The addon JSON, canonical (what the server's model config carries)."""
        return json.dumps(self.raw, separators=(",", ":"))  # key order matters: it orders networks and tensors

    def network_path(self, name: str) -> Path:
        """The ONNX file of network ``name``; an addon without a directory has none."""
        if self.path is None:
            raise AddonError(f"{self.source}: addon {self.name!r} has no directory; its networks cannot run in-process")
        return self.path / self.networks[name].file

    def fail(self, where: str, msg: str) -> AddonError:
        """An error about this addon's ``where`` (a JSON path), naming its file."""
        return AddonError(f"{self.source}: {where}: {msg}")


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

    def no_extra(self, obj: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        extra = sorted(set(obj) - set(allowed))
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
        r.no_extra(spec, ("dtype", "shape"), p)
        dtype = r.get(spec, "dtype", str, p)
        if dtype not in DTYPES:
            raise r.fail(f"{p}.dtype", f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
        shape = r.get(spec, "shape", list, p)
        if not all(isinstance(d, int) and not isinstance(d, bool) and (d == -1 or d > 0) for d in shape):
            raise r.fail(f"{p}.shape", f"dimensions must be positive integers or -1, got {shape}")
        out.append(TensorSpec(name, dtype, tuple(shape)))
    return tuple(out)


def _audio(r: _Reader, data: Mapping[str, Any]) -> AudioSpec:
    audio = r.get(data, "audio", dict, "")
    r.no_extra(audio, tuple(AudioSpec.__dataclass_fields__), "audio")
    ints = {k: r.get(audio, k, int, "audio") for k in ("sample_rate", "hop_length", "win_length", "n_fft", "n_mels")}
    for k, v in ints.items():
        if v <= 0:
            raise r.fail(f"audio.{k}", f"must be positive, got {v}")
    return AudioSpec(**ints, fmin=float(r.get(audio, "fmin", (int, float), "audio", default=0.0)),
                     fmax=float(r.get(audio, "fmax", (int, float), "audio", default=ints["sample_rate"] / 2)))


def _text(r: _Reader, data: Mapping[str, Any]) -> dict[str, Any]:
    text = r.get(data, "text", dict, "")
    r.no_extra(text, TEXT_KEYS, "text")
    r.get(text, "frontend", str, "text")  # which front ends exist is the text module's business, checked at load
    symbols = r.get(text, "symbols", list, "text", default=None)
    if symbols is not None and (len(symbols) < 3 or symbols[:2] != ["_", "~"]
                                or not all(isinstance(x, str) and x for x in symbols) or len(set(symbols)) != len(symbols)):
        raise r.fail("text.symbols", 'expected distinct non-empty strings starting with "_" (pad) and "~" (end)')
    max_chars = r.get(text, "max_chars", int, "text", default=None)
    if max_chars is not None and max_chars <= 0:
        raise r.fail("text.max_chars", f"must be positive, got {max_chars}")
    return dict(text)


def _network(r: _Reader, name: str, spec: Any, path: Path | None, check_files: bool) -> NetworkSpec:
    p = f"networks.{name}"
    if not NETWORK_NAME_RE.match(name):
        raise r.fail(p, f"network names must match {NETWORK_NAME_RE.pattern[1:-1]}")
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
    inputs = _tensors(r, r.get(spec, "inputs", dict, p), f"{p}.inputs")
    inputs, length = _length_input(r, spec, p, inputs)
    options = {k: v for k, v in spec.items() if k not in NETWORK_KEYS}
    return NetworkSpec(name=name, file=file, role=role, inputs=inputs,
                       outputs=_tensors(r, r.get(spec, "outputs", dict, p), f"{p}.outputs"),
                       arch=arch, max_batch_size=mbs, options=options,
                       buckets=_buckets(r, spec, p, inputs, options), length=length)


def _length_input(r: _Reader, spec: Mapping[str, Any], p: str,
                  inputs: tuple[TensorSpec, ...]) -> tuple[tuple[TensorSpec, ...], TensorSpec | None]:
    """The inputs blocks provide, and the declared length input (int64 ``[1]``, one of ``inputs``; the others
    must have a variable axis for it to measure), if any."""
    name = r.get(spec, "length_input", str, p, default=None)
    if name is None:
        return inputs, None
    where = f"{p}.length_input"
    found = [t for t in inputs if t.name == name]
    if not found:
        raise r.fail(where, f"{name!r} is not one of the network's inputs ({', '.join(t.name for t in inputs)})")
    if found[0].dtype != "int64" or found[0].shape != (1,):
        raise r.fail(where, f"input {name!r} must be int64 of shape [1] (the true size of the variable axis), "
                            f"it is {found[0].dtype} {list(found[0].shape)}")
    rest = tuple(t for t in inputs if t.name != name)
    if not any(-1 in t.shape for t in rest):
        raise r.fail(where, "the network's other inputs have no variable axis (-1) for a length to measure")
    return rest, found[0]


def _buckets(r: _Reader, spec: Mapping[str, Any], p: str, inputs: tuple[TensorSpec, ...], options: Mapping[str, Any]) -> tuple[int, ...]:
    """A network's ``buckets``: positive integers, strictly increasing; the network must have a variable axis,
    and each bucket must hold more than its context on both sides (a window keeps a middle)."""
    buckets = r.get(spec, "buckets", list, p, default=None)
    if buckets is None:
        return ()
    where = f"{p}.buckets"
    if not buckets or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in buckets):
        raise r.fail(where, f"expected a non-empty list of positive integers, got {buckets!r}")
    if any(a >= b for a, b in zip(buckets, buckets[1:])):  # (no strict=: Python 3.9)
        raise r.fail(where, f"expected strictly increasing sizes, got {buckets}")
    if not any(-1 in t.shape for t in inputs):
        raise r.fail(where, "the network has no variable axis (no -1 in its inputs' shapes) to compile sizes of")
    for key in CONTEXT_OPTIONS:
        context = options.get(key)
        if isinstance(context, int) and buckets[0] <= 2 * context:
            raise r.fail(where, f"{buckets[0]} does not hold more than the network's {key} ({context}) on both "
                                f"sides: every bucket must exceed {2 * context}")
    return tuple(buckets)


def parse_addon_spec(data: Any, *, source: str = "addon.json", path: Path | None = None, check_files: bool = True) -> AddonSpec:
    """Validate ``data`` (the parsed JSON) as an addon; ``path`` is its directory, whose network files
    must exist when ``check_files``.  Errors are :class:`AddonError` naming ``source`` and the JSON path."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise r.fail("(root)", f"expected a JSON object, got {type(data).__name__}")
    r.no_extra(data, TOP_KEYS, "")
    name = r.get(data, "name", str, "")
    if not NAME_RE.match(name):
        raise r.fail("name", f"{name!r} must match {NAME_RE.pattern} (it becomes a Triton model name)")
    version = r.get(data, "version", str, "")
    description = r.get(data, "description", str, "", default="")
    license_ = r.get(data, "license", str, "", default="")
    audio, text = _audio(r, data), _text(r, data)
    nets = r.get(data, "networks", dict, "")
    if not nets:
        raise r.fail("networks", "an addon needs at least one network")
    networks = {n: _network(r, n, s, path, check_files) for n, s in nets.items()}
    stack = r.get(data, "stack", list, "")
    if not stack:
        raise r.fail("stack", "expected a non-empty list of blocks")
    return AddonSpec(name=name, version=version, description=description, license=license_, audio=audio, text=text, networks=networks,
                     stack=stack, raw=data, source=source, path=path)


def read_addon_spec(path: str | Path, *, check_files: bool = True) -> AddonSpec:
    """The spec of the addon in directory ``path`` (or of the ``addon.json`` file itself)."""
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
    return parse_addon_spec(data, source=str(file), path=file.parent, check_files=check_files)


def addon_spec_from_json(text: str, *, source: str = "addon JSON") -> AddonSpec:
    """The spec of an addon from its JSON alone (no directory): what a server's voice model publishes."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AddonError(f"{source}: malformed JSON: {e}") from e
    return parse_addon_spec(data, source=source, path=None, check_files=False)


def discover_addons(root: str | Path) -> list[Path]:
    """Addon directories (those holding addon.json) directly under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise AddonError(f"{root}: addons directory does not exist")
    return sorted(p for p in root.iterdir() if (p / "addon.json").is_file())
