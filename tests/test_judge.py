import pytest

from r1cli.rewards.registry import Scorer, parse_rewards
from r1cli.toy.judge import helpfulness
from r1cli.toy.world import make_world


@pytest.mark.parametrize(
    ("completion", "grade"),
    [
        ("<think></think> RAIN BALL", 1.0),
        ("<think>capitals</think>  RAIN   BALL ", 1.0),  # whitespace does not count
        ("<think></think> Sure! RAIN BALL", 0.5),  # right, but not only the reply
        ("<think>RAIN BALL</think> rain ball", 0.0),  # the reasoning is not graded, the response is
        ("RAIN BALL", 1.0),  # no think tags: the whole completion is the response
    ],
)
def test_grades_the_response_against_the_reference(completion, grade):
    assert helpfulness({"prompt": "Write rain ball in capital letters.", "reference": "RAIN BALL", "completion": completion}) == grade


def test_does_not_apply_to_reasoning_prompts_and_loads_as_a_reward():
    (spec,) = parse_rewards(["r1cli.toy.judge:helpfulness"])
    scorer = Scorer([spec])
    try:
        scores = scorer.score([{"prompt": "Ann has 2 pens", "answer": "2", "completion": "x"},
                               {"prompt": "Say hello.", "reference": "Hello!", "completion": "<think></think> Hello!"}])
    finally:
        scorer.close()
    assert [s[spec.name] for s in scores] == [None, 1.0]


def test_every_general_prompt_has_its_reference_as_the_one_full_grade():
    world = make_world(0)
    for record in world["general_prompts"]:
        assert helpfulness({**record, "completion": f"<think></think> {record['reference']}"}) == 1.0
    for record in world["general"]:
        assert record["messages"][1]["content"].startswith("<think></think> ")
