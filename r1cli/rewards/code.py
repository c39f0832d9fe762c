"""`code`: the response's last fenced Python block against the record's tests, in the sandbox
(r1cli.rewards.sandbox). HumanEval (`test`, `entry_point`) and MBPP (`test_list`) records."""

from __future__ import annotations

import ast
import re

from r1cli.data.answers import reasoning_and_response
from r1cli.errors import UserError
from r1cli.rewards.base import builtin_reward
from r1cli.rewards.sandbox import Limits, TestSuite, run_tests

FENCE = re.compile(r"```(?:python|py|Python)?[^\n`]*\n(.*?)```", re.DOTALL)
FAILURES = "_r1_failed_asserts"


class _DeferAsserts(ast.NodeTransformer):
    """`assert X` becomes "note it if X is false (or raises)", so that every call of the test
    happens whatever the solution answered: otherwise a test that stops at its first failure
    tells the solution, by whether a next call comes, that its last answer was wrong."""

    def visit_Assert(self, node: ast.Assert):
        failed = ast.parse(f"{FAILURES}.append({node.lineno})").body[0]
        guard = ast.Try(
            body=[ast.If(test=ast.UnaryOp(op=ast.Not(), operand=node.test), body=[failed], orelse=[])],
            handlers=[ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None, body=[failed])],
            orelse=[], finalbody=[],
        )
        return ast.copy_location(guard, node)


def deferred_asserts(test: str) -> str:
    """TEST with its asserts deferred (see _DeferAsserts); it passes when FAILURES stays empty."""
    tree = ast.fix_missing_locations(_DeferAsserts().visit(ast.parse(test)))
    return f"{FAILURES} = []\n{ast.unparse(tree)}\n"


@builtin_reward("code", parallel="thread", bind=lambda options: {"timeout": options.code_timeout, "memory_mb": options.code_memory_mb})
def code(record: dict, timeout: float, memory_mb: int) -> float | None:
    """Run the response's last fenced Python block against the record's tests (r1cli.rewards.sandbox):
    1 when every test passes, else 0.

    HumanEval records (`test`, `entry_point`): the prompt and the block are the solution, the
    tests' `check(entry_point)` runs in the judge. MBPP records (`test_list`): every assert. All
    or nothing, because partial credit pays programs that solve nothing (a constant `True`
    passes some asserts of one MBPP task in five). A program that does not finish, exits early
    or returns anything but plain values fails.
    """
    _, response = reasoning_and_response(record)
    blocks = FENCE.findall(response)
    limits = Limits(timeout=timeout, memory_mb=memory_mb)
    _check_test_fields(record)
    if "test" in record and "entry_point" in record:
        if not blocks:
            return 0.0
        block, entry_point = blocks[-1], record["entry_point"]
        prompt = record["prompt"] if isinstance(record.get("prompt"), str) else ""
        stub = prompt + "    pass\n" if prompt.strip() else ""
        # A block that defines the function replaces the prompt's stub; one that does not is its body.
        head = stub if f"def {entry_point}" in block else prompt
        try:
            test = deferred_asserts(record["test"])
        except SyntaxError as error:
            raise UserError(f"{getattr(record, 'where', 'a record')}: field 'test' is not Python ({error.msg})") from None
        suite = TestSuite(setup=stub, tests=(f"{test}\ncheck({entry_point})\nassert not {FAILURES}\n",), names=(entry_point,))
        return float(all(run_tests(f"{head}\n{block}\n", suite, limits).passed))
    if "test_list" in record:
        if not blocks:
            return 0.0
        imports = "\n".join(record.get("test_imports") or [])
        suite = TestSuite(setup=imports, tests=tuple(record["test_list"]), names=function_names(record))
        return float(all(run_tests(f"{imports}\n{blocks[-1]}\n", suite, limits).passed))
    return None


def _check_test_fields(record: dict) -> None:
    """The tests are code the judge runs: each field must be what HumanEval or MBPP makes it."""
    where = getattr(record, "where", "a record")
    for name in ("test", "entry_point", "code_header", "code"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise UserError(f"{where}: field '{name}' must be a string, got {type(record[name]).__name__}")
    for name in ("test_list", "test_imports"):
        value = record.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(item, str) for item in value)):
            raise UserError(f"{where}: field '{name}' must be a list of strings (Python statements), got {type(value).__name__}")


def function_names(record: dict) -> tuple[str, ...] | None:
    """The functions an MBPP-style record tests, from the data (never from the completion): the
    `def` in its `code_header`, else the top-level `def`s of its reference `code`; None (the
    judge infers them from the asserts) when it has neither. A named function is called in the
    solution even where it shadows a builtin (MBPP has a task named `sum`)."""
    header = re.search(r"^\s*def\s+(\w+)", record.get("code_header") or "", re.MULTILINE)
    if header:
        return (header.group(1),)
    try:
        tree = ast.parse(record.get("code") or "")
    except SyntaxError:
        return None
    names = tuple(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
    return names or None
