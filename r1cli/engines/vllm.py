"""`--engine vllm`: the engine interface on vLLM's offline `LLM` API (vLLM >= 0.10, V1 engine).

Imported only when chosen. r1's CI and GPU checks have no vLLM; the tests run this module against
a fake `vllm` (tests/fakes/vllm) that records every call, and a `gpu`-marked test runs it for real
where vLLM is installed.

How a request maps onto vLLM:

- Every completion is its own vLLM request: a token-id prompt (`{"prompt_token_ids": ids}`, a
  `TokensPrompt`) with `SamplingParams(n=1, seed=<that completion's seed>)`. Each (prompt, sample)
  then draws from its own seeded stream, whatever else is in the batch, so re-sampling a prompt's
  missing samples after a kill asks vLLM for exactly the streams an uninterrupted run asked for.
  vLLM seeds the stream but does not promise batch-invariant arithmetic
  (https://docs.vllm.ai/en/latest/usage/reproducibility/), so a regenerated sample is drawn from
  the same stream and distribution, not guaranteed to match bit for bit.
- top_k 0 (off) is vLLM's -1; max_new_tokens is max_tokens; stop strings stay in the completion
  (include_stop_str_in_output), as the built-in engine keeps them; text is decoded without special
  tokens, as the built-in engine decodes it. "stop" (EOS or a stop string) and "length" are
  vLLM's finish reasons too.
- Log-probabilities: `logprobs=0` returns the sampled token's only. By default vLLM V1 computes
  them from the raw logits, before temperature (V1 user guide, "Semantic Changes to Logprobs",
  https://docs.vllm.ai/en/v0.10.2/usage/v1_guide.html), so the engine is built with
  `logprobs_mode="processed_logprobs"` (ModelConfig.logprobs_mode, new in 0.10.0; engine
  arguments, https://docs.vllm.ai/en/v0.10.2/configuration/engine_args.html): "the values after
  applying all processors, including temperature and top_k/top_p". With top_p = 1 and top_k = 0
  (the defaults of `r1 grpo`) that is exactly this interface's contract, the log-probability under
  the temperature-scaled distribution; greedy requests (temperature 0) get the untempered
  log-softmax, as the built-in engine gives. With top_p < 1 or top_k > 0, vLLM's value is under
  the truncated, renormalised distribution: log p_T(token) - log(mass kept), larger than the
  built-in engine's by -log(mass kept) at that step. vLLM documents no mode that returns the
  temperature-scaled, untruncated value, so there the two engines' log-probabilities differ.
- Weights: see `refresh_weights`.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from r1cli.engines.base import Completion, EngineSettings, SamplingOptions, engine
from r1cli.engines.sampling import request_seeds
from r1cli.errors import UserError
from r1cli.modeling import DTYPES

# r1 is installed from its checkout, whose Makefile pins a vLLM release and the torch it needs.
INSTALL_HINT = "make install-vllm in r1's checkout (vLLM 0.32.0 with its torch 2.13.0), or pip install vllm==0.32.0"
MINIMUM_VERSION = (0, 10)  # logprobs_mode and the RLHF weight-reload path arrived in vLLM 0.10.0
FINISH_REASONS = {"stop": "stop", "length": "length"}
# Weights travel to vLLM's worker in safetensors shards of about this size: bounded host memory
# and message size, whatever the model's.
WEIGHT_SHARD_BYTES = 1 << 30
LOAD_WEIGHTS_RPC = "r1_load_weights"


def vllm_dtype(name: str) -> str:
    """vLLM's name for r1's --dtype. `auto` is r1's meaning, bf16 on a GPU (vLLM runs on one), not
    vLLM's own `auto`, which would run an fp32 checkpoint in fp16."""
    if name == "auto":
        return "bfloat16"
    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not one of: auto, {', '.join(DTYPES)}")
    return str(DTYPES[name]).removeprefix("torch.")


class WeightLoaderExtension:
    """Mixed into vLLM's worker class (`LLM(worker_extension_cls=...)`), so that `refresh_weights`
    can reach the worker's model through `LLM.collective_rpc`. Methods run in the worker, where
    `self` is vLLM's worker and `self.model_runner.model` the model vLLM generates with."""

    def r1_load_weights(self, shard: bytes) -> int:
        """Load one safetensors shard of Hugging Face-named weights; the number of tensors."""
        from safetensors.torch import load

        weights = load(shard)
        self.model_runner.model.load_weights(weights=[(name, tensor.to(self.device)) for name, tensor in weights.items()])
        return len(weights)


@engine("vllm")
class VLLMEngine:
    """Generation with vLLM; `refresh_weights` copies a training model's weights into it."""

    @classmethod
    def load(cls, model: str, settings: EngineSettings):
        from r1cli.modeling import load_tokenizer

        return cls(model, dtype=settings.dtype, seed=settings.seed), load_tokenizer(model)

    @classmethod
    def for_policy(cls, network, tokenizer, model: str, settings: EngineSettings):
        """Its own copy of the weights, in vLLM's memory: loaded from MODEL, then the policy's."""
        generator = cls(model, dtype=settings.dtype, seed=settings.seed)
        generator.refresh_weights(network)
        return generator

    def __init__(self, model: str, *, dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.9, **llm_options):
        """MODEL is a checkpoint directory or hub name; LLM_OPTIONS go to `vllm.LLM` as they are
        (e.g. max_model_len, enforce_eager, tensor_parallel_size)."""
        try:
            import vllm
        except ImportError:
            raise UserError(f"--engine vllm needs vLLM, which is not installed: {INSTALL_HINT}") from None
        version = getattr(vllm, "__version__", "")
        found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
        if found and found < MINIMUM_VERSION:
            raise UserError(f"--engine vllm needs vLLM >= {'.'.join(map(str, MINIMUM_VERSION))} (found {version}): {INSTALL_HINT}")
        self.dtype = vllm_dtype(dtype)
        self.llm = vllm.LLM(
            model=model,
            dtype=self.dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",  # temperature-scaled log-probabilities (module docstring)
            worker_extension_cls=f"{WeightLoaderExtension.__module__}.{WeightLoaderExtension.__qualname__}",
            **llm_options,
        )

    def generate(self, prompts: list[str], options: SamplingOptions, n: int = 1, seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """Completions for each prompt text, in prompt order (see generate_ids). Texts are tokenized
        as the built-in engine tokenizes them: no special tokens added (the template has them)."""
        tokenizer = self._llm().get_tokenizer()
        return self.generate_ids([tokenizer.encode(p, add_special_tokens=False) for p in prompts], options, n, seeds)

    def generate_ids(self, prompts: list[list[int]], options: SamplingOptions, n: int = 1, seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """Completions for each tokenized prompt, in prompt order: one per seed in SEEDS[i]
        (default: N, seeded from options.seed, the prompt's index and the sample's)."""
        from vllm import SamplingParams

        llm = self._llm()
        seeds = request_seeds(len(prompts), n, options.seed) if seeds is None else seeds
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seed lists for {len(prompts)} prompts")
        requests = [(index, seed) for index, prompt_seeds in enumerate(seeds) for seed in prompt_seeds]
        results: list[list[Completion]] = [[] for _ in prompts]
        if not requests:
            return results
        params = [
            SamplingParams(
                n=1,
                seed=seed,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k if options.top_k > 0 else -1,
                max_tokens=options.max_new_tokens,
                stop=list(options.stop) or None,
                include_stop_str_in_output=True,
                logprobs=0,  # the sampled token's log-probability only
                detokenize=True,
                skip_special_tokens=True,
            )
            for _, seed in requests
        ]
        outputs = llm.generate([{"prompt_token_ids": list(prompts[index])} for index, _ in requests], params, use_tqdm=False)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM answered {len(outputs)} of {len(requests)} requests")
        for (index, _), request in zip(requests, outputs):
            results[index].append(_completion(request.outputs[0]))
        return results

    @torch.no_grad()
    def refresh_weights(self, model) -> None:
        """Make vLLM generate with MODEL's current weights (a transformers causal LM, or a peft
        model, whose adapters are merged for the copy and unmerged after).

        vLLM's documented path for RLHF weight sync (https://docs.vllm.ai/en/v0.10.2/training/rlhf.html
        and its examples rlhf.py / rlhf_utils.py): a worker extension class, named by the
        `worker_extension_cls` engine argument, whose method `LLM.collective_rpc` runs in every
        worker and calls `self.model_runner.model.load_weights(weights=[(name, tensor), ...])` with
        Hugging Face checkpoint names. `collective_rpc` is documented for control messages, and its
        arguments cross to vLLM's engine process serialised, so tensors travel as safetensors
        bytes (one host copy per refresh) in shards of WEIGHT_SHARD_BYTES, in the engine's dtype.
        The prefix cache is reset after: its KV blocks were computed with the old weights.
        """
        llm = self._llm()
        from safetensors.torch import save

        target = getattr(torch, self.dtype)
        with _checkpoint_named_weights(model) as named:
            for shard in _shards(named, target, WEIGHT_SHARD_BYTES):
                llm.collective_rpc(LOAD_WEIGHTS_RPC, args=(save(shard),))
        llm.reset_prefix_cache()

    def close(self) -> None:
        """Free vLLM: dropping the LLM shuts its engine process down, which frees its GPU memory."""
        if getattr(self, "llm", None) is None:
            return
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # where vLLM ran in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)

    def _llm(self):
        if self.llm is None:
            raise RuntimeError("this vLLM engine is closed")
        return self.llm


def _completion(output) -> Completion:
    ids = list(output.token_ids)
    steps = output.logprobs
    if steps is None or len(steps) != len(ids):
        raise RuntimeError(f"vLLM returned {0 if steps is None else len(steps)} log-probabilities for {len(ids)} tokens")
    reason = FINISH_REASONS.get(output.finish_reason)
    if reason is None:
        raise RuntimeError(f"vLLM ended a completion with finish_reason {output.finish_reason!r}")
    return Completion(output.text, ids, [float(step[token].logprob) for step, token in zip(steps, ids)], reason)


@contextmanager
def _checkpoint_named_weights(model) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """MODEL's weights under the names of its Hugging Face checkpoint, which vLLM's load_weights
    reads. A peft model's adapters are merged into its base weights for the duration."""
    if not hasattr(model, "merge_adapter"):
        yield list(model.named_parameters())
        return
    model.merge_adapter()
    try:
        base = model.get_base_model()
        yield [(name.replace(".base_layer.", "."), weight) for name, weight in base.named_parameters() if ".lora_" not in name]
    finally:
        model.unmerge_adapter()


def _shards(named: list[tuple[str, torch.Tensor]], dtype: torch.dtype, limit: int) -> Iterator[dict[str, torch.Tensor]]:
    """Contiguous CPU copies of the weights in DTYPE, grouped into shards of about LIMIT bytes."""
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for name, weight in named:
        tensor = weight.detach().to(device="cpu", dtype=dtype).contiguous()
        if shard and size + tensor.nbytes > limit:
            yield shard
            shard, size = {}, 0
        shard[name] = tensor
        size += tensor.nbytes
    if shard:
        yield shard
