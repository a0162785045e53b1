"""Re-export a trained addon's networks with their length input, from the parameters in its ONNX files (no
retraining), and declare it in addon.json (``length_input``, the version's minor number bumped).

    python -m training.reexport addons/fastvoice addons/tacovoice

The masked networks give a padded input exactly the values of the unpadded one (each architecture's
masking rule is in its docstring, melstream/nets.py, and in the addon's MODEL_CARD.md), which is what the
fixed-shape profiles need: they pad every call to a compiled size (a bucket).  An addon whose networks
already declare a length input is left as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from melstream.addon import load_addon
from melstream.runners.torch import load_module
from training.export import LENGTH, export_masked, with_length

EXAMPLE_SIZE = 11  # the traced example's variable size (any: the axis is exported as dynamic)


def examples_for(spec: Any) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """Example inputs (batch 1) and dynamic axes (batch, and each -1 as ``n``) for a network's data inputs and
    outputs."""
    examples: dict[str, torch.Tensor] = {}
    dynamic: dict[str, dict[int, str]] = {}
    for t in (*spec.inputs, *spec.outputs):
        axes = {0: "b", **{i + 1: "n" for i, d in enumerate(t.shape) if d == -1}}
        dynamic[t.name] = axes
    for t in spec.inputs:
        shape = (1, *(EXAMPLE_SIZE if d == -1 else d for d in t.shape))
        if t.dtype == "int64":
            examples[t.name] = torch.randint(1, 20, shape)
        elif t.name == "alignment":  # a distribution: all mass on the first token, as at the first step
            examples[t.name] = torch.zeros(shape)
            examples[t.name][:, 0] = 1.0
        else:
            examples[t.name] = torch.randn(shape)
    return examples, dynamic


def bump_minor(version: str) -> str:
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}.0"


def reexport(addon_dir: Path) -> bool:
    """Re-export ``addon_dir``'s networks with a length input; False if they already have one."""
    addon = load_addon(addon_dir)
    if any(spec.length is not None for spec in addon.networks.values()):
        return False
    raw: dict[str, Any] = json.loads((addon_dir / "addon.json").read_text())
    for name, spec in addon.networks.items():
        module = load_module(addon.spec, spec)
        examples, dynamic = examples_for(spec)
        export_masked(module, examples, list(spec.output_names()), dynamic, addon_dir / spec.file, size=EXAMPLE_SIZE)
        raw["networks"][name] = with_length(raw["networks"][name])
    raw["version"] = bump_minor(raw["version"])
    (addon_dir / "addon.json").write_text(json.dumps(raw, indent=2) + "\n")
    return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("addons", nargs="+", type=Path)
    for d in ap.parse_args(argv).addons:
        print(f"{d}: {'re-exported with ' + repr(LENGTH) if reexport(d) else 'already has a length input'}")


if __name__ == "__main__":
    main()
