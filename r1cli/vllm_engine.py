"""`--engine vllm`: the generation request handed to vLLM's offline API.

Written to vLLM's documented `LLM` / `SamplingParams` interface and imported only when chosen.
It is not exercised by r1's CI or GPU checks, where vLLM is not installed; its tests skip there.
"""

from __future__ import annotations

from r1cli.errors import UserError
from r1cli.generation import Completion, SamplingOptions


class VLLMEngine:
    def __init__(self, model: str, *, dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.9):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("--engine vllm needs vLLM, which is not installed: pip install 'r1cli[vllm]'") from None
        self.llm = LLM(model=model, dtype={"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype),
                       seed=seed, gpu_memory_utilization=gpu_memory_utilization)

    def generate(self, prompts: list[str], options: SamplingOptions, n: int = 1) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=n,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k if options.top_k > 0 else -1,
            max_tokens=options.max_new_tokens,
            seed=options.seed,
            stop=list(options.stop) or None,
            include_stop_str_in_output=True,
            logprobs=0,  # the sampled token's log-probability only
        )
        results = []
        for request in self.llm.generate(prompts, params, use_tqdm=False):
            completions = []
            for output in request.outputs:
                ids = list(output.token_ids)
                logprobs = [step[token].logprob for step, token in zip(output.logprobs or [], ids)]
                completions.append(Completion(output.text, ids, logprobs, "length" if output.finish_reason == "length" else "stop"))
            results.append(completions)
        return results
