"""`--reward rm:PATH`: the score of a sequence-classification reward model (its first logit)."""

from __future__ import annotations

import torch

from r1cli.errors import UserError
from r1cli.modeling import resolve_device


class RewardModel:
    """Scores (prompt, completion) pairs, rendered with the reward model's chat template."""

    def __init__(self, path: str, batch_size: int = 16, device: str = "auto"):
        from transformers import AutoModelForSequenceClassification

        from r1cli.modeling import load_tokenizer

        self.tokenizer = load_tokenizer(path)
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(resolve_device(device)).eval()
        except (OSError, ValueError) as error:
            raise UserError(f"--reward rm:{path}: cannot load a sequence-classification model ({error})") from None
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size

    def __call__(self, record: dict) -> float:
        return self.score_batch([record])[0]

    def text(self, record: dict) -> str:
        prompt = record.get("prompt", "")
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        messages = [*messages, {"role": "assistant", "content": record.get("completion", "")}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(m["content"] for m in messages)

    @torch.no_grad()
    def score_batch(self, records: list[dict]) -> list[float]:
        scores: list[float] = []
        self.tokenizer.padding_side = "right"
        for start in range(0, len(records), self.batch_size):
            texts = [self.text(r) for r in records[start : start + self.batch_size]]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            scores += self.model(**inputs).logits[:, 0].float().tolist()
        return scores
