from pathlib import Path

import pytest
from transformers import AutoTokenizer

from r1cli.data.records import Record
from r1cli.data.sft_rows import IGNORE, StepPlan, collate, encode_records, to_rows
from r1cli.errors import UserError
from r1cli.toy.tokenizer import TOKENIZER_DIR, build_tokenizer

TOKENIZER = AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False)["input_ids"]


def encode(fields: dict, template="chat", max_length=512):
    return encode_records([Record.at(fields, "t.jsonl:1")], TOKENIZER, template=template, max_length=max_length)[0]


def test_label_mask_on_every_assistant_turn_only():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tom has 3 pens, gets 1. How many pens now?"},
        {"role": "assistant", "content": "<think>3 plus 1 is 4.</think> The answer is \\boxed{4}."},
        {"role": "user", "content": "请说你好。"},
        {"role": "assistant", "content": "你好！"},
    ]
    example = encode({"messages": messages})
    # Direct construction from the toy template: <|role|>content<|end|> per turn.
    expected_ids, expected_labels = [], []
    for message in messages:
        head, body = ids(f"<|{message['role']}|>"), ids(message["content"] + "<|end|>")
        expected_ids += head + body
        expected_labels += [IGNORE] * len(head) + (body if message["role"] == "assistant" else [IGNORE] * len(body))
    assert example.input_ids == expected_ids
    assert example.labels == expected_labels


def test_prompt_completion_chat_and_plain_and_text():
    chat = encode({"prompt": "Say hello.", "completion": "Hello!"})
    assert TOKENIZER.decode([t for t in chat.labels if t != IGNORE]) == "Hello!<|end|>"
    plain = encode({"prompt": "Q: 2+2? A:", "completion": " 4"}, template="plain")
    assert plain.input_ids == ids("Q: 2+2? A:") + ids(" 4") + [TOKENIZER.eos_token_id]
    assert plain.labels == [IGNORE] * len(ids("Q: 2+2? A:")) + ids(" 4") + [TOKENIZER.eos_token_id]
    text = encode({"text": "7 plus 1 is 8."}, template="plain")
    assert text.input_ids == ids("7 plus 1 is 8.") + [TOKENIZER.eos_token_id]
    assert text.labels == [IGNORE] + text.input_ids[1:]  # every token but the first, which nothing predicts


def test_trl_conversational_records_train_on_the_completion_turns_only():
    history = [
        {"role": "user", "content": "Tom has 3 pens, gets 1. How many pens now?"},
        {"role": "assistant", "content": "<think>3 plus 1 is 4.</think> 4."},
        {"role": "user", "content": "请说你好。"},
    ]
    reply = [{"role": "assistant", "content": "<think>说你好。</think> 你好！"}]
    example = encode({"prompt": history, "completion": reply})
    # The same tokens as the whole conversation, labelled only on the completion's turn:
    # the assistant turn in the prompt is context, as in TRL's prompt-completion training.
    expected_ids, expected_labels = [], []
    for message in [*history, *reply]:
        head, body = ids(f"<|{message['role']}|>"), ids(message["content"] + "<|end|>")
        expected_ids += head + body
        expected_labels += [IGNORE] * len(head) + (body if message is reply[0] else [IGNORE] * len(body))
    assert example.input_ids == expected_ids
    assert example.labels == expected_labels
    # A single exchange equals the `messages` record of the same turns.
    single = encode({"prompt": history[:1], "completion": history[1:2]})
    as_messages = encode({"messages": history[:2]})
    assert (single.input_ids, single.labels) == (as_messages.input_ids, as_messages.labels)


@pytest.mark.parametrize("fields, message", [
    ({"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "yo"}]}, "'completion' has no assistant turn"),
    ({"prompt": "hi", "completion": [{"role": "assistant", "content": 3}]}, "completion[0] must be an object with a string 'content'"),
    ({"prompt": "hi", "completion": [{"role": "assistant", "content": "yo"}]}, "a chat-message completion needs --template chat"),
])
def test_bad_conversational_records_name_the_field(fields, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        encode(fields, template="plain" if "template" in message else "chat")


def test_eos_appended_when_the_template_does_not_end_turns_with_it():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    example = encode_records([Record.at({"prompt": "hi", "completion": "yo"}, "t:1")], tokenizer, template="chat", max_length=64)[0]
    assert example.input_ids[-1] == tokenizer.eos_token_id and example.labels[-1] == tokenizer.eos_token_id


# ---------------------------------------------------------------- public chat templates with reasoning

CHAT_TEMPLATES = Path(__file__).parent / "assets" / "chat_templates"


def template_tokenizer(template_file: str, *, eos: str, bos: str | None = None, tokens: tuple[str, ...] = ()):
    """The toy tokenizer with a public model's chat template and the special tokens it writes."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_tokens(list(tokens), special_tokens=True)
    tokenizer.add_special_tokens({"eos_token": eos, **({"bos_token": bos} if bos else {})})
    tokenizer.chat_template = (CHAT_TEMPLATES / template_file).read_text(encoding="utf-8")
    return tokenizer


R1_DISTILL = template_tokenizer(
    "deepseek-r1-distill-qwen.jinja", eos="<｜end▁of▁sentence｜>", bos="<｜begin▁of▁sentence｜>", tokens=("<｜User｜>", "<｜Assistant｜>")
)
QWEN3 = template_tokenizer("qwen3.jinja", eos="<|im_end|>", tokens=("<|im_start|>",))

REASONING_CHAT = [
    {"role": "user", "content": "Tom has 3 pens, gets 1. How many pens now?"},
    {"role": "assistant", "content": "<think>\n3 plus 1 is 4.\n</think>\n\nThe answer is \\boxed{4}."},
    {"role": "user", "content": "And with 2 more?"},
    {"role": "assistant", "content": "<think>\n4 plus 2 is 6.\n</think>\n\nThe answer is \\boxed{6}."},
]


def labelled_spans(example) -> list[tuple[int, list[int]]]:
    """(start, token ids) of each run of labelled tokens; labels are the input ids they sit on."""
    spans, start = [], None
    for position, label in enumerate([*example.labels, IGNORE]):
        if label != IGNORE and start is None:
            start = position
        elif label == IGNORE and start is not None:
            spans.append((start, example.labels[start:position]))
            start = None
    assert all(example.input_ids[s : s + len(ids)] == ids for s, ids in spans)
    return spans


def prompt_ids(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("tokenizer", "forced_prefix", "examples_expected"),
    [(TOKENIZER, "", 1), (R1_DISTILL, "<think>\n", 2), (QWEN3, "", 2)],
    ids=["toy", "deepseek-r1-distill-qwen", "qwen3"],
)
@pytest.mark.parametrize("turns", [2, 4], ids=["single-turn", "multi-turn"])
def test_loss_covers_exactly_what_the_model_generates_after_the_generation_prompt(tokenizer, forced_prefix, examples_expected, turns):
    messages = REASONING_CHAT[:turns]
    examples = encode_records([Record.at({"messages": messages}, "t.jsonl:1")], tokenizer, template="chat", max_length=512)
    # The toy template renders history as it was written: one example trains both turns. R1-Distill and
    # Qwen3 drop the reasoning of earlier turns, so each turn is an example with the context it gets.
    assert len(examples) == (1 if turns == 2 else examples_expected)
    trained = [(example, start, ids) for example in examples for start, ids in labelled_spans(example)]
    assistant_turns = [index for index, message in enumerate(messages) if message["role"] == "assistant"]
    assert len(trained) == len(assistant_turns)
    for (example, start, ids), index in zip(trained, assistant_turns):
        assert tokenizer.decode(ids) == messages[index]["content"].removeprefix(forced_prefix) + tokenizer.eos_token
        assert example.input_ids[:start] == prompt_ids(tokenizer, messages[:index])
    for example in examples:  # each ends with the last token it trains
        last_start, last_ids = labelled_spans(example)[-1]
        assert len(example.input_ids) == last_start + len(last_ids)
    if forced_prefix:
        assert tokenizer.decode(prompt_ids(tokenizer, messages[:1])).endswith(forced_prefix)


def test_r1_distill_trains_each_turn_with_its_reasoning_and_the_history_it_sees():
    examples = encode_records([Record.at({"messages": REASONING_CHAT}, "t.jsonl:1")], R1_DISTILL, template="chat", max_length=512)
    assert len(examples) == 2 and "3 plus 1 is 4." in R1_DISTILL.decode(labelled_spans(examples[0])[0][1])
    ((start, ids),) = labelled_spans(examples[1])
    context, trained = R1_DISTILL.decode(examples[1].input_ids[:start]), R1_DISTILL.decode(ids)
    assert "4 plus 2 is 6." in trained and "3 plus 1 is 4." not in context  # history without its reasoning, as at inference
    assert context.endswith("The answer is \\boxed{4}.<｜end▁of▁sentence｜><｜User｜>And with 2 more?<｜Assistant｜><think>\n")


def test_a_history_the_template_keeps_verbatim_is_one_example_on_every_turn():
    answers = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again."}, {"role": "assistant", "content": "Hi again."}]
    (example,) = encode_records([Record.at({"messages": answers}, "t.jsonl:1")], QWEN3, template="chat", max_length=512)
    assert [QWEN3.decode(ids) for _, ids in labelled_spans(example)] == ["Hi.<|im_end|>", "Hi again.<|im_end|>"]


def test_prompt_completion_records_in_chat_mode_continue_after_the_forced_prefix():
    completion = REASONING_CHAT[1]["content"]
    (example,) = encode_records([Record.at({"prompt": REASONING_CHAT[0]["content"], "completion": completion}, "t.jsonl:1")], R1_DISTILL, template="chat", max_length=512)
    ((start, ids),) = labelled_spans(example)
    assert R1_DISTILL.decode(ids) == completion.removeprefix("<think>\n") + "<｜end▁of▁sentence｜>"
    assert example.input_ids[:start] == prompt_ids(R1_DISTILL, REASONING_CHAT[:1])


def test_stop_ids_end_a_turn_whose_terminator_is_not_the_eos():
    tokenizer = template_tokenizer("qwen3.jinja", eos="<|end|>", tokens=("<|im_start|>", "<|im_end|>"))
    record = Record.at({"prompt": "Say hi.", "completion": "Hi."}, "t.jsonl:1")
    (plain,) = encode_records([record], tokenizer, template="chat", max_length=64)
    (stopped,) = encode_records([record], tokenizer, template="chat", max_length=64, stop_ids=[tokenizer.convert_tokens_to_ids("<|im_end|>")])
    assert tokenizer.decode(labelled_spans(plain)[0][1]) == "Hi.<|im_end|>\n<|end|>"  # no stop token there: EOS appended
    assert tokenizer.decode(labelled_spans(stopped)[0][1]) == "Hi.<|im_end|>"


def test_templates_that_cannot_be_followed_give_one_clear_error():
    no_think = {"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]}
    with pytest.raises(UserError, match=r"^t\.jsonl:1: message 2 \(assistant\) must start with '<think>\\n': the chat template's generation prompt"):
        encode_records([Record.at(no_think, "t.jsonl:1")], R1_DISTILL, template="chat", max_length=64)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}{% if add_generation_prompt %}<|user|>{% endif %}"
    with pytest.raises(UserError, match=r"^t\.jsonl:1: the tokenizer's chat template renders an assistant turn after a different prefix than its generation prompt"):
        encode_records([Record.at(no_think, "t.jsonl:1")], tokenizer, template="chat", max_length=64)


def test_truncation_is_counted_and_packing_restarts_positions():
    examples = encode_records(
        [Record.at({"text": "1 plus 1 is 2. " * n}, f"t:{n}") for n in (1, 2, 30)], TOKENIZER, template="plain", max_length=40
    )
    assert [e.truncated for e in examples] == [False, False, True] and len(examples[2].input_ids) == 40
    rows = to_rows(examples, max_length=40, packing=True)
    assert [len(r.input_ids) for r in rows] == [len(examples[0].input_ids) + len(examples[1].input_ids), 40]
    first = rows[0]
    assert first.position_ids == list(range(len(examples[0].input_ids))) + list(range(len(examples[1].input_ids)))
    assert first.labels[len(examples[0].input_ids)] == IGNORE  # no loss across the example boundary
    batch = collate(rows, TOKENIZER.pad_token_id, device="cpu")
    assert "attention_mask" not in batch and batch["position_ids"].shape == (2, 40)


def test_step_plan_covers_each_epoch_once_and_is_deterministic():
    plan = StepPlan(n_rows=10, batch_size=2, grad_accum=2, seed=3)
    assert plan.steps_per_epoch == 3 and plan.total_steps(2, None) == 6 and plan.total_steps(2, 4) == 4
    epoch = [i for step in range(3) for batch in plan.micro_batches(step) for i in batch]
    assert sorted(epoch) == list(range(10))
    assert plan.micro_batches(4) == StepPlan(10, 2, 2, 3).micro_batches(4)
    assert plan.micro_batches(3) != plan.micro_batches(0)  # a new order each epoch


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from r1cli.data.sft_rows import Example  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=2, max_value=40), min_size=1, max_size=30), max_length=st.integers(40, 120))
def test_packing_keeps_every_token_in_order_within_the_row_limit(lengths, max_length):
    examples = [Example(list(range(100 * i, 100 * i + n)), [IGNORE] + list(range(100 * i + 1, 100 * i + n))) for i, n in enumerate(lengths)]
    rows = to_rows(examples, max_length=max_length, packing=True)
    assert [t for r in rows for t in r.input_ids] == [t for e in examples for t in e.input_ids]
    assert [t for r in rows for t in r.labels] == [t for e in examples for t in e.labels]
    assert all(len(r.input_ids) <= max_length for r in rows)
    assert [p for r in rows for p in r.position_ids] == [p for n in lengths for p in range(n)]


@settings(max_examples=200, deadline=None)
@given(n_rows=st.integers(1, 60), batch_size=st.integers(1, 8), grad_accum=st.integers(1, 4), seed=st.integers(0, 9), epoch=st.integers(0, 3))
def test_every_epoch_visits_each_row_exactly_once(n_rows, batch_size, grad_accum, seed, epoch):
    plan = StepPlan(n_rows, batch_size, grad_accum, seed)
    steps = range(epoch * plan.steps_per_epoch, (epoch + 1) * plan.steps_per_epoch)
    visited = [i for step in steps for batch in plan.micro_batches(step) for i in batch]
    assert sorted(visited) == list(range(n_rows))
    assert all(len(batch) <= batch_size for step in steps for batch in plan.micro_batches(step))
