"""The teacher of `r1 distill --kd-weight`: its next-token distributions on the student's batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1cli.errors import UserError
from r1cli.modeling import load_model, load_tokenizer
from r1cli.train.logprobs import OutputHead, decoder_hidden, output_head, teacher_kl_sum


def check_shared_tokenizer(teacher: str, student: str) -> None:
    """Fail before any work when TEACHER and STUDENT cannot share a token-level KL."""
    require_same_vocabulary(load_tokenizer(teacher), load_tokenizer(student), teacher, student)


def require_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher: str, student: str) -> None:
    """Token-level KL compares distributions token by token, so both must index the same vocabulary."""
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab != student_vocab:
        differ = len(set(teacher_vocab.items()) ^ set(student_vocab.items()))
        raise UserError(
            f"--kd-weight needs TEACHER and STUDENT to share a tokenizer: {teacher} has {len(teacher_vocab)} tokens, "
            f"{student} has {len(student_vocab)} ({differ} entries differ); distil without --kd-weight"
        )


class Teacher:
    def __init__(self, path: str, weight: float):
        self.path, self.weight = path, weight
        self.network = None
        self.vocab_size = 0

    def prepare(self, student_tokenizer, student_path: str, device: torch.device, dtype: torch.dtype) -> None:
        network, teacher_tokenizer = load_model(self.path, dtype=dtype)
        require_same_vocabulary(teacher_tokenizer, student_tokenizer, self.path, student_path)
        self.network = network.to(device).eval().requires_grad_(False)
        self.vocab_size = len(student_tokenizer)

    @property
    def head(self) -> OutputHead | None:
        return output_head(self.network)

    def kl_sum(self, student_hidden_NH: torch.Tensor, student_head: OutputHead, inputs: dict, scored_BL: torch.Tensor) -> torch.Tensor:
        """KL(teacher || student) summed over the positions in SCORED_BL, from both models' final
        hidden states at those positions (the student's given) through their heads in chunks. Only
        the tokenizer's vocabulary counts: embedding rows past it are padding, which the two models
        may size differently."""
        with torch.no_grad():
            teacher_hidden_NH = decoder_hidden(self.network, inputs)[scored_BL]
        return teacher_kl_sum(student_hidden_NH, student_head, teacher_hidden_NH, self.head, self.vocab_size)

    def kl_sum_from_logits(self, student_logits: torch.Tensor, inputs: dict, scored_BL: torch.Tensor) -> torch.Tensor:
        """The same from the student's logits at the scored positions [N, V] and the teacher's full
        logits, for an architecture whose head is not a plain projection."""
        with torch.no_grad():
            teacher_logits = self.network(**inputs, use_cache=False).logits[scored_BL]
        student_log_probs = student_logits[:, : self.vocab_size].float().log_softmax(-1)
        teacher_log_probs = teacher_logits[:, : self.vocab_size].float().log_softmax(-1)
        return F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="sum")
