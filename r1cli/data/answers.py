"""Reading a completion as DESIGN.md defines it: reasoning / response, and the final answer."""

from __future__ import annotations

import re

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def split_completion(completion: str) -> tuple[str, str]:
    """(reasoning, response). Reasoning is inside <think>…</think>, the response follows it.

    A completion whose <think> never closes is all reasoning and has no response; one with a
    closing tag but no opening one (templates that put <think> in the prompt) reasons up to
    the tag; one with no tags at all is all response.
    """
    if THINK_CLOSE in completion:
        head, response = completion.split(THINK_CLOSE, 1)
        reasoning = head.split(THINK_OPEN, 1)[1] if THINK_OPEN in head else head
        return reasoning.strip(), response.strip()
    if THINK_OPEN in completion:
        return completion.split(THINK_OPEN, 1)[1].strip(), ""
    return "", completion.strip()


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{…} (or \\fbox{…}), braces balanced; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    opening = text.find("{", start)
    if opening < 0:
        return None
    depth = 0
    for position in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[opening + 1 : position]
    return None


def extract_answer(response: str) -> str:
    """The final answer of a response: inside <answer>…</answer>, else the last \\boxed{…}, else
    the response itself."""
    tagged = ANSWER_PATTERN.findall(response)
    if tagged:
        response = tagged[-1].strip()
    boxed = last_boxed(response)
    return boxed.strip() if boxed is not None else response.strip()


def gold_answer(answer) -> str:
    """The gold answer as text: GSM8K's `…#### 1,800` becomes `1800`; numbers become their text."""
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):  # thousands separators, not a tuple
        text = text.replace(",", "")
    return text


def reasoning_and_response(record: dict) -> tuple[str, str]:
    """A sample record's reasoning and response, derived from `completion` when absent."""
    if "reasoning" in record and "response" in record:
        return record["reasoning"] or "", record["response"] or ""
    return split_completion(record.get("completion", ""))
