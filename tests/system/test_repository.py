"""The committed model_repository/ is what `melstream build-repo` makes of the shipped addons today."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from melstream.serving.repo import build_repository


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}  # Triton writes bytecode next to model.py


def test_committed_repository_equals_a_fresh_generation(tmp_path: Path, root: Path) -> None:
    shutil.copytree(root / "addons", tmp_path / "addons")  # laid out as in the checkout, so relative network paths match
    report = build_repository(tmp_path / "addons", tmp_path / "model_repository", profile="cpu")
    assert report.voices == ["fastvoice", "tacovoice"] and not report.refused
    fresh, committed = tree(tmp_path / "model_repository"), tree(root / "model_repository")
    assert sorted(fresh) == sorted(committed), "run `melstream build-repo` and commit model_repository/"
    for name in fresh:
        assert fresh[name] == committed[name], f"{name} differs: run `melstream build-repo` and commit"


def test_model_py_files_are_the_python_backends(root: Path) -> None:
    models = list((root / "model_repository").glob("*/1/model.py"))
    assert len(models) == 7  # 2 voices + 5 networks
    for model_py in models:
        kind = "network" if "__" in model_py.parent.parent.name else "pipeline"
        assert filecmp.cmp(model_py, root / "python_backends" / kind / "model.py", shallow=False)
