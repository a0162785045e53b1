"""Registers the seed's generic containers under their own names."""

from melstream.blocks import SequenceBlockContainer, StreamablePipeline, StreamableStack
from melstream.registry import register_component

register_component("StreamablePipeline")(StreamablePipeline)
register_component("StreamableStack")(StreamableStack)
register_component("SequenceBlockContainer")(SequenceBlockContainer)
