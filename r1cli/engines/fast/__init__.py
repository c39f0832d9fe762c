"""The fast engine: own model code, a slot KV cache, CUDA-graph decoding (see engine.py)."""

from r1cli.engines.fast.engine import FastEngine

__all__ = ["FastEngine"]
