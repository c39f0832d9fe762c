"""One template registry: how a prompt record becomes the text a model continues.

`auto` is the tokenizer's chat template where it has one, else `plain`; `chat` requires one;
`r1-zero` is the R1 paper's template for base models (its Table 1); `plain` is the prompt as it is.
"""

from __future__ import annotations

from r1cli.errors import UserError

TEMPLATES = ("auto", "chat", "r1-zero", "plain")

# The R1 paper's template for training a base model (its Table 1).
R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {prompt}. Assistant:"
)


def resolve_template(template: str, tokenizer) -> str:
    """The template actually used: `auto` becomes `chat` or `plain`; `chat` needs a chat template."""
    if template not in TEMPLATES:
        raise UserError(f"--template {template!r} is not one of: {', '.join(TEMPLATES)}")
    if template == "auto":
        return "chat" if tokenizer.chat_template else "plain"
    if template == "chat" and not tokenizer.chat_template:
        raise UserError("--template chat: the tokenizer has no chat template (use --template plain or r1-zero)")
    return template


def format_prompt(prompt: str | list[dict], tokenizer, template: str, system: str | None = None) -> str:
    """The text the model continues: the chat template with a generation prompt, R1-Zero's, or the prompt itself."""
    template = resolve_template(template, tokenizer)
    if template in ("r1-zero", "plain"):
        if not isinstance(prompt, str):
            prompt = "\n".join(m["content"] for m in prompt if m["role"] != "system")
        return R1_ZERO_TEMPLATE.format(prompt=prompt) if template == "r1-zero" else prompt
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
