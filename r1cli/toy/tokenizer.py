"""The toy world's tokenizer: a small byte-level BPE trained on the toy corpora, as a real base
model's tokenizer is trained on its own data, with chat and think tags as single tokens.

Whole words and numbers become single tokens, so the tiny toy models spend their few minutes
of training on arithmetic rather than on spelling. The shipped files in assets/tokenizer were
made by `python -m r1cli.toy.tokenizer`; `AutoTokenizer.from_pretrained` loads them as they are.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
TOKENIZER_DIR = ASSETS / "tokenizer"
VOCAB_SIZE = 1024

SPECIAL_TOKENS = ["<pad>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Reasoning tags are ordinary (non-special) tokens: decoding with skip_special_tokens keeps them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def training_texts(seed: int = 0) -> list[str]:
    from r1cli.toy.world import chat_text, make_world

    world = make_world(seed)
    texts = [record["text"] for record in world["pretrain"]]
    for stem in ("cold_start", "general"):
        texts += [chat_text(r["messages"][0]["content"], r["messages"][1]["content"]) for r in world[stem]]
    texts += [record["prompt"] for record in world["rl_prompts"]]
    return texts


def build_tokenizer():
    """Train the byte-level BPE on the toy corpora with Qwen2's own pre-tokenization, as a
    Qwen2Tokenizer: transformers loads every `qwen2` checkpoint's tokenizer as that class, which
    imposes its pre-tokenizer, so the toy tokenizer must be one to tokenize the same everywhere."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    qwen_backend = Qwen2Tokenizer(vocab={"<unk>": 0}, merges=[], unk_token="<unk>").backend_tokenizer
    core = Tokenizer(models.BPE(unk_token=None))
    core.normalizer = qwen_backend.normalizer
    core.pre_tokenizer = qwen_backend.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(training_texts(), trainer=trainer)
    model = json.loads(core.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, unk_token="<unk>", eos_token="<|end|>", pad_token="<pad>",
        clean_up_tokenization_spaces=False, model_max_length=4096,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[3:]})
    tokenizer.add_tokens(TAG_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def write_tokenizer(directory: Path = TOKENIZER_DIR) -> None:
    build_tokenizer().save_pretrained(directory)


if __name__ == "__main__":
    write_tokenizer()
    print(f"wrote {TOKENIZER_DIR}")
