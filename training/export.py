"""Export trained torch networks to ONNX (graph + parameters, no pickle) and write addon.json."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

AUDIO = {"sample_rate": 22050, "hop_length": 256, "win_length": 1024, "n_fft": 1024, "n_mels": 80, "fmin": 0.0, "fmax": 8000.0}


def tensor(dtype: str, shape: list[int]) -> dict[str, Any]:
    return {"dtype": dtype, "shape": shape}


def export_onnx(module: torch.nn.Module, examples: dict[str, torch.Tensor], outputs: list[str],
                dynamic: dict[str, dict[int, str]], path: Path) -> None:
    module.eval()
    # the TorchScript-based exporter on purpose: the dynamo one needs onnxscript, which we do not install
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module, tuple(examples.values()), str(path), input_names=list(examples), output_names=outputs,
                          dynamic_axes=dynamic, opset_version=17, do_constant_folding=False, dynamo=False)


def write_addon(out: Path, addon: dict[str, Any]) -> None:
    (out / "addon.json").write_text(json.dumps(addon, indent=2) + "\n")


def arch_of(module: torch.nn.Module, type_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"type": type_name, "config": config}


LENGTH = "length"  # the masked networks' length input: int64 [1], the true size of the variable axis


def export_masked(module: torch.nn.Module, examples: dict[str, torch.Tensor], outputs: list[str],
                  dynamic: dict[str, dict[int, str]], path: Path, *, size: int) -> None:
    """:func:`export_onnx` with the length input appended (``[B, 1]`` int64, after ``examples``): the network
    masks what lies past it, so an input padded to a compiled size gives the values of the unpadded one."""
    length = torch.full((next(iter(examples.values())).shape[0], 1), size, dtype=torch.int64)
    export_onnx(module, {**examples, LENGTH: length}, outputs, {**dynamic, LENGTH: {0: "b"}}, path)


def with_length(network: dict[str, Any]) -> dict[str, Any]:
    """A network's addon entry with the length input declared (last input, ``length_input``)."""
    return {**network, "length_input": LENGTH, "inputs": {**network["inputs"], LENGTH: tensor("int64", [1])}}
