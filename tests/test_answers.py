import pytest

from r1cli.data.answers import extract_answer, gold_answer, last_boxed, split_completion


@pytest.mark.parametrize(
    "completion, reasoning, response",
    [
        ("<think>2+2=4</think> It is \\boxed{4}.", "2+2=4", "It is \\boxed{4}."),
        ("<think>never closes \\boxed{4}", "never closes \\boxed{4}", ""),
        ("opened by the template</think>\\boxed{4}", "opened by the template", "\\boxed{4}"),
        ("no tags \\boxed{4}", "", "no tags \\boxed{4}"),
    ],
)
def test_split_completion(completion, reasoning, response):
    assert split_completion(completion) == (reasoning, response)


@pytest.mark.parametrize(
    "response, answer",
    [
        ("<answer>\\boxed{7}</answer> but \\boxed{8}", "7"),
        ("<answer> 12 </answer>", "12"),
        ("first \\boxed{1} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("just 42", "just 42"),
    ],
)
def test_extract_answer(response, answer):
    assert extract_answer(response) == answer


def test_boxed_and_gold_edge_cases():
    assert last_boxed("\\boxed{unclosed") is None and last_boxed("\\fbox{3}") == "3"
    assert gold_answer("She pays 2 * 9 = 18.\n#### 1,800") == "1800"
    assert gold_answer(27) == "27" and gold_answer("(1,2)") == "(1,2)"
