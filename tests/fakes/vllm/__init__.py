"""A stand-in for the part of vLLM's offline API (vLLM 0.10) that r1cli.engines.vllm uses.

Tests load it in place of `vllm` for one test at a time (monkeypatched into sys.modules); it is
never importable by accident, since tests/fakes is not on sys.path. It keeps vLLM's documented
names, signatures, defaults and output objects, rejects what vLLM would reject (unknown engine
arguments, out-of-range sampling parameters, RPC arguments its engine process could not receive),
and records every call in CALLS.

Completions are deterministic: a seeded request's tokens are a function of its prompt ids and
seed, so the same seed gives the same completion and different seeds differ; an unseeded sampled
request differs from call to call; a greedy one depends on the prompt only, as in vLLM. The
vocabulary of its completions is bytes (ids 0-255, text is their characters) plus EOS_ID;
prompts may hold any token ids (they come from the real checkpoint's tokenizer).
"""

from __future__ import annotations

import copy
import importlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

__version__ = "0.10.2"

EOS_ID = 256
BOS_ID = 257
SPECIAL_TEXT = {EOS_ID: "</s>", BOS_ID: "<s>"}
WORD_CHARACTERS = "abcdefghij "  # what the fake model "says"
EOS_CHANCE = 0.15

# Every call, in order: {"call": "LLM" | "generate" | "collective_rpc" | "reset_prefix_cache" | "load_weights", ...}
CALLS: list[dict[str, Any]] = []

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
LOGPROBS_MODES = ("raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits")
# A subset of EngineArgs' fields (all keyword arguments of LLM); anything else is a TypeError there.
ENGINE_ARGUMENTS = {
    "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "tensor_parallel_size",
    "dtype", "quantization", "revision", "tokenizer_revision", "seed", "gpu_memory_utilization",
    "swap_space", "cpu_offload_gb", "enforce_eager", "max_model_len", "max_num_seqs", "max_logprobs",
    "logprobs_mode", "worker_extension_cls", "enable_prefix_caching", "enable_sleep_mode",
    "generation_config", "distributed_executor_backend", "disable_log_stats", "hf_overrides",
    "compilation_config", "load_format",
}


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool = True


class SamplingParams:
    """vLLM's SamplingParams: its keyword arguments and defaults, and the checks of _verify_args."""

    DEFAULTS: dict[str, Any] = {
        "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0,
        "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None,
        "stop_token_ids": None, "ignore_eos": False, "max_tokens": 16, "min_tokens": 0,
        "logprobs": None, "prompt_logprobs": None, "detokenize": True, "skip_special_tokens": True,
        "spaces_between_special_tokens": True, "include_stop_str_in_output": False,
        "logit_bias": None, "allowed_token_ids": None, "bad_words": None,
    }

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.DEFAULTS))
        if unknown:
            raise TypeError(f"SamplingParams got unexpected keyword arguments: {unknown}")
        self.__dict__.update({**self.DEFAULTS, **kwargs})
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.logprobs is not None and self.logprobs < -1:
            raise ValueError(f"logprobs must be non-negative or -1, got {self.logprobs}.")
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.stop is not None and not self.stop:
            self.stop = None

    def __repr__(self) -> str:
        return f"SamplingParams({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class FakeTokenizer:
    """Bytes are tokens; BOS_ID (added by encode unless add_special_tokens=False, as Llama's
    tokenizer adds its BOS) and EOS_ID are the special ones."""

    bos_token_id = BOS_ID
    eos_token_id = EOS_ID

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [BOS_ID] * add_special_tokens + list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        pieces = [bytes([i]).decode("latin-1") if i < 256 else "" if skip_special_tokens else SPECIAL_TEXT[i] for i in ids]
        return "".join(pieces)


class FakeModel:
    """The worker's model: load_weights keeps what it was given (copies, as vLLM copies into its own)."""

    def __init__(self):
        self.loaded: dict[str, Any] = {}

    def load_weights(self, weights) -> set[str]:
        names = set()
        for name, tensor in weights:
            self.loaded[name] = tensor.clone()
            names.add(name)
        CALLS.append({"call": "load_weights", "names": sorted(names)})
        return names


class FakeWorker:
    """The part of vLLM's GPU worker a worker extension reaches: its device and model runner."""

    def __init__(self):
        import torch

        self.device = torch.device("cpu")
        self.model_runner = SimpleNamespace(model=FakeModel())


def _resolve_qualname(qualname: str) -> type:
    module, _, name = qualname.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _check_rpc_payload(value: Any, where: str = "args") -> None:
    """What vLLM's msgpack transport carries to its engine process without pickling: plain data."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_rpc_payload(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_rpc_payload(key, f"{where} key")
            _check_rpc_payload(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"Object of type {type(value).__name__} ({where}) is not serializable. "
                    "Set VLLM_ALLOW_INSECURE_SERIALIZATION=1 to allow fallback to pickle-based serialization.")


class LLM:
    def __init__(self, model: str, **kwargs):
        unknown = sorted(set(kwargs) - ENGINE_ARGUMENTS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments: {unknown}")
        if kwargs.get("dtype", "auto") not in DTYPES:
            raise ValueError(f"Unknown dtype: {kwargs['dtype']!r}")
        self.logprobs_mode = kwargs.get("logprobs_mode", "raw_logprobs")
        if self.logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"Invalid logprobs_mode: {self.logprobs_mode!r}")
        CALLS.append({"call": "LLM", "model": model, **kwargs})
        self.model = model
        self.tokenizer = FakeTokenizer()
        base = (FakeWorker,)
        if kwargs.get("worker_extension_cls"):
            base = (FakeWorker, _resolve_qualname(kwargs["worker_extension_cls"]))
        self.worker = type("Worker", base, {})()
        self._unseeded = itertools.count()
        self._request_ids = itertools.count()

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None) -> list[RequestOutput]:
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = [sampling_params] * len(prompts) if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        outputs = [self._request(prompt, p) for prompt, p in zip(prompts, params)]
        CALLS.append({"call": "generate", "prompts": copy.deepcopy(prompts), "params": params,
                      "use_tqdm": use_tqdm, "outputs": outputs})
        return outputs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None) -> list[Any]:
        kwargs = kwargs or {}
        _check_rpc_payload(list(args))
        _check_rpc_payload(kwargs, "kwargs")
        CALLS.append({"call": "collective_rpc", "method": method, "args": args, "kwargs": kwargs})
        if callable(method):
            return [method(self.worker, *args, **kwargs)]
        return [getattr(self.worker, method)(*args, **kwargs)]

    def reset_prefix_cache(self, device=None) -> bool:
        CALLS.append({"call": "reset_prefix_cache"})
        return True

    def _request(self, prompt, params: SamplingParams) -> RequestOutput:
        if isinstance(prompt, str):
            prompt = {"prompt": prompt}
        if "prompt_token_ids" in prompt:
            ids, text = list(prompt["prompt_token_ids"]), prompt.get("prompt")
        else:
            ids, text = self.tokenizer.encode(prompt["prompt"]), prompt["prompt"]
        if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise ValueError(f"prompt token ids must be a non-empty list of non-negative ints, got {ids[:8]}")
        outputs = [self._sample(ids, params, index) for index in range(params.n)]
        return RequestOutput(str(next(self._request_ids)), text, ids, None, outputs)

    def _sample(self, prompt_ids: list[int], params: SamplingParams, index: int) -> CompletionOutput:
        greedy = params.temperature < 1e-5
        if greedy:
            stream: Any = "greedy"
        elif params.seed is not None:
            stream = [params.seed, index]
        else:
            stream = ["unseeded", next(self._unseeded)]
        rng = random.Random(json.dumps([prompt_ids, stream]))
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        finish, stop_reason, text = "length", None, None
        for step in range(params.max_tokens):
            token = EOS_ID if step > 0 and rng.random() < EOS_CHANCE else ord(rng.choice(WORD_CHARACTERS))
            raw = -rng.uniform(0.05, 3.0)
            processed = raw if greedy or self.logprobs_mode.startswith("raw") else raw / params.temperature
            tokens.append(token)
            logprobs.append({token: Logprob(processed, 1, self.tokenizer.decode([token], skip_special_tokens=params.skip_special_tokens))})
            if token == EOS_ID and not params.ignore_eos:
                finish = "stop"
                break
            decoded = self.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens)
            hit = next((s for s in params.stop or () if s in decoded), None)
            if hit is not None:
                cut = decoded.find(hit)
                text = decoded[: cut + len(hit)] if params.include_stop_str_in_output else decoded[:cut]
                finish, stop_reason = "stop", hit
                break
        if text is None:  # ended by EOS or length, not cut at a stop string
            text = self.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens)
        return CompletionOutput(
            index=index,
            text=text if params.detokenize else "",
            token_ids=tokens,
            cumulative_logprob=None if params.logprobs is None else math.fsum(next(iter(s.values())).logprob for s in logprobs),
            logprobs=None if params.logprobs is None else logprobs,
            finish_reason=finish,
            stop_reason=stop_reason,
        )


