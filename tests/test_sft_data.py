from transformers import AutoTokenizer

from r1cli.records import Record
from r1cli.sft_data import IGNORE, StepPlan, collate, encode_records, to_rows
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


def test_eos_appended_when_the_template_does_not_end_turns_with_it():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    example = encode_records([Record.at({"prompt": "hi", "completion": "yo"}, "t:1")], tokenizer, template="chat", max_length=64)[0]
    assert example.input_ids[-1] == tokenizer.eos_token_id and example.labels[-1] == tokenizer.eos_token_id


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

from r1cli.sft_data import Example  # noqa: E402


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
