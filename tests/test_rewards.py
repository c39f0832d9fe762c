import json
import time

import pytest
from conftest import shared_records

from r1cli.data.answers import gold_answer
from r1cli.errors import UserError
from r1cli.rewards.builtin import format_reward, language, overlong, repetition, tags
from r1cli.rewards.code import code
from r1cli.rewards.math import accuracy
from r1cli.rewards.registry import RewardOptions, Scorer, parse_rewards


def load(name: str) -> list[dict]:
    return shared_records(name, "test")


def answered(gold, text: str) -> dict:
    return {"prompt": "q", "answer": gold, "completion": f"<think>work</think> {text}"}


@pytest.mark.parametrize("dataset", ["math500", "gsm8k"])
def test_every_real_gold_answer_scores_1_and_every_perturbed_one_0(dataset):
    # Measured: MATH-500 500/500 and 0/500, GSM8K 1319/1319 and 0/1319: no misses to explain.
    rows = load(dataset)
    scorer = Scorer(parse_rewards(["accuracy"]))
    gold = [answered(r["answer"], f"\\boxed{{{gold_answer(r['answer'])}}}") for r in rows]
    perturbed = [answered(r["answer"], f"\\boxed{{{gold_answer(r['answer'])}+1}}") for r in rows]
    gold_scores = [s["accuracy"] for s in scorer.score(gold)]
    perturbed_scores = [s["accuracy"] for s in scorer.score(perturbed)]
    scorer.close()
    misses = [r["answer"] for r, s in zip(rows, gold_scores) if s != 1.0]
    false_hits = [r["answer"] for r, s in zip(rows, perturbed_scores) if s != 0.0]
    assert (misses, false_hits) == ([], [])


@pytest.mark.parametrize(
    "gold, response, expected",
    [
        ("#### 18", "She makes \\boxed{18} dollars.", 1.0),
        ("#### 1,800", "That is \\boxed{1,800}.", 1.0),
        (27, "\\boxed{27.0}", 1.0),
        ("\\frac{\\sqrt{2}}{2}", "\\boxed{\\frac{1}{\\sqrt{2}}}", 1.0),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}", 1.0),
        ("(-\\infty, 3]", "\\boxed{(-\\infty,3]}", 1.0),
        ("\\text{(C)}", "\\boxed{\\text{(C)}}", 1.0),
        ("3", "<answer>3</answer>", 1.0),
        ("3", "The answer is 3.", 1.0),
        ("3", "\\boxed{4}", 0.0),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", 0.0),
    ],
)
def test_accuracy_equivalences(gold, response, expected):
    assert accuracy(answered(gold, response)) == expected


@pytest.mark.parametrize(
    "inside",
    [
        "The total is 18 dollars",
        "18 apples",
        "She makes $18$ in all.",
        "The answer is 18.",
        "x = 18",
        "Eighteen, that is 18 dollars",
        "The total is 18 \\text{ dollars}",
        "17 or \\boxed{18}",  # a \boxed{} in the tag is the answer
    ],
)
def test_an_answer_tag_is_read_as_math_verify_reads_free_text(inside):
    assert accuracy(answered("#### 18", f"<answer>{inside}</answer>")) == 1.0


@pytest.mark.parametrize(
    "inside",
    [
        "17 or 18 or 19",
        "17 or 19 or 18",  # math-verify alone reads the last candidate: 18
        " ".join(str(n) for n in range(1, 101)),
        "1 2 3 … 100",
        "1 2 3 … 18",  # math-verify reads the last term of the run: 18
        "1, 2, \\ldots, 18",
        "10 8",  # math-verify reads numbers set side by side as their sum: 18
        "between 17 and 18",
        "It is 18, not 17",
        "Answer: 18, or maybe 19",
        "$17$ or $18$",
        "17 \\text{ or } 18",
        "17, 18, 19",
        "The answer is \\frac{36}{2}+1",  # math-verify alone reads the fraction only: 18
        "The answer is 18^2",  # and this as 18
        "We get 18 \\sqrt{2}",
        "I am not sure",
    ],
)
def test_an_answer_tag_that_hedges_between_candidates_scores_0(inside):
    assert accuracy(answered("#### 18", f"<answer>{inside}</answer>")) == 0.0


def test_a_boxed_run_of_numbers_names_no_answer():
    assert [accuracy(answered("18", text)) for text in ("\\boxed{1 2 3 … 18}", "\\boxed{10 8}", "\\boxed{17, \\ldots, 18}")] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("dataset", ["math500", "gsm8k"])
def test_every_real_gold_answer_in_an_answer_tag_scores_1_and_every_perturbed_one_0(dataset):
    # Bare maths in the tag (`\frac{\sqrt{3}}{3}`, `3\sqrt{13}`), which math-verify's free-text
    # extraction misreads, is read as one expression; prose around $…$ maths as free text.
    rows = load(dataset)
    forms = {"bare": "<answer>{}</answer>", "prose": "<answer>The answer is ${}$.</answer>"}
    scorer = Scorer(parse_rewards(["accuracy"]))
    misses, false_hits = {}, {}
    for name, form in forms.items():
        gold = [answered(r["answer"], form.format(gold_answer(r["answer"]))) for r in rows]
        perturbed = [answered(r["answer"], form.format(f"{gold_answer(r['answer'])}+1")) for r in rows]
        misses[name] = [r["answer"] for r, s in zip(rows, scorer.score(gold)) if s["accuracy"] != 1.0]
        false_hits[name] = [r["answer"] for r, s in zip(rows, scorer.score(perturbed)) if s["accuracy"] != 0.0]
    scorer.close()
    assert (misses, false_hits) == ({name: [] for name in forms}, {name: [] for name in forms})


def test_accuracy_without_gold_is_none_and_an_unclosed_think_has_no_answer():
    assert accuracy({"prompt": "q", "completion": "<think>x</think> \\boxed{3}"}) is None
    assert accuracy({"prompt": "q", "answer": "3", "completion": "<think>so \\boxed{3}"}) == 0.0


def test_a_pathological_expression_cannot_hang_the_check():
    started = time.time()
    value = accuracy(answered("1", "\\boxed{9^{9^{9^{9^{9}}}}-9^{9^{9^{9^{9}}}}+1}"), timeout=2)
    assert value in (0.0, 1.0) and time.time() - started < 10


def test_language_orders_chinese_mixed_and_english_reasoning_on_cmath():
    for row in load("cmath")[:50]:
        record = {"prompt": row["question"]}
        chinese = language({**record, "completion": "<think>先算总数，再减去看过的页数，得到剩下的页数。</think> 9"})
        mixed = language({**record, "completion": "<think>先算总数, then subtract the pages read, 得到剩下的.</think> 9"})
        english = language({**record, "completion": "<think>First take the total, then subtract the pages read.</think> 9"})
        assert chinese == 1.0 and english == 0.0 and 0.0 < mixed < 1.0
    assert language({"prompt": "What is 2+2?", "completion": "<think>2+2 = 4 \\frac{1}{2} $x^2$</think> 4"}) is None


def test_format_and_tags():
    assert format_reward({"completion": "<think>a</think> b"}) == 1.0
    assert format_reward({"completion": "<think>a</think>   "}) == 0.0  # no response
    assert format_reward({"completion": "<think>a<think>b</think> c"}) == 0.0
    assert format_reward({"completion": "a</think> b"}) == 0.0
    assert [tags({"completion": c}) for c in ("<think>a</think>", "<think>a", "x", "<think><think></think>")] == [1.0, 0.5, 0.0, 0.5]


def test_overlong_is_dapos_piecewise_penalty():
    def direct(length, max_length=100, buffer=20):
        if length <= max_length - buffer:
            return 0.0
        return (max_length - buffer - length) / buffer if length <= max_length else -1.0

    for length in (10, 80, 81, 90, 100, 101, 500):
        assert overlong({"completion_tokens": length}, 100, 20) == pytest.approx(direct(length))
    with pytest.raises(UserError, match="needs 'completion_tokens'"):
        overlong({"completion": "x"}, 100, 20)


def test_repetition_is_the_share_of_repeated_ngrams():
    assert repetition({"completion": "a b c d e"}, 3) == 0.0
    assert repetition({"completion": "a b a b a b"}, 2) == pytest.approx(2 / 5 - 1)  # 5 bigrams, 2 distinct


def fenced(body: str) -> str:
    return f"<think>write it</think> Here:\n```python\n{body}\n```"


@pytest.mark.parametrize("index", range(0, 164, 16), ids=lambda i: f"HumanEval/{i}")
def test_humaneval_canonical_solutions_score_1_and_a_wrong_body_0(index):
    task = load("humaneval")[index]
    options = dict(timeout=10, memory_mb=1024)
    assert code({**task, "completion": fenced(task["canonical_solution"])}, **options) == 1.0
    assert code({**task, "completion": fenced("    return None")}, **options) == 0.0
    whole = task["prompt"] + task["canonical_solution"]  # a block that redefines the function
    assert code({**task, "completion": fenced(whole)}, **options) == 1.0


@pytest.mark.slow
def test_every_humaneval_canonical_solution_scores_1():
    tasks = load("humaneval")
    scorer = Scorer(parse_rewards(["code"]))
    scores = scorer.score([{**t, "completion": fenced(t["canonical_solution"])} for t in tasks])
    assert len(tasks) == 164 and [t["task_id"] for t, s in zip(tasks, scores) if s["code"] != 1.0] == []


def test_mbpp_scores_1_only_when_every_assert_passes():
    row = load("mbpp")[0]
    assert code({**row, "completion": fenced(row["code"])}, timeout=10, memory_mb=1024) == 1.0
    # Right only when the character is absent: passes none of the three asserts of row 0.
    assert code({**row, "completion": fenced("def remove_Occ(s, ch):\n    return s")}, timeout=10, memory_mb=1024) == 0.0
    special = "def remove_Occ(s, ch):\n    return {'hello': 'heo'}.get(s, s)"  # one assert of three
    assert code({**row, "completion": fenced(special)}, timeout=10, memory_mb=1024) == 0.0
    assert code({**row, "completion": "no code at all"}, timeout=10, memory_mb=1024) == 0.0


@pytest.mark.parametrize(
    "body",
    [
        "import time\ndef remove_Occ(s, ch):\n    time.sleep(1000)",
        "import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(1000)\ntime.sleep(1000)",
        "hog = bytearray(8 * 1024 ** 3)\ndef remove_Occ(s, ch):\n    return s",
    ],
    ids=["sleeps", "forks", "allocates"],
)
def test_runaway_code_is_stopped_within_the_limit_and_scores_0(body):
    import subprocess

    row = load("mbpp")[0]
    started = time.time()
    assert code({**row, "completion": fenced(body)}, timeout=3, memory_mb=512) == 0.0
    assert time.time() - started < 6
    time.sleep(0.2)
    survivors = subprocess.run(["pgrep", "-f", "sandbox_judge|r1-sandbox-"], capture_output=True, text=True).stdout.split()
    assert survivors == []  # the check's processes, forked children included, were all killed


def test_registry_weights_unknown_names_and_custom_functions(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown reward 'acc'; valid: accuracy, format, tags, language, overlong, length, repetition, code, rm:PATH, MODULE:FUNCTION"):
        parse_rewards(["acc"])
    with pytest.raises(UserError, match="weight 'x' is not a number"):
        parse_rewards(["format=x"])
    (tmp_path / "my_rewards.py").write_text("def short(record):\n    return None if 'skip' in record['completion'] else -len(record['completion'])\n")
    monkeypatch.chdir(tmp_path)
    scorer = Scorer(parse_rewards(["format=0.5", "my_rewards:short=0.1"], RewardOptions()))
    scores = scorer.score([{"completion": "<think>a</think> b"}, {"completion": "skip"}])
    assert scores == [{"format": 1.0, "my_rewards:short": -18.0}, {"format": 0.0, "my_rewards:short": None}]
    assert scorer.total(scores[0]) == pytest.approx(0.5 - 1.8) and scorer.total(scores[1]) == 0.0
    with pytest.raises(UserError, match="cannot import nothing from my_rewards"):
        parse_rewards(["my_rewards:nothing"])


def test_reward_model_scores_with_its_first_logit(tmp_path, tiny_config):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from r1cli.toy.tokenizer import TOKENIZER_DIR

    fields = json.loads(tiny_config.read_text())
    fields.pop("tokenizer")
    config = AutoConfig.for_model(fields.pop("model_type"), num_labels=1, pad_token_id=0, vocab_size=1024, **fields)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(TOKENIZER_DIR).save_pretrained(tmp_path / "rm")
    scorer = Scorer(parse_rewards([f"rm:{tmp_path / 'rm'}=2"]))
    records = [{"prompt": "Say hello.", "completion": text} for text in ("Hello!", "No.", "Hello there, friend!")]
    batched = [s[f"rm:{tmp_path / 'rm'}"] for s in scorer.score(records)]
    single = [scorer.specs[0].function(r) for r in records]
    assert batched == pytest.approx(single, abs=1e-5) and len(set(batched)) == 3
    assert scorer.specs[0].weight == 2.0
