"""`hf`: the transformers forward as a generation engine (the reference, and the CPU path).

Written by hand rather than through `model.generate`: it returns the sampling log-probabilities
GRPO needs and samples with the keyed, batch-independent draws of `r1cli.engines.sampling`.
"""

from __future__ import annotations

import torch

from r1cli.engines.base import Completion, EngineSettings, SamplingOptions, engine
from r1cli.engines.sampling import request_seeds, sample_tokens
from r1cli.engines.text import completion_text, ends_in_stop, eos_ids
from r1cli.train.distributed import copy_whole_weights, is_sharded


def cache_argument(model) -> str:
    """The name of the KV cache in the model's forward and output: `cache` in newer transformers,
    `past_key_values` before (both are supported: the GPU image pins an older release)."""
    import inspect

    from r1cli.modeling import hf_base

    forward = hf_base(model).forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


@engine("hf")
class HFEngine:
    """Batched, left-padded, KV-cached sampling with a transformers causal LM."""

    def __init__(self, model, tokenizer, *, batch_size: int = 32):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.eos = eos_ids(model, tokenizer)
        self.cache_argument = cache_argument(model)

    def generate(self, prompts: list[str], options: SamplingOptions, n: int = 1, seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """N completions for each prompt text, in prompt order (see generate_ids)."""
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        return self.generate_ids(encoded, options, n, seeds)

    def generate_ids(self, prompts: list[list[int]], options: SamplingOptions, n: int = 1, seeds: list[list[int]] | None = None) -> list[list[Completion]]:
        """Completions for each tokenized prompt, in prompt order: one per seed in SEEDS[i]
        (default: N, seeded from options.seed, the prompt's index and the sample's)."""
        seeds = request_seeds(len(prompts), n, options.seed) if seeds is None else seeds
        requests = [(index, seed) for index, prompt_seeds in enumerate(seeds) for seed in prompt_seeds]
        results: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            keys_B = torch.tensor([seed for _, seed in chunk], dtype=torch.int64, device=self.device)
            for (index, _), completion in zip(chunk, self._generate_batch([prompts[i] for i, _ in chunk], options, keys_B)):
                results[index].append(completion)
        return results

    @torch.no_grad()
    def _generate_batch(self, encoded: list[list[int]], options: SamplingOptions, keys_B: torch.Tensor) -> list[Completion]:
        self.model.eval()
        width = max(len(ids) for ids in encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in encoded], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=self.device)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        batch = len(encoded)
        new_tokens = torch.full((batch, options.max_new_tokens), pad, device=self.device)
        new_logprobs = torch.zeros((batch, options.max_new_tokens), device=self.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=self.device)
        eos = torch.tensor(sorted(self.eos), device=self.device)
        stop_reason = ["length"] * batch
        cache = None
        step_ids, step_positions = input_ids, positions
        for step in range(options.max_new_tokens):
            output = self.model(
                input_ids=step_ids, attention_mask=attention_mask, position_ids=step_positions,
                use_cache=True, **{self.cache_argument: cache},
            )
            cache = getattr(output, self.cache_argument)
            logits = output.logits[:, -1, :].float()
            token, logprob = sample_tokens(logits, options, keys_B, step)
            token = torch.where(finished, torch.full_like(token, pad), token)
            new_tokens[:, step] = token
            new_logprobs[:, step] = logprob
            lengths += (~finished).long()
            hit_eos = torch.isin(token, eos) & ~finished
            for row in hit_eos.nonzero().flatten().tolist():
                stop_reason[row] = "stop"
            finished |= hit_eos
            if options.stop:
                finished |= self._hit_stop_strings(new_tokens, lengths, finished, stop_reason, options.stop)
            if finished.all():
                break
            step_ids = token[:, None]
            step_positions = step_positions[:, -1:] + 1
            attention_mask = torch.cat([attention_mask, torch.ones((batch, 1), dtype=attention_mask.dtype, device=self.device)], dim=1)
        completions = []
        for row in range(batch):
            ids = new_tokens[row, : lengths[row]].tolist()
            completions.append(
                Completion(
                    text=self._text(ids, options.stop),
                    token_ids=ids,
                    logprobs=new_logprobs[row, : lengths[row]].tolist(),
                    finish_reason=stop_reason[row],
                )
            )
        return completions

    @classmethod
    def load(cls, model: str, settings: EngineSettings):
        from r1cli.modeling import load_model, resolve_device, resolve_dtype

        device = resolve_device(settings.device)
        network, tokenizer = load_model(model, dtype=resolve_dtype(settings.dtype, device))
        return cls(network.to(device), tokenizer, batch_size=settings.batch_size), tokenizer

    @classmethod
    def for_policy(cls, network, tokenizer, model: str, settings: EngineSettings):
        """Generates with the training model itself: nothing to copy after an update. A model
        sharded over processes (torchrun) gets a whole copy instead, loaded from MODEL and then
        given the policy's weights: a sharded forward is a collective, and each rank generates
        completions of lengths of its own."""
        if not is_sharded(network):
            return cls(network, tokenizer, batch_size=settings.batch_size)
        from r1cli.modeling import load_model

        source = next(network.parameters())  # the fp32 masters, as one process generates with them
        copy = load_model(model, dtype=source.dtype)[0].to(source.device).requires_grad_(False)
        engine = cls(copy, tokenizer, batch_size=settings.batch_size)
        engine.refresh_weights(network)
        return engine

    def refresh_weights(self, model) -> None:
        """Nothing to copy: this engine generates with the training model itself (a sharded one's
        weights are gathered into the engine's whole copy, every rank alike)."""
        if is_sharded(model):
            copy_whole_weights(model, self.model)
        else:
            self.model = model

    def close(self) -> None:
        pass

    def _hit_stop_strings(self, tokens, lengths, finished, stop_reason, stops) -> torch.Tensor:
        hits = torch.zeros_like(finished)
        for row in (~finished).nonzero().flatten().tolist():
            if ends_in_stop(self.tokenizer, tokens[row, : lengths[row]].tolist(), stops):
                hits[row] = True
                stop_reason[row] = "stop"
        return hits

    def _text(self, ids: list[int], stops: tuple[str, ...]) -> str:
        return completion_text(self.tokenizer, ids, stops)
