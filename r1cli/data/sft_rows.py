"""Training records to token rows: chat formatting, label masks, truncation, packing, batches.

Labels are aligned with `input_ids` (the model predicts `labels[i]` from the tokens before i);
IGNORE marks tokens without loss. The first token of every example is IGNORE, so that when
examples are packed into one row no example is trained to predict across the boundary.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from r1cli.data.records import Record, training_kind
from r1cli.data.templates import R1_ZERO_TEMPLATE
from r1cli.errors import UserError
from r1cli.seeding import torch_generator

IGNORE = -100


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


def trained_text(record: Record) -> str:
    """The text a training record trains on: its assistant turns, its completion, or its text."""
    kind = training_kind(record)
    if kind == "text":
        return record["text"]
    turns = record["messages"] if kind == "messages" else record["completion"]
    if isinstance(turns, str):
        return turns
    return "\n".join(m["content"] for m in turns if m["role"] == "assistant")


def encode_records(
    records: list[Record], tokenizer, *, template: str, max_length: int, stop_ids: Iterable[int] = ()
) -> list[Example]:
    """Encode training records in order; `text` records are tokenized in one batch for speed.

    A conversation gives one example, or one per assistant turn where its template does not
    render it incrementally (see `_encode_chat`), so there can be more examples than records.
    STOP_IDS are token ids, besides the tokenizer's EOS, that end an assistant turn.
    """
    kinds = [training_kind(record) for record in records]
    texts = [record["text"] for record, kind in zip(records, kinds) if kind == "text"]
    text_ids = iter(tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else [])
    stops = frozenset({tokenizer.eos_token_id, *stop_ids})
    examples = []
    for record, kind in zip(records, kinds):
        if kind == "text":
            ids = _with_eos(list(next(text_ids)), tokenizer)
            encoded = [Example(ids, list(ids))]
        elif kind == "messages":
            encoded = _encode_chat(record, record["messages"], tokenizer, template, stops)
        else:
            encoded = _encode_prompt_completion(record, tokenizer, template, stops)
        examples.extend(_truncate(example, max_length) for example in encoded)
    return examples


def _encode_prompt_completion(
    record: Record, tokenizer, template: str, stops: frozenset[int]
) -> list[Example]:
    prompt, completion = record["prompt"], record["completion"]
    if template == "chat":
        # The loss is on the completion's assistant turns only: an assistant turn in the prompt is context.
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": completion}]
        return _encode_chat(record, [*turns, *reply], tokenizer, template, stops, trained_from=len(turns))
    if isinstance(prompt, list):
        raise UserError(f"{record.where}: a chat-message prompt needs --template chat")
    if isinstance(completion, list):
        raise UserError(f"{record.where}: a chat-message completion needs --template chat")
    if template == "r1-zero":  # the R1 paper's base-model template around the prompt, as `grpo --template r1-zero` writes it
        prompt = R1_ZERO_TEMPLATE.format(prompt=prompt)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    completion_ids = _with_eos(tokenizer(completion, add_special_tokens=False)["input_ids"], tokenizer)
    return [Example(prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids)]


# ---------------------------------------------------------------- chat: what the model generates

# Stands in for an assistant turn's content when a template is probed for what it writes around it.
CONTENT_PROBE = "R1CLI_ASSISTANT_CONTENT_PROBE"


@dataclass
class AssistantTurn:
    """One assistant turn as the model meets it at inference.

    `context` is the template's rendering of the conversation before the turn, generation prompt
    included; `target` is what the model should write after it: the turn's content as given (less
    any start of it the generation prompt already wrote) and the template's end of turn.
    """

    context: list[int]
    target: list[int]


@dataclass
class TurnFrame:
    """What a chat template writes around an assistant turn's content, found by rendering a probe.

    `generation_prompt` is the template's rendering of the conversation before the turn with the
    generation prompt (for a turn that opens the conversation, which cannot be rendered empty, the
    template's own lead-in to the turn); `forced_prefix` is the part of it that starts the reply
    (DeepSeek-R1-Distill ends its prompt with "<think>\\n", which the model continues after);
    `terminator` is the token ids the template writes right after the content, through the first
    stop token (or, for a template that writes none, what it writes there and then EOS).
    """

    generation_prompt: str
    forced_prefix: str
    terminator: list[int]


def _encode_chat(
    record: Record, messages: list[dict], tokenizer, template: str, stops: frozenset[int], trained_from: int = 0
) -> list[Example]:
    """Examples of a conversation whose loss covers exactly what the model generates in each
    assistant turn (from message TRAINED_FROM on): its content as given, think block included,
    and the end of turn.

    Templates that render a conversation incrementally (each assistant turn's context is the
    previous turn's context and target, then the messages in between, token for token) give one
    example labelled on every assistant turn. Templates that rewrite earlier turns (those of
    DeepSeek-R1-Distill and Qwen3 drop the reasoning of assistant turns in the history) give one
    example per assistant turn, each with the context its template shows the model at inference.
    An example ends with the last token it trains: messages after it add no loss.
    """
    if template != "chat":
        raise UserError(f"{record.where}: 'messages' records need a chat template (--template chat)")
    turns = [
        _assistant_turn(record, messages, index, tokenizer, stops)
        for index, message in enumerate(messages)
        if message["role"] == "assistant" and index >= trained_from
    ]
    if all(_extends(later.context, earlier.context + earlier.target) for earlier, later in zip(turns, turns[1:])):
        return [_labelled_example(turns)]
    return [_labelled_example([turn]) for turn in turns]


def _assistant_turn(
    record: Record, messages: list[dict], index: int, tokenizer, stops: frozenset[int]
) -> AssistantTurn:
    frame = _turn_frame(record, messages, index, tokenizer, stops)
    content = messages[index]["content"]
    if not content.startswith(frame.forced_prefix):
        raise UserError(
            f"{record.where}: message {index + 1} (assistant) must start with {frame.forced_prefix!r}: the chat "
            f"template's generation prompt already ends with it and the model continues from there "
            f"(the content starts {content[:24]!r})"
        )
    reply = content[len(frame.forced_prefix) :]
    return AssistantTurn(
        context=_tokens(frame.generation_prompt, tokenizer),
        target=_tokens(reply, tokenizer) + frame.terminator,
    )


def _turn_frame(
    record: Record, messages: list[dict], index: int, tokenizer, stops: frozenset[int]
) -> TurnFrame:
    """How the template frames assistant turn INDEX: the conversation before it rendered with the
    generation prompt, compared with the conversation rendered through a probe content there."""
    probe = {**messages[index], "content": CONTENT_PROBE}
    probed = _render_text(record, [*messages[:index], probe], tokenizer, generation_prompt=False)
    if probed.count(CONTENT_PROBE) != 1:
        raise UserError(
            f"{record.where}: the tokenizer's chat template does not write an assistant turn's content "
            "as given, so its tokens cannot be located"
        )
    lead_in, after = probed.split(CONTENT_PROBE)
    prompt = _render_text(record, messages[:index], tokenizer, generation_prompt=True) if index else lead_in
    if prompt.startswith(lead_in):
        forced_prefix = prompt[len(lead_in) :]
    elif lead_in.startswith(prompt):
        # The template writes more before a turn than its generation prompt does (Qwen3's empty
        # think block, for content without one): the model writes that part itself, as content.
        forced_prefix = ""
    else:
        raise UserError(
            f"{record.where}: the tokenizer's chat template renders an assistant turn after a different prefix "
            "than its generation prompt, so the turn's context at inference cannot be known"
        )
    return TurnFrame(prompt, forced_prefix, _terminator(_tokens(after, tokenizer), stops, tokenizer))


def _terminator(after: list[int], stops: frozenset[int], tokenizer) -> list[int]:
    """The end of turn: the tokens after the content through the first stop token, where the model
    stops; a template that writes no stop token there gets EOS appended, so the model learns to stop."""
    for position, token in enumerate(after):
        if token in stops:
            return after[: position + 1]
    return [*after, tokenizer.eos_token_id]


def _extends(ids: list[int], prefix: list[int]) -> bool:
    return ids[: len(prefix)] == prefix


def _labelled_example(turns: list[AssistantTurn]) -> Example:
    """The last turn's context and target, labelled on every turn's target; each earlier turn's
    context and target must be a prefix of the later turns' contexts."""
    last = turns[-1]
    input_ids = last.context + last.target
    labels = [IGNORE] * len(input_ids)
    for turn in turns:
        start = len(turn.context)
        labels[start : start + len(turn.target)] = turn.target
    return Example(input_ids, labels)


def _render_text(record: Record, messages: list[dict], tokenizer, *, generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except TemplateError as error:
        raise UserError(
            f"{record.where}: the tokenizer's chat template cannot render this conversation ({error})"
        ) from None


def _tokens(text: str, tokenizer) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


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
        generator = torch_generator(self.seed, "data-order", epoch)
        order = torch.randperm(self.n_rows, generator=generator).tolist()
        chosen = order[offset * self.rows_per_step : (offset + 1) * self.rows_per_step]
        return [chosen[i : i + self.batch_size] for i in range(0, len(chosen), self.batch_size)]
