"""Stack JSON → block tree.  Every error names the JSON path of the offending entry."""

from __future__ import annotations

import inspect
import typing
from typing import TYPE_CHECKING, Any

from melstream.blocks import (
    Block,
    BuildContext,
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    StreamablePipeline,
    StreamableStack,
)
from melstream.components import get_component
from melstream.errors import StackError

if TYPE_CHECKING:
    from melstream.addon import Addon
    from melstream.runners.base import Runner

_KIND = {"sequence": SequenceBlock, "streamable": StreamableBlock}
_RESERVED = {"self", "ctx", "path"}


def _check_param(cls: type, name: str, value: Any, hint: Any, path: str) -> None:
    origin = typing.get_origin(hint)
    allowed: tuple[Any, ...] = typing.get_args(hint) if origin in (typing.Union, __import__("types").UnionType) else (hint,)
    for a in allowed:
        if a is type(None) and value is None:
            return
        if a is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return
        if a is int and isinstance(value, int) and not isinstance(value, bool):
            return
        if a in (str, bool) and isinstance(value, a):
            return
        if a is Any or typing.get_origin(a) in (list, dict) and isinstance(value, typing.get_origin(a)):
            return
    names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
    raise StackError(f"{path}.{name}: {getattr(cls, 'type_name', cls.__name__)} expects {names}, got {type(value).__name__} {value!r}")


def build_block(spec: Any, ctx: BuildContext, path: str, expect: str) -> Block:
    """Build one block (and its children) from its JSON ``spec``; ``expect`` is "sequence" or "streamable"."""
    if not isinstance(spec, dict):
        raise StackError(f'{path}: expected an object with a "type" key, got {type(spec).__name__}')
    if "type" not in spec:
        raise StackError(f'{path}: missing "type"')
    type_name = spec["type"]
    if not isinstance(type_name, str):
        raise StackError(f'{path}.type: expected a string, got {type(type_name).__name__}')
    try:
        cls = get_component(type_name)
    except StackError as e:
        raise StackError(f"{path}: {e}") from None
    want = _KIND[expect]
    if not issubclass(cls, want):
        have = "SequenceBlock" if issubclass(cls, SequenceBlock) else "StreamableBlock"
        raise StackError(f'{path}: "{type_name}" is a {have}, but a {want.__name__} is expected here')

    kwargs: dict[str, Any] = {}
    for slot, (kind, is_list) in cls.child_slots.items():
        if slot not in spec and slot in cls.optional_slots:
            continue
        if slot not in spec:
            raise StackError(f'{path}: "{type_name}" needs "{slot}"')
        value = spec[slot]
        if is_list:
            if not isinstance(value, list):
                raise StackError(f"{path}.{slot}: expected a list of blocks, got {type(value).__name__}")
            kwargs[slot] = [build_block(v, ctx, f"{path}.{slot}[{i}]", kind) for i, v in enumerate(value)]
        else:
            kwargs[slot] = build_block(value, ctx, f"{path}.{slot}", kind)

    sig = inspect.signature(cls.__init__)
    hints = typing.get_type_hints(cls.__init__, localns={"BuildContext": BuildContext})
    accepted = {n: p for n, p in sig.parameters.items()
                if n not in _RESERVED and n not in cls.child_slots and p.kind == p.KEYWORD_ONLY}
    for key, value in spec.items():
        if key == "type" or key in cls.child_slots:
            continue
        if key not in accepted:
            raise StackError(f'{path}.{key}: unknown parameter for "{type_name}"; accepted: '
                             f'{", ".join(sorted(accepted)) or "none"}')
        _check_param(cls, key, value, hints.get(key, Any), path)
        kwargs[key] = value
    missing = [n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in kwargs]
    if missing:
        raise StackError(f'{path}: "{type_name}" needs parameter "{missing[0]}"')
    try:
        return typing.cast(Block, cls(ctx, path=path, **kwargs))
    except StackError:
        raise
    except (ValueError, TypeError) as e:
        raise StackError(f'{path}: "{type_name}": {e}') from e


def build_stack(stack: Any, addon: Addon, runner: Runner, path: str = "stack") -> StreamablePipeline:
    """Build ``stack`` (an addon's stack list) into its root StreamablePipeline, networks on ``runner``,
    and check that every block gets the tensors it declares (:meth:`StreamablePipeline.check_root`).

    A one-element stack holding a StreamablePipeline is the root itself (the seed's form).  Any
    other list of StreamableBlocks is chained (a StreamableStack if more than one) under a root
    pipeline with an empty SequenceBlockContainer.
    """
    if not isinstance(stack, list) or not stack:
        raise StackError(f"{path}: expected a non-empty list of blocks")
    ctx = BuildContext(addon.spec, runner, frontend=addon.frontend())
    blocks = [build_block(s, ctx, f"{path}[{i}]", "streamable") for i, s in enumerate(stack)]
    if len(blocks) == 1 and isinstance(blocks[0], StreamablePipeline):
        root = blocks[0]
    else:
        streamable = blocks[0] if len(blocks) == 1 else StreamableStack(ctx, stack=blocks, path=path)  # type: ignore[arg-type]
        root = StreamablePipeline(ctx, sequence_block=SequenceBlockContainer(ctx, stack=[], path=path),
                                  streamable_block=streamable, path=path)  # type: ignore[arg-type]
    root.frontend = ctx.frontend
    root.check_root()
    return root
