"""The client distribution runs on Python 3.9 (client/pyproject.toml says so), and CI's machines have only 3.11:
so its files are checked here for what 3.9 lacks.  (tests/system/test_client_package.py runs it on a real 3.9
where one is installed.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client" / "melstream_client"
TYPE_NAMES = {"int", "float", "str", "bytes", "bool", "list", "dict", "tuple", "set", "frozenset", "type"}


def newer_than_39(source: str) -> list[str]:
    """What in ``source`` needs Python 3.10+: syntax (match, parenthesised context managers...), zip(strict=),
    dataclass(kw_only=/slots=), and ``X | Y`` of types evaluated at run time (outside annotations)."""
    try:
        tree = ast.parse(source, feature_version=(3, 9))
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax newer than 3.9: {e.msg}"]
    found = []
    annotations: set[int] = set()
    for node in ast.walk(tree):  # annotations are strings under `from __future__ import annotations`
        if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None:
            annotations.update(id(n) for n in ast.walk(node.annotation))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            annotations.update(id(n) for n in ast.walk(node.returns))
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
                 for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            keywords = {k.arg for k in node.keywords}
            if name == "zip" and "strict" in keywords:
                found.append(f"line {node.lineno}: zip(strict=) is 3.10+")
            if name == "dataclass" and keywords & {"kw_only", "slots", "match_args"}:
                found.append(f"line {node.lineno}: dataclass({', '.join(sorted(keywords & {'kw_only', 'slots', 'match_args'}))}=) is 3.10+")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and not (future and id(node) in annotations):
            sides = [node.left, node.right]

            def is_type(n: ast.expr) -> bool:
                return ((isinstance(n, ast.Constant) and n.value is None) or (isinstance(n, ast.Name) and n.id in TYPE_NAMES)
                        or (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id in TYPE_NAMES))

            if any(is_type(s) for s in sides):
                found.append(f"line {node.lineno}: `X | Y` of types at run time is 3.10+")
    return found


@pytest.mark.parametrize("path", sorted(CLIENT.glob("*.py")), ids=lambda p: p.name)
def test_the_client_needs_nothing_newer_than_python_39(path: Path) -> None:
    assert newer_than_39(path.read_text()) == []


@pytest.mark.parametrize(("source", "what"), [
    ("match x:\n    case 1:\n        pass\n", "syntax newer than 3.9"),
    ("pairs = list(zip(a, b, strict=True))\n", "zip(strict=)"),
    ("from dataclasses import dataclass\n@dataclass(slots=True)\nclass A:\n    x: int\n", "dataclass(slots=)"),
    ("Maybe = int | None\n", "`X | Y` of types"),
    ("ok = isinstance(v, str | bytes)\n", "`X | Y` of types"),
])
def test_the_check_finds_what_39_lacks(source: str, what: str) -> None:
    assert any(what in f for f in newer_than_39(source)), newer_than_39(source)


def test_the_check_lets_annotations_and_bitwise_or_be() -> None:
    source = ("from __future__ import annotations\n"
              "def f(x: int | None = None) -> str | None:\n    y: dict[str, int] | None = None\n    return None\n"
              "flags = a | b\n")
    assert newer_than_39(source) == []
