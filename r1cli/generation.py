"""Generation: prompts to sampled completions, with the log-probability of every sampled token.

The built-in engine is written by hand rather than through `model.generate`: it is the rollout
engine of `r1 grpo`, it must return the sampling log-probabilities GRPO needs, and it is the
piece later made fast. `--engine vllm` hands the same request to vLLM where it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from r1cli.errors import UserError
from r1cli.seeding import derive_seed

TEMPLATES = ("chat", "r1-zero")
ENGINES = ("hf", "vllm")

# The R1 paper's template for training a base model (its Table 1).
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant:"
)


@dataclass
class SamplingOptions:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: list[float] = field(repr=False)
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


def format_prompt(prompt: str | list[dict], tokenizer, template: str, system: str | None = None) -> str:
    """The text the model continues: the chat template with a generation prompt, or R1-Zero's."""
    if template == "r1-zero":
        if not isinstance(prompt, str):
            prompt = "\n".join(m["content"] for m in prompt if m["role"] != "system")
        return R1_ZERO_TEMPLATE.format(prompt=prompt)
    if template != "chat":
        raise UserError(f"--template {template!r} is not one of: {', '.join(TEMPLATES)}")
    if not tokenizer.chat_template:
        raise UserError("--template chat: the tokenizer has no chat template (use --template r1-zero)")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of int64 values in [0, 2^32).

    The multipliers are below 2^31, so every product stays below 2^63: plain int64 arithmetic,
    the same on every device, with no overflow.
    """
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def keyed_uniform(keys_B: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """Uniform noise in (0, 1), [B, V], a pure function of (each row's key, step, token id).

    Counter-based rather than a generator's stream: a completion's draws depend on its own
    seed only, never on which other completions share its batch, so sampling a prompt's
    missing samples after a kill reproduces exactly what an uninterrupted run would have drawn.
    """
    low, high = keys_B & MASK32, (keys_B >> 32) & MASK32
    row_B = _mix32(low ^ _mix32(high ^ _mix32(torch.full_like(keys_B, step & MASK32))))
    token_V = _mix32(torch.arange(vocab_size, device=keys_B.device, dtype=torch.int64) * 0x9E3779B1 & MASK32)
    bits_BV = _mix32(row_B[:, None] ^ token_V[None, :])
    return ((bits_BV >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask all but the top-k tokens and the smallest set whose probability reaches top-p."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # keep a token if the mass before it is below top_p (so the first token is always kept)
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def cache_argument(model) -> str:
    """The name of the KV cache in the model's forward and output: `cache` in newer transformers,
    `past_key_values` before (both are supported: the GPU image pins an older release)."""
    import inspect

    forward = getattr(model, "get_base_model", lambda: model)().forward
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def request_seeds(n_prompts: int, n: int, seed: int) -> list[list[int]]:
    """The default seed of completion K of prompt I in a request seeded with SEED."""
    return [[derive_seed(seed, "request", index, k) for k in range(n)] for index in range(n_prompts)]


def sample_tokens(logits_BV: torch.Tensor, options: SamplingOptions, keys_B: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A token per row, and its log-probability under the temperature-scaled distribution.

    Sampling is argmax(p / E) with E ~ Exponential(1) drawn from `keyed_uniform`, which is an
    exact draw from p (the exponential race) that needs no generator state.
    """
    if options.temperature <= 0:
        token = logits_BV.argmax(-1)
        return token, logits_BV.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
    scaled = logits_BV / options.temperature
    logprobs = scaled.log_softmax(-1)
    kept = filter_logits(scaled, options.top_k, options.top_p).log_softmax(-1)
    exponential = -torch.log(keyed_uniform(keys_B, step, logits_BV.shape[-1]))
    token = (kept - torch.log(exponential)).argmax(-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


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

    def refresh_weights(self, model) -> None:
        """Nothing to copy: this engine generates with the training model itself."""
        self.model = model

    def close(self) -> None:
        pass

    def _hit_stop_strings(self, tokens, lengths, finished, stop_reason, stops) -> torch.Tensor:
        hits = torch.zeros_like(finished)
        for row in (~finished).nonzero().flatten().tolist():
            tail = self.tokenizer.decode(tokens[row, max(0, lengths[row] - 16) : lengths[row]].tolist())
            if any(stop in tail for stop in stops):
                hits[row] = True
                stop_reason[row] = "stop"
        return hits

    def _text(self, ids: list[int], stops: tuple[str, ...]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for stop in stops:  # keep the stop string itself (a closing tag the format rewards look for)
            cut = text.find(stop)
            if cut >= 0:
                text = text[: cut + len(stop)]
        return text


def make_engine(engine: str, model: str, *, dtype: str = "auto", device: str = "auto", batch_size: int = 32, seed: int = 0):
    """(engine, tokenizer) for generating from the checkpoint MODEL with ENGINE (one of ENGINES)."""
    from r1cli.modeling import load_model, load_tokenizer, resolve_device, resolve_dtype

    if engine == "vllm":
        from r1cli.vllm_engine import VLLMEngine

        return VLLMEngine(model, dtype=dtype, seed=seed), load_tokenizer(model)
    if engine != "hf":
        raise UserError(f"--engine {engine!r} is not one of: {', '.join(ENGINES)}")
    target = resolve_device(device)
    network, tokenizer = load_model(model, dtype=resolve_dtype(dtype, target))
    return HFEngine(network.to(target), tokenizer, batch_size=batch_size), tokenizer
