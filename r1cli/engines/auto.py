"""`auto`: the fast engine on a GPU (it falls back to hf for architectures it lacks), hf on a CPU."""

from __future__ import annotations

from r1cli.engines.base import EngineSettings, engine


def _choice(settings: EngineSettings, device=None) -> type:
    from r1cli.engines.fast import FastEngine
    from r1cli.engines.hf import HFEngine
    from r1cli.modeling import resolve_device

    device = device or resolve_device(settings.device)
    return FastEngine if device.type == "cuda" else HFEngine


@engine("auto")
class AutoEngine:
    @classmethod
    def load(cls, model: str, settings: EngineSettings):
        return _choice(settings).load(model, settings)

    @classmethod
    def for_policy(cls, network, tokenizer, model: str, settings: EngineSettings):
        return _choice(settings, next(network.parameters()).device).for_policy(network, tokenizer, model, settings)
