"""What every engine does the same way with tokens: the end-of-sequence ids, stop strings, the text.

Shared so that `hf` and `fast` stop at the same token and return the same text for the same ids.
"""

from __future__ import annotations

STOP_WINDOW = 16  # tokens decoded to look for a stop string that the newest token completed


def eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def ends_in_stop(tokenizer, ids: list[int], stops: tuple[str, ...]) -> bool:
    """Whether the last STOP_WINDOW tokens of IDS decode to text holding a stop string."""
    tail = tokenizer.decode(ids[-STOP_WINDOW:])
    return any(stop in tail for stop in stops)


def completion_text(tokenizer, ids: list[int], stops: tuple[str, ...]) -> str:
    """The completion's text, cut after the first stop string (kept: a closing tag the format
    rewards look for), special tokens left out."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    for stop in stops:
        cut = text.find(stop)
        if cut >= 0:
            text = text[: cut + len(stop)]
    return text
