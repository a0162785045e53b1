"""melstream's modules (the server package and the client distribution) import each other without a circle, and
the light parts stay light: the client never imports the server package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (ROOT / "melstream", ROOT / "client" / "melstream_client")


def module_name(path: Path) -> str:
    package = next(p for p in PACKAGES if path.is_relative_to(p))
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The melstream modules ``path`` imports when it runs: top-level and function-local imports alike
    (a circle held together by an import inside a function is still a circle), not ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:  # `from melstream.x import y` is melstream.x.y when y is a module
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in modules and m != module_name(path)}


def import_graph() -> dict[str, set[str]]:
    files = sorted(f for p in PACKAGES for f in p.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_graph_sees_imports() -> None:
    graph = import_graph()
    assert "melstream.blocks" in graph["melstream.stack"]
    assert "melstream.components.encoders" in graph["melstream.components.segments"]  # function-local, still an edge
    assert "melstream.addon" not in graph["melstream.runners.base"]  # under TYPE_CHECKING only
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_melstream() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def loaded_in_a_fresh_interpreter(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under ``prefixes`` (top-level names) that ``import <imports>`` loads in a new interpreter."""
    code = (f"import sys, {imports}; "
            f"print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout.split()


def test_spec_and_errors_are_standard_library_only() -> None:
    graph = import_graph()
    assert graph["melstream_client.spec"] == {"melstream_client.errors"}
    assert graph["melstream_client.errors"] == set()
    assert loaded_in_a_fresh_interpreter("melstream_client.spec, melstream_client.errors",
                                         ("numpy", "onnxruntime", "onnx", "tritonclient", "torch", "melstream")) == []


def test_the_client_never_imports_the_server_package() -> None:
    """Statically (every import in the client's files) and when it runs: importing the client and its command
    line loads no melstream module, ONNX Runtime, torch or pytriton."""
    graph = import_graph()
    client = {m: deps for m, deps in graph.items() if m.split(".")[0] == "melstream_client"}
    assert len(client) >= 8 and "melstream_client.wire" in client["melstream_client.grpc"]  # the graph sees them
    assert {m: sorted(d for d in deps if d.split(".")[0] == "melstream") for m, deps in client.items()} == {m: [] for m in client}
    assert loaded_in_a_fresh_interpreter("melstream_client, melstream_client.cli, melstream_client.audio",
                                         ("onnxruntime", "onnx", "torch", "pytriton", "melstream")) == []
    assert "numpy" in loaded_in_a_fresh_interpreter("melstream_client.audio", ("numpy",))  # the check sees imports


def test_the_server_package_names_are_the_client_modules() -> None:
    """melstream.client, .wire, .spec and .audio are the client's modules themselves (not copies: one class per
    error, one contract), so existing imports keep working."""
    code = ("import melstream.client, melstream.wire, melstream.spec, melstream.audio, melstream.errors, melstream_client; "
            "import melstream_client.wire as w, melstream_client.spec as s, melstream_client.audio as a, melstream_client.errors as e; "
            "from melstream.client import Client; "
            "ok = (melstream.client is melstream_client and melstream.wire is w and melstream.spec is s and melstream.audio is a "
            "and Client is melstream_client.Client and melstream.errors.ClientError is e.ClientError "
            "and issubclass(melstream.errors.StackError, e.AddonError) and melstream.errors.MelstreamError is e.MelstreamError); "
            "raise SystemExit(0 if ok else 1)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_clients_public_names_all_resolve() -> None:
    """melstream_client's names kept by hand (``__all__``, the lazily imported ones) agree, and each resolves."""
    import melstream_client

    lazy = set(melstream_client._LAZY)
    assert lazy <= set(melstream_client.__all__)
    for name in melstream_client.__all__:
        assert getattr(melstream_client, name) is not None, name
    errors = {n for n in melstream_client.__all__ if n not in lazy}
    assert all(issubclass(getattr(melstream_client, n), melstream_client.MelstreamError) for n in errors)
