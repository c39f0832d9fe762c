"""Generation: prompts to sampled completions, with the log-probability of every sampled token.

The built-in engine is written by hand rather than through `model.generate`: it is the rollout
engine of `r1 grpo`, it must return the sampling log-probabilities GRPO needs, and it is the
piece later made fast. `--engine vllm` hands the same request to vLLM where it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from r1cli.errors import UserError

TEMPLATES = ("chat", "r1-zero")

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


class HFEngine:
    """Batched, left-padded, KV-cached sampling with a transformers causal LM."""

    def __init__(self, model, tokenizer, *, batch_size: int = 32):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.eos = eos_ids(model, tokenizer)

    def generate(self, prompts: list[str], options: SamplingOptions, n: int = 1) -> list[list[Completion]]:
        """N completions for each prompt text, in prompt order."""
        return self.generate_ids([self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts], options, n)

    def generate_ids(self, prompts: list[list[int]], options: SamplingOptions, n: int = 1) -> list[list[Completion]]:
        """N completions for each tokenized prompt, in prompt order."""
        requests = [index for index in range(len(prompts)) for _ in range(n)]
        generator = torch.Generator(device=self.device).manual_seed(options.seed)
        results: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            for index, completion in zip(chunk, self._generate_batch([prompts[i] for i in chunk], options, generator)):
                results[index].append(completion)
        return results

    @torch.no_grad()
    def _generate_batch(self, encoded: list[list[int]], options: SamplingOptions, generator) -> list[Completion]:
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
                past_key_values=cache, use_cache=True,
            )
            cache = output.past_key_values
            logits = output.logits[:, -1, :].float()
            token, logprob = self._sample(logits, options, generator)
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

    def _sample(self, logits: torch.Tensor, options: SamplingOptions, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A token per row, and its log-probability under the temperature-scaled distribution."""
        if options.temperature <= 0:
            token = logits.argmax(-1)
            return token, logits.log_softmax(-1).gather(-1, token[:, None]).squeeze(-1)
        scaled = logits / options.temperature
        logprobs = scaled.log_softmax(-1)
        probs = filter_logits(scaled, options.top_k, options.top_p).softmax(-1)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return token, logprobs.gather(-1, token[:, None]).squeeze(-1)

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
