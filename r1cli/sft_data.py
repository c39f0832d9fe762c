"""Training records to token rows: chat formatting, label masks, truncation, packing, batches.

Labels are aligned with `input_ids` (the model predicts `labels[i]` from the tokens before i);
IGNORE marks tokens without loss. The first token of every example is IGNORE, so that when
examples are packed into one row no example is trained to predict across the boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from r1cli.errors import UserError
from r1cli.records import Record, training_kind

IGNORE = -100
TEMPLATES = ("auto", "chat", "plain")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False


@dataclass
class Row:
    """One row of a batch: one example, or several packed with positions restarting per example."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int] | None = None

    @property
    def label_count(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


# ---------------------------------------------------------------- encoding


def resolve_template(template: str, tokenizer) -> str:
    if template not in TEMPLATES:
        raise UserError(f"--template {template!r} is not one of: {', '.join(TEMPLATES)}")
    if template == "auto":
        return "chat" if tokenizer.chat_template else "plain"
    if template == "chat" and not tokenizer.chat_template:
        raise UserError("--template chat: the tokenizer has no chat template (use --template plain)")
    return template


def encode_records(records: list[Record], tokenizer, *, template: str, max_length: int) -> list[Example]:
    """Encode training records in order; `text` records are tokenized in one batch for speed."""
    kinds = [training_kind(record) for record in records]
    texts = [record["text"] for record, kind in zip(records, kinds) if kind == "text"]
    text_ids = iter(tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else [])
    examples = []
    for record, kind in zip(records, kinds):
        if kind == "text":
            ids = _with_eos(list(next(text_ids)), tokenizer)
            example = Example(ids, list(ids))
        elif kind == "messages":
            example = _encode_chat(record, record["messages"], tokenizer, template)
        else:
            example = _encode_prompt_completion(record, tokenizer, template)
        examples.append(_truncate(example, max_length))
    return examples


def _encode_prompt_completion(record: Record, tokenizer, template: str) -> Example:
    prompt, completion = record["prompt"], record["completion"]
    if template == "chat":
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return _encode_chat(record, [*turns, {"role": "assistant", "content": completion}], tokenizer, template)
    if isinstance(prompt, list):
        raise UserError(f"{record.where}: a chat-message prompt needs --template chat")
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = _with_eos(tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer)
    return Example(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids)


def _encode_chat(record: Record, messages: list[dict], tokenizer, template: str) -> Example:
    """Tokens of the rendered conversation, with labels on each assistant turn only.

    An assistant turn's tokens are found by rendering the conversation up to it (with the
    generation prompt) and through it: the tokens in between are the turn, end-of-turn included.
    """
    if template != "chat":
        raise UserError(f"{record.where}: 'messages' records need a chat template (--template chat)")
    full_ids = _render(messages, tokenizer, generation_prompt=False)
    labels = [IGNORE] * len(full_ids)
    last_end = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(messages[:index], tokenizer, generation_prompt=True))
        through = _render(messages[: index + 1], tokenizer, generation_prompt=False)
        if full_ids[: len(through)] != through or start > len(through):
            raise UserError(
                f"{record.where}: the tokenizer's chat template does not render this conversation "
                "incrementally, so its assistant tokens cannot be located"
            )
        labels[start : len(through)] = through[start:]
        last_end = len(through)
    if tokenizer.eos_token_id not in labels[:last_end]:
        full_ids.insert(last_end, tokenizer.eos_token_id)
        labels.insert(last_end, tokenizer.eos_token_id)
    return Example(full_ids, labels)


def _render(messages: list[dict], tokenizer, *, generation_prompt: bool) -> list[int]:
    if not messages:  # an assistant turn that opens the conversation: nothing precedes it
        return []
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _with_eos(ids: list[int], tokenizer) -> list[int]:
    return ids if ids and ids[-1] == tokenizer.eos_token_id else [*ids, tokenizer.eos_token_id]


def _truncate(example: Example, max_length: int) -> Example:
    example.labels[0] = IGNORE
    if len(example.input_ids) <= max_length:
        return example
    return Example(example.input_ids[:max_length], example.labels[:max_length], truncated=True)


# ---------------------------------------------------------------- rows and batches


def to_rows(examples: list[Example], *, max_length: int, packing: bool) -> list[Row]:
    """One row per example, or (packing) examples laid end to end in rows of at most MAX_LENGTH.

    Packing is greedy in the given order; positions restart at each example, which the model
    reads as separate sequences (no attention across them).
    """
    examples = [e for e in examples if any(label != IGNORE for label in e.labels)]
    if not packing:
        return [Row(e.input_ids, e.labels) for e in examples]
    rows: list[Row] = []
    current = Row([], [], [])
    for example in examples:
        if current.input_ids and len(current.input_ids) + len(example.input_ids) > max_length:
            rows.append(current)
            current = Row([], [], [])
        current.input_ids += example.input_ids
        current.labels += example.labels
        current.position_ids += list(range(len(example.input_ids)))
    if current.input_ids:
        rows.append(current)
    return rows


def collate(rows: list[Row], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-pad ROWS into tensors. Packed rows carry `position_ids` and no attention mask."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    position_ids = torch.arange(width).repeat(len(rows), 1)
    for i, row in enumerate(rows):
        length = len(row.input_ids)
        input_ids[i, :length] = torch.tensor(row.input_ids)
        labels[i, :length] = torch.tensor(row.labels)
        attention_mask[i, :length] = 1
        if row.position_ids is not None:
            # Padding continues as a segment of its own, so real tokens never attend to it.
            position_ids[i, :length] = torch.tensor(row.position_ids)
            position_ids[i, length:] = torch.arange(width - length)
    batch = {"input_ids": input_ids, "labels": labels}
    if rows[0].position_ids is not None:
        batch["position_ids"] = position_ids
    else:
        batch["attention_mask"] = attention_mask
    return {name: tensor.to(device) for name, tensor in batch.items()}


@dataclass
class StepPlan:
    """Which rows each optimizer step trains on, as a pure function of the step number.

    Each epoch is a fresh seeded permutation of the rows; a step takes BATCH_SIZE x GRAD_ACCUM
    rows of it (the last step of an epoch takes what is left). Resuming at step s therefore
    needs nothing but s.
    """

    n_rows: int
    batch_size: int
    grad_accum: int
    seed: int

    @property
    def rows_per_step(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.rows_per_step)

    def total_steps(self, epochs: float, max_steps: int | None) -> int:
        if max_steps is not None:
            return max_steps
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def micro_batches(self, step: int) -> list[list[int]]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n_rows, generator=generator).tolist()
        chosen = order[offset * self.rows_per_step : (offset + 1) * self.rows_per_step]
        return [chosen[i : i + self.batch_size] for i in range(0, len(chosen), self.batch_size)]
