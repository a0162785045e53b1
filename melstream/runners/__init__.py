"""Where a network executes: in-process (ONNX Runtime, torch), Triton BLS, Triton remote."""

from melstream.runners.base import Network, Runner, UnboundRunner

__all__ = ["Network", "Runner", "UnboundRunner"]
