import itertools
import json
import random

import pytest
from conftest import run_cli, write_jsonl

from r1cli.errors import UserError
from r1cli.report.metrics import majority_correct, pass_at_k, report_block


def test_pass_at_k_equals_the_average_over_every_k_subset():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 9)
        table = [rng.random() < 0.4 for _ in range(n)]
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(table, k))
            direct = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, sum(table), k) == pytest.approx(direct, abs=1e-12)


def answer_record(i: int, answer: str, gold: str) -> dict:
    return {"id": "p", "sample": i, "completion": f"<think>.</think> \\boxed{{{answer}}}",
            "rewards": {"accuracy": 1.0 if answer in EQUIVALENT[gold] else 0.0}}


EQUIVALENT = {"1/2": {"1/2", "0.5", "\\frac{1}{2}"}, "3": {"3", "3.0"}, "7": {"7"}}


def test_majority_vote_groups_equivalent_answers():
    rng = random.Random(1)
    spellings = {"half": ["1/2", "0.5", "\\frac{1}{2}"], "three": ["3", "3.0"], "seven": ["7"]}
    for _ in range(100):
        gold = rng.choice(["1/2", "3", "7"])
        values = [rng.choice(["half", "three", "seven"]) for _ in range(rng.randint(1, 8))]
        records = [answer_record(i, rng.choice(spellings[v]), gold) for i, v in enumerate(values)]
        k = rng.randint(1, len(values))
        counts = {v: values[:k].count(v) for v in values[:k]}
        best = max(counts.values())
        winner = next(v for v in values[:k] if counts[v] == best)  # ties: the first seen
        assert majority_correct(records, k) == float(spellings[winner][0] in EQUIVALENT[gold] or spellings[winner][1 % len(spellings[winner])] in EQUIVALENT[gold])


def test_unanswered_samples_do_not_vote():
    records = [answer_record(0, "7", "7"), {"id": "p", "sample": 1, "completion": "<think>never ends", "rewards": {"accuracy": 0.0}},
               {"id": "p", "sample": 2, "completion": "<think>x", "rewards": {"accuracy": 0.0}}]
    assert majority_correct(records, 3) == 1.0


def voter(i: int, response: str, accuracy: float) -> dict:
    return {"id": "p", "sample": i, "completion": f"<think>work</think> {response}", "rewards": {"accuracy": accuracy}}


def test_samples_without_an_explicit_answer_do_not_vote():
    # Three hedges that state no answer against two boxed correct answers: only the boxed vote.
    records = [voter(i, "I am not sure.", 0.0) for i in range(3)] + [voter(3, "So \\boxed{18}.", 1.0), voter(4, "\\boxed{18}", 1.0)]
    assert majority_correct(records, 5) == 1.0
    # An answer inside <answer>…</answer> votes, read as the accuracy reward reads it.
    records = [voter(0, "\\boxed{17}", 0.0), voter(1, "<answer>The total is 18 dollars</answer>", 1.0), voter(2, "\\boxed{17}", 0.0),
               voter(3, "<answer>18</answer>", 1.0), voter(4, "\\fbox{18}", 1.0)]
    assert majority_correct(records, 5) == 1.0 and majority_correct(records, 3) == 0.0
    assert majority_correct([voter(i, "I am not sure.", 0.0) for i in range(3)], 3) == 0.0  # no voter: 0


def test_a_think_block_that_never_closes_does_not_vote_even_with_a_boxed_answer():
    unclosed = [{"id": "p", "sample": i, "completion": "<think>it must be \\boxed{5}", "rewards": {"accuracy": 0.0}} for i in (0, 1)]
    assert majority_correct([*unclosed, voter(2, "\\boxed{7}", 1.0)], 3) == 1.0


def test_majority_ties_go_to_the_group_whose_first_member_has_the_lowest_sample_index():
    # Listed out of order: the sample index, not the list position, decides.
    wrong_first = [voter(3, "\\boxed{7}", 1.0), voter(1, "\\boxed{7}", 1.0), voter(0, "\\boxed{3}", 0.0), voter(2, "\\boxed{3.0}", 0.0)]
    assert majority_correct(wrong_first, 4) == 0.0
    right_first = [voter(3, "\\boxed{3}", 0.0), voter(1, "\\boxed{3.0}", 0.0), voter(0, "\\boxed{7}", 1.0), voter(2, "\\boxed{7}", 1.0)]
    assert majority_correct(right_first, 4) == 1.0
    assert majority_correct(right_first, 2) == 1.0  # samples 0 and 1: one vote each, 7 came first


def prompt_samples(prompt: str, outcomes: list[bool]) -> list[dict]:
    return [{"id": prompt, "sample": i, "completion": f"<think>a</think> \\boxed{{{1 if right else 2}}}",
             "rewards": {"accuracy": float(right)}} for i, right in enumerate(outcomes)]


def test_pass_at_1_weighs_every_prompt_the_same_however_many_samples_it_has():
    samples = prompt_samples("a", [True]) + prompt_samples("b", [True, False, False, False]) + prompt_samples("c", [False, False, False])
    # By hand: shares 1/1, 1/4, 0/3; their mean is 5/12 (the mean over the 8 samples would be 2/8).
    assert report_block(samples, [])["pass@1"] == pytest.approx(5 / 12, abs=1e-15)
    assert report_block(samples, [1])["pass@1"] == report_block(samples, [])["pass@1"]
    ungraded = [{"id": "d", "sample": 0, "completion": "x", "rewards": {"accuracy": None}}]
    assert report_block(samples + ungraded, [1])["pass@1"] == pytest.approx(5 / 12, abs=1e-15)  # no gold: not a prompt of pass@1


def test_k_above_a_prompts_sample_count_is_an_error_naming_k_and_n():
    samples = prompt_samples("p-1", [True] * 8) + prompt_samples("p-3", [True, False, True, False]) + prompt_samples("p-2", [False] * 6)
    with pytest.raises(UserError) as raised:
        report_block(samples, [1, 8])
    assert str(raised.value) == "--k 8: prompt 'p-3' has only 4 samples (n=4); pass@k and maj@k need k <= n"
    block = report_block(samples, [1, 4])  # maj@4 of p-3: a 2-2 tie, won by sample 0's correct answer
    assert block["pass@4"] == pytest.approx((1 + 1 + 0) / 3) and block["maj@4"] == pytest.approx((1 + 1 + 0) / 3)


def test_report_block_fields_are_fractions_and_counts():
    rng = random.Random(2)
    samples = []
    for p in range(10):
        for s in range(4):
            correct = rng.random() < 0.5
            samples.append({"id": f"p{p}", "sample": s, "completion": f"<think>a</think> \\boxed{{{1 if correct else 2}}}",
                            "completion_tokens": 10 + s, "finish_reason": "length" if s == 3 else "stop",
                            "rewards": {"accuracy": float(correct), "format": 1.0, "language": 1.0 if s else 0.5}})
    block = report_block(samples, [1, 4])
    assert block["n_prompts"] == 10 and block["n_samples"] == 40
    assert block["pass@1"] == pytest.approx(sum(s["rewards"]["accuracy"] for s in samples) / 40)
    assert block["truncated_rate"] == 0.25 and block["language_consistency"] == 0.75 and block["mean_completion_tokens"] == 11.5
    for key in ("pass@1", "pass@4", "maj@4", "format_rate", "language_consistency", "truncated_rate"):
        assert 0.0 <= block[key] <= 1.0
    assert block["rewards"]["accuracy"] == block["pass@1"]


def test_eval_scores_samples_from_elsewhere_without_a_model(tmp_path, monkeypatch, capsys):
    import r1cli.engines.base
    import r1cli.modeling

    monkeypatch.setattr(r1cli.modeling, "load_model", lambda *a, **k: pytest.fail("no model may be loaded"))
    monkeypatch.setattr(r1cli.engines.base, "engine_class", lambda *a, **k: pytest.fail("no model may be loaded"))
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "1+1?", "answer": "2", "completion": "<think>1+1=2</think> \\boxed{2}", "lang": "en"},
        {"prompt": "1+1?", "answer": "2", "completion": "<think>hm</think> \\boxed{3}", "lang": "en"},
        {"prompt": "一加二？", "answer": "3", "completion": "<think>一加二等于三</think> \\boxed{3}", "lang": "zh"},
        {"prompt": "一加二？", "answer": "3", "completion": "three", "lang": "zh"},
    ])
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(samples), "--out", str(tmp_path / "r.json"), "--by", "lang")
    assert status == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall"]["n_prompts"] == 2 and report["overall"]["pass@1"] == 0.5
    assert report["overall"]["pass@2"] == 1.0 and report["overall"]["format_rate"] == 0.75
    assert report["by"]["lang=zh"]["pass@1"] == 0.5 and report["by"]["lang=en"]["maj@2"] == 1.0
    assert "pass@1" in err and "overall" in err  # the table on the terminal


def test_eval_samples_then_reports_and_resumes(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"{n} plus 1?", "answer": str(n + 1)} for n in range(4)])
    args = ["eval", str(tiny_checkpoint), str(prompts), "--out", str(tmp_path / "r.json"), "--n", "3", "--max-new-tokens", "6", "--device", "cpu"]
    assert run_cli(monkeypatch, capsys, *args)[0] == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["overall"]["n_samples"] == 12 and set(report["overall"]) >= {"pass@1", "pass@3", "maj@3", "truncated_rate"}
    assert not (tiny_checkpoint / "README.md").exists()  # a checkpoint r1 did not make gets no card written into it
    samples = (tmp_path / "r.samples.jsonl").read_text()
    status, _, err = run_cli(monkeypatch, capsys, *args)
    assert status == 0 and "is complete" in err and (tmp_path / "r.samples.jsonl").read_text() == samples


def test_eval_bad_input(tmp_path, monkeypatch, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q", "response": "no completion"}])
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(samples), "--out", str(tmp_path / "r.json"))
    assert status == 2 and "s.jsonl:2: missing field 'completion'" in err
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--samples", str(samples), "--out", str(tmp_path / "r.json"), "--reward", "speed")
    assert status == 2 and "unknown reward 'speed'; valid: accuracy" in err
    status, _, err = run_cli(monkeypatch, capsys, "eval", "--out", str(tmp_path / "r.json"))
    assert status == 2 and "needs MODEL and DATA" in err
