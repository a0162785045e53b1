from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import melstream
from melstream.blocks import StreamableBlock
from melstream.components import get_component, known_components
from melstream.errors import RegistryError, StackError
from melstream.registry import register_component, reset_plugins, unregister_component


def test_builtins_are_registered() -> None:
    names = known_components()
    for name in ["StreamablePipeline", "StreamableStack", "SequenceBlockContainer", "Encoders", "CustomizedEncoders",
                 "Upsampler", "Decoder", "AttentionDecoder", "Timed", "Gain", "Network"]:
        assert name in names


def test_duplicate_name_is_refused() -> None:
    with pytest.raises(RegistryError, match="already registered"):
        @register_component("Decoder")
        class Other(StreamableBlock):
            pass


def test_non_block_is_refused() -> None:
    with pytest.raises(RegistryError, match="not a subclass"):
        register_component("NotABlock")(dict)  # type: ignore[arg-type]


def test_unknown_name_lists_known() -> None:
    with pytest.raises(StackError, match=r'unknown type "Decodr"; known: .*Decoder'):
        get_component("Decodr")


@pytest.fixture
def plugin_package(tmp_path: Path) -> Iterator[Path]:
    """A separately 'installed' package: a module plus a dist-info with an entry point, on sys.path."""
    (tmp_path / "echo_plugin.py").write_text(textwrap.dedent('''
        from melstream.blocks import Contract, StreamableBlock
        from melstream.registry import register_component

        @register_component("Echo")
        class Echo(StreamableBlock):
            """Repeats every upstream chunk twice."""
            contract = Contract(keeps_upstream=True)
            def generate(self, context, upstream=None):
                for chunk in upstream:
                    yield chunk
                    yield chunk
    '''))
    dist = tmp_path / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[melstream.components]\necho = echo_plugin\n")
    sys.path.insert(0, str(tmp_path))
    reset_plugins()
    yield tmp_path
    sys.path.remove(str(tmp_path))
    sys.modules.pop("echo_plugin", None)
    unregister_component("Echo")
    reset_plugins()


def test_entry_point_plugin_adds_a_component(plugin_package: Path, fast_addon: melstream.Addon) -> None:
    assert "Echo" in known_components()
    stack = [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
              "streamable_block": {"type": "StreamableStack",
                                   "stack": [{"type": "Upsampler"}, {"type": "Decoder"}, {"type": "Echo"}]}}]
    plain = fast_addon.build().synthesize("Hi.")
    echoed = fast_addon.build(stack=stack).synthesize("Hi.")
    assert echoed.shape[0] == 2 * plain.shape[0]


def test_broken_plugin_names_its_entry_point(tmp_path: Path) -> None:
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[melstream.components]\nbroken = no_such_module_xyz\n")
    sys.path.insert(0, str(tmp_path))
    reset_plugins()
    try:
        with pytest.raises(RegistryError, match="'broken'.*no_such_module_xyz"):
            get_component("Decoder")
    finally:
        sys.path.remove(str(tmp_path))
        reset_plugins()
