"""SequenceBlocks that run an addon's encoder networks."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from melstream.blocks import Contract, SequenceBlock, SequenceBlockContainer, Tensors, network_shape
from melstream.errors import StackError, SynthesisError
from melstream.registry import register_component

if TYPE_CHECKING:
    from melstream.blocks import BuildContext


@register_component("Network")
class NetworkBlock(SequenceBlock):
    """Runs one named network of the addon on the whole utterance.

    Inputs: the network's declared inputs, taken from the context by name, each ``[...]`` without
    batch (a batch of 1 is added).  Outputs: the network's declared outputs, batch removed.
    """

    def __init__(self, ctx: BuildContext, *, network: str, path: str = "") -> None:
        super().__init__(ctx, path=path)
        self.network = ctx.network(network, path)
        self.name = network
        spec = self.network.spec
        self.contract = Contract(reads={t.name: network_shape(t.shape) for t in spec.inputs},
                                 emits={t.name: network_shape(t.shape) for t in spec.outputs})

    def params(self) -> dict[str, Any]:
        return {"network": self.name}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        missing = [n for n in self.requires if n not in inputs]
        if missing:
            raise SynthesisError(f"{self.path}: network {self.name!r} needs {missing}, the context has {sorted(inputs)}")
        out = self.network({n: inputs[n][None] for n in self.requires})
        return {n: v[0] for n, v in out.items()}


def _encoder_blocks(ctx: BuildContext, path: str) -> list[SequenceBlock]:
    names = ctx.networks_with_role("encoder")
    if not names:
        raise StackError(f'{path}: the addon declares no network with "role": "encoder"')
    return [NetworkBlock(ctx, network=n, path=f"{path}<{n}>") for n in names]


@register_component("Encoders")
class Encoders(SequenceBlockContainer):
    """A SequenceBlockContainer built automatically from every encoder network the addon declares,
    run one after another in declaration order.

    Inputs: ``tokens`` ``[N]`` int64 (and whatever else the encoders declare).
    Outputs: the union of the encoders' outputs, e.g. ``encodings`` ``[N, D]`` and ``durations`` ``[N]``.
    """

    child_slots: ClassVar[dict[str, tuple[str, bool]]] = {}  # its children come from the addon, not the JSON

    def __init__(self, ctx: BuildContext, *, path: str = "") -> None:
        super().__init__(ctx, stack=_encoder_blocks(ctx, path), path=path)


@register_component("CustomizedEncoders")
class CustomizedEncoders(Encoders):
    """Same contract as Encoders, but runs the encoders in parallel.

    Encoders whose inputs are all available run together in one wave (threads; ONNX Runtime and
    Triton calls release the GIL); an encoder that needs another's output waits for the next wave.
    The output equals Encoders' exactly.
    """

    def __init__(self, ctx: BuildContext, *, max_workers: int = 4, path: str = "") -> None:
        super().__init__(ctx, path=path)
        if max_workers < 1:
            raise StackError(f"{path}.max_workers: must be >= 1, got {max_workers}")
        self.max_workers = max_workers

    def params(self) -> dict[str, Any]:
        return {"max_workers": self.max_workers}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Tensors:
        env = dict(inputs)
        out: Tensors = {}
        pending = list(self.stack)
        with ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="encoders") as pool:
            while pending:
                wave = [b for b in pending if all(r in env for r in b.requires)]
                if not wave:
                    raise SynthesisError(f"{self.path}: encoders {[b.path for b in pending]} wait for inputs nobody produces")
                for produced in pool.map(lambda b: b(env), wave):
                    env.update(produced)
                    out.update(produced)
                pending = [b for b in pending if b not in wave]
        return out
