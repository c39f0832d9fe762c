"""Every command on a catalogue of bad inputs.

Each case must end with exit status 2 and exactly one `error:` line on stderr that names what is
wrong (the file and line, the field, or the option and its valid values), with no traceback, and
must leave nothing behind: no output, no `.partial` or `.tmp-` file beside it, and an output that
already existed (or an input named as the output) byte-for-byte as it was.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli

from r1cli.toy.tokenizer import TOKENIZER_DIR

TINY_CONFIG = {
    "model_type": "qwen2", "tokenizer": str(TOKENIZER_DIR), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512, "tie_word_embeddings": True,
}
QUESTION = "Ann has 2 pens, gets 2. How many pens now?"
COMPLETION = "<think>2 plus 2 is 4.</think> The answer is \\boxed{4}."
TRAINING = {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": COMPLETION}]}
PROMPT = {"id": "p1", "prompt": QUESTION, "answer": "4"}
SAMPLE = {**PROMPT, "sample": 0, "completion": COMPLETION, "completion_tokens": 12, "finish_reason": "stop"}
METRICS = {"step": 1, "reward": 0.5, "loss": 1.0}
REPORT = {"overall": {"pass@1": 0.5, "pass@2": 0.75, "maj@2": 0.5, "format_rate": 1.0, "mean_completion_tokens": 12.0}}

# Small and fast: one step, two tokens, the CPU.
SFT = ["--max-steps", "1", "--batch-size", "2", "--max-length", "64", "--save-every", "0", "--device", "cpu"]
GRPO = ["--reward", "format", "--steps", "1", "--prompts-per-step", "1", "--num-generations", "2", "--max-new-tokens", "2",
        "--generation-batch-size", "4", "--save-every", "0", "--log-samples-every", "0", "--device", "cpu"]
SAMPLING = ["--max-new-tokens", "2", "--device", "cpu"]
EVAL = ["--n", "2", *SAMPLING]
DISTILL = ["--n", "1", "--max-new-tokens", "2", "--max-steps", "1", "--batch-size", "2", "--max-length", "64", "--save-every", "0",
           "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """One tiny random checkpoint for the module; each case works on its own copy."""
    import torch

    from r1cli.modeling import load_model
    from r1cli.train.checkpoint import write_loadable

    root = tmp_path_factory.mktemp("checkpoint")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    model, tokenizer = load_model(str(config), seed=0)
    write_loadable(root / "ckpt", model, tokenizer, torch.float32)
    return root / "ckpt"


class Env:
    """One case's workspace: the files it sets up, the outputs that must not appear, and the
    existing paths that must be left as they were."""

    def __init__(self, root: Path, checkpoint: Path):
        self.root, self._checkpoint = root, checkpoint
        self.outputs: list[Path] = []
        self.kept: list[Path] = []

    def path(self, name: str) -> str:
        return str(self.root / name)

    @property
    def ckpt(self) -> str:
        target = self.root / "ckpt"
        if not target.exists():
            shutil.copytree(self._checkpoint, target)
        return str(target)

    def corrupt_ckpt(self) -> str:
        Path(self.ckpt, "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not safetensors")
        return self.ckpt

    def config(self, name: str = "tiny.json", **changes) -> str:
        fields = {**TINY_CONFIG, **changes}
        return self.write(name, json.dumps({k: v for k, v in fields.items() if v is not None}))

    def write(self, name: str, data: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return str(path)

    def jsonl(self, name: str, *lines: dict | bytes) -> str:
        return self.write(name, b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines))

    def dir(self, name: str) -> str:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return self.path(name)

    def out(self, name: str) -> str:
        """An output path: it must not exist after the failed command."""
        self.outputs.append(self.root / name)
        return self.path(name)

    def keep(self, path: str) -> str:
        """An existing path (an output already there, or an input given as the output): unchanged after."""
        self.kept.append(Path(path))
        return path

    def existing_file(self, name: str, text: str = "precious\n") -> str:
        return self.keep(self.write(name, text))

    def existing_dir(self, name: str) -> str:
        self.write(f"{name}/precious.txt", "precious\n")
        return self.keep(self.path(name))


def snapshot(path: Path) -> dict[str, bytes] | bytes | None:
    if path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    return None


class DiskFull:
    """Every write into the case's directory fails with ENOSPC, as on a full disk."""

    def __init__(self, monkeypatch, root: Path):
        real_open, real_io_open = builtins.open, io.open

        def full(opener):
            def open_(file, mode="r", *args, **kwargs):
                handle = opener(file, mode, *args, **kwargs)
                if any(flag in mode for flag in "wax+") and str(os.fspath(file) if not isinstance(file, int) else "").startswith(str(root)):
                    return _Full(handle)
                return handle
            return open_

        monkeypatch.setattr(builtins, "open", full(real_open))
        monkeypatch.setattr(io, "open", full(real_io_open))


class _Full:
    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


@dataclass
class Case:
    id: str
    argv: Callable[[Env], list[str]]  # sets up the case's files as it builds the command line
    expect: tuple[str | Callable[[Env], str], ...]  # substrings of the error line (a callable gets the Env)
    setup: Callable[[Env, pytest.MonkeyPatch], None] | None = None  # e.g. a full disk
    resumable: bool = False  # a run that may leave its resumable state (a .partial, metrics), never a finished output


# ---------------------------------------------------------------- record-file readers


@dataclass
class Reader:
    """A command reading one JSONL file of records: how to run it on PATH, and what it requires."""

    name: str
    argv: Callable[[Env, str], list[str]]
    good: dict
    lacking: tuple[dict, str] | None  # a record without a required field, and what the error says
    empty: str  # what the error for an empty file says
    wrong_types: tuple[tuple[str, dict, str], ...] = ()  # (id, record, the field named)


def _eval(e: Env, data: str, *extra: str) -> list[str]:
    e.out("report.samples.jsonl")
    return ["eval", e.ckpt, data, "--out", e.out("report.json"), *EVAL, *extra]


PROMPT_TYPES = (
    ("answer-dict", {**PROMPT, "answer": {"value": 4}}, "'answer'"),
    ("id-list", {**PROMPT, "id": ["p", 1]}, "'id'"),
    ("prompt-number", {**PROMPT, "prompt": 17}, "'prompt'"),
    ("prompt-content-number", {**PROMPT, "prompt": [{"role": "user", "content": 17}]}, "prompt[0]"),
)
SAMPLE_TYPES = (
    ("completion-number", {**SAMPLE, "completion": 4}, "'completion'"),
    ("response-number", {**SAMPLE, "reasoning": "2 plus 2", "response": 4}, "'response'"),
    ("rewards-list", {**SAMPLE, "rewards": [1.0]}, "'rewards'"),
    ("id-list", {**SAMPLE, "id": ["p", 1]}, "'id'"),
    ("answer-dict", {**SAMPLE, "answer": {"value": 4}}, "'answer'"),
    ("prompt-number", {**SAMPLE, "prompt": 17}, "'prompt'"),
)
TRAINING_TYPES = (
    ("content-number", {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": 4}]}, "messages[1]"),
    ("role-unknown", {"messages": [{"role": "human", "content": QUESTION}, {"role": "assistant", "content": "4"}]}, "messages[0]"),
    ("text-number", {"text": 4}, "'text'"),
    ("completion-list", {"prompt": QUESTION, "completion": ["4"]}, "completion[0]"),  # a list is chat messages (TRL conversational)
)
LACKS_PROMPT = ({"question": QUESTION}, "missing field 'prompt'")
LACKS_COMPLETION = ({"prompt": QUESTION}, "missing field 'completion'")
LACKS_TRAINING = ({"question": QUESTION}, "not a training record")

READERS = [
    Reader("sft", lambda e, p: ["sft", e.ckpt, p, "--out", e.out("run"), *SFT], TRAINING, LACKS_TRAINING, "no records", TRAINING_TYPES),
    Reader("sft-eval-data", lambda e, p: ["sft", e.ckpt, e.jsonl("train.jsonl", TRAINING), "--eval-data", p, "--out", e.out("run"), *SFT],
           TRAINING, LACKS_TRAINING, "no records", TRAINING_TYPES[:1]),
    Reader("grpo", lambda e, p: ["grpo", e.ckpt, p, "--out", e.out("run"), *GRPO], PROMPT, LACKS_PROMPT, "prompts", PROMPT_TYPES),
    Reader("sample", lambda e, p: ["sample", e.ckpt, p, "--out", e.out("samples.jsonl"), *SAMPLING], PROMPT, LACKS_PROMPT, "no prompts",
           PROMPT_TYPES),
    Reader("eval", _eval, PROMPT, LACKS_PROMPT, "no prompts", PROMPT_TYPES),
    Reader("eval-samples", lambda e, p: ["eval", "--samples", p, "--out", e.out("report.json")], SAMPLE, LACKS_COMPLETION, "no records",
           (*SAMPLE_TYPES, ("sample-string", {**SAMPLE, "sample": "zero"}, "'sample'"),
            ("tokens-string", {**SAMPLE, "completion_tokens": "12"}, "'completion_tokens'"))),
    Reader("filter", lambda e, p: ["filter", p, "--out", e.out("kept.jsonl")], SAMPLE, LACKS_COMPLETION, "no records", SAMPLE_TYPES),
    Reader("mix", lambda e, p: ["mix", p, "--out", e.out("mix.jsonl")], TRAINING, LACKS_TRAINING, "no records", TRAINING_TYPES),
    Reader("mix-prompts", lambda e, p: ["mix", p, "--out", e.out("mix.jsonl")], PROMPT, None, "no records", PROMPT_TYPES),
    Reader("distill", lambda e, p: ["distill", e.ckpt, e.ckpt, p, "--out", e.out("run"), *DISTILL], PROMPT, LACKS_PROMPT, "no prompts",
           PROMPT_TYPES[:2]),
    Reader("distill-traces", lambda e, p: ["distill", e.ckpt, e.ckpt, "--traces", p, "--out", e.out("run"), *DISTILL], SAMPLE,
           LACKS_COMPLETION, "no records", SAMPLE_TYPES[:1]),
    Reader("plot", lambda e, p: ["plot", p, "--out", e.out("curves.png")], METRICS, None, "no records",
           (("step-string", {**METRICS, "step": "one"}, "'step'"),)),
]


def reader_cases(reader: Reader) -> list[Case]:
    def on(make_path: Callable[[Env], str]) -> Callable[[Env], list[str]]:
        return lambda e: reader.argv(e, make_path(e))

    bad_line = "records.jsonl:2"
    cases = [
        Case(f"{reader.name}/input-is-a-directory", on(lambda e: e.dir("records.jsonl")), ("records.jsonl", "is a directory")),
        Case(f"{reader.name}/missing-file", on(lambda e: e.path("records.jsonl")), ("records.jsonl", "no such file")),
        Case(f"{reader.name}/empty-file", on(lambda e: e.write("records.jsonl", "")), ("records.jsonl", reader.empty)),
        Case(f"{reader.name}/not-utf8", on(lambda e: e.jsonl("records.jsonl", reader.good, b'{"prompt": "caf\xe9"}')), (bad_line, "UTF-8")),
        Case(f"{reader.name}/invalid-json", on(lambda e: e.jsonl("records.jsonl", reader.good, b'{"prompt": "x",')), (bad_line, "not valid JSON")),
        Case(f"{reader.name}/not-an-object", on(lambda e: e.jsonl("records.jsonl", reader.good, b"[1, 2]")), (bad_line, "JSON object")),
    ]
    if reader.lacking:
        record, message = reader.lacking
        cases.append(Case(f"{reader.name}/missing-required-field", on(lambda e, record=record: e.jsonl("records.jsonl", reader.good, record)),
                          (bad_line, message)))
    for name, record, field in reader.wrong_types:
        cases.append(Case(f"{reader.name}/{name}", on(lambda e, record=record: e.jsonl("records.jsonl", reader.good, record)), (bad_line, field)))
    return cases


# ---------------------------------------------------------------- the commands, one at a time


def sft(e: Env, *extra: str, model: str | None = None) -> list[str]:
    return ["sft", model or e.ckpt, e.jsonl("train.jsonl", TRAINING, TRAINING), "--out", e.out("run"), *SFT, *extra]


def grpo(e: Env, *extra: str, model: str | None = None) -> list[str]:
    return ["grpo", model or e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", e.out("run"), *GRPO, *extra]


def sample(e: Env, *extra: str, model: str | None = None) -> list[str]:
    return ["sample", model or e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", e.out("samples.jsonl"), *SAMPLING, *extra]


def evaluate(e: Env, *extra: str, model: str | None = None) -> list[str]:
    return _eval(e, e.jsonl("data.jsonl", PROMPT), *extra) if model is None else _eval_model(e, model, *extra)


def _eval_model(e: Env, model: str, *extra: str) -> list[str]:
    e.out("report.samples.jsonl")
    return ["eval", model, e.jsonl("data.jsonl", PROMPT), "--out", e.out("report.json"), *EVAL, *extra]


def eval_samples(e: Env, *extra: str) -> list[str]:
    samples = e.jsonl("samples.jsonl", SAMPLE, {**SAMPLE, "sample": 1})
    return ["eval", "--samples", samples, "--out", e.out("report.json"), *extra]


def filter_(e: Env, *extra: str, records: tuple[dict, ...] = (SAMPLE,)) -> list[str]:
    return ["filter", e.jsonl("samples.jsonl", *records), "--out", e.out("kept.jsonl"), *extra]


def mix(e: Env, *specs: str, extra: tuple[str, ...] = ()) -> list[str]:
    e.jsonl("a.jsonl", TRAINING)
    e.jsonl("b.jsonl", {"text": "general text"})
    return ["mix", *(e.path(spec) for spec in specs), "--out", e.out("mix.jsonl"), *extra]


def distill(e: Env, *extra: str, model: str | None = None, student: str | None = None) -> list[str]:
    return ["distill", model or e.ckpt, student or e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", e.out("run"), *DISTILL, *extra]


def distill_traces(e: Env, *extra: str, student: str | None = None) -> list[str]:
    return ["distill", e.ckpt, student or e.ckpt, "--traces", e.jsonl("traces.jsonl", SAMPLE), "--out", e.out("run"), *DISTILL, *extra]


def summary(e: Env, *specs: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["summary", *specs, "--out", e.out("summary.json"), *extra]


def report(e: Env, value=REPORT, name: str = "base.json") -> str:
    return f"base={e.write(name, json.dumps(value))}"


def plot(e: Env, *extra: str, records: tuple[dict, ...] = (METRICS, {**METRICS, "step": 2})) -> list[str]:
    return ["plot", e.jsonl("metrics.jsonl", *records), "--out", e.out("curves.png"), *extra]


def run_dir(e: Env, name: str = "runs/run") -> str:
    """A finished run as r1 leaves one (its lineage and metrics), for `r1 report`."""
    e.write(f"{name}/r1.json", json.dumps({"command": "grpo", "argv": ["r1", "grpo"], "options": {}, "parent": {}, "step": 2}))
    e.jsonl(f"{name}/metrics.jsonl", METRICS, {**METRICS, "step": 2})
    return e.path(name)


def broken_run(e: Env, name: str, data: str | bytes) -> str:
    """A run whose file NAME holds DATA."""
    run = run_dir(e)
    e.write(f"runs/run/{name}", data)
    return run


def report_page(e: Env, *run_dirs: str) -> list[str]:
    return ["report", *(run_dirs or (run_dir(e),)), "--out", e.out("report.html")]


def disk_full(e: Env, monkeypatch) -> None:
    DiskFull(monkeypatch, e.root)


MODEL_COMMANDS = {"sft": sft, "grpo": grpo, "sample": sample, "eval": evaluate, "distill": distill}
SAMPLING_COMMANDS = {"sample": sample, "eval": evaluate, "grpo": grpo, "distill": distill}
NOT_A_MODEL_TYPE = ("nope", "model_type")


def model_cases() -> list[Case]:
    cases = []
    for name, command in MODEL_COMMANDS.items():
        cases += [
            Case(f"{name}/corrupt-safetensors", lambda e, c=command: c(e, model=e.corrupt_ckpt()), (lambda e: e.ckpt, "cannot load the model")),
            Case(f"{name}/device-foo", lambda e, c=command: c(e, "--device", "foo"), ("--device 'foo'", "auto, cpu, cuda")),
        ]
        if name != "eval":  # eval has no --dtype
            cases.append(Case(f"{name}/dtype-nope", lambda e, c=command: c(e, "--dtype", "nope"), ("--dtype 'nope'", "bf16")))
    cases += [
        Case("distill/corrupt-student", lambda e: distill_traces(e, student=e.corrupt_ckpt()), (lambda e: e.ckpt, "cannot load the model")),
        Case("sample/checkpoint-without-config", lambda e: sample(e, model=e.dir("empty-ckpt")), ("empty-ckpt", "not a checkpoint directory")),
        Case("sample/device-cuda-99", lambda e: sample(e, "--device", "cuda:99"), ("--device cuda:99",)),
        Case("sample/engine-nope", lambda e: sample(e, "--engine", "nope"), ("--engine 'nope'", "hf, vllm")),
        Case("eval/engine-nope", lambda e: evaluate(e, "--engine", "nope"), ("--engine 'nope'", "hf, vllm")),
    ]
    configs = {
        "unknown-model-type": (lambda e: e.config(model_type="nope"), ("tiny.json", "nope")),
        "negative-size": (lambda e: e.config(hidden_size=-32), ("tiny.json", "model config")),
        "size-a-string": (lambda e: e.config(num_hidden_layers="two"), ("tiny.json", "model config")),
        "not-json": (lambda e: e.write("tiny.json", '{"model_type": "qwen2",'), ("tiny.json", "not valid JSON")),
        "not-utf8": (lambda e: e.write("tiny.json", b'{"model_type": "qwen\xe9"}'), ("tiny.json", "UTF-8")),
        "missing-model-type": (lambda e: e.config(model_type=None), ("tiny.json", "model_type")),
        "a-list": (lambda e: e.write("tiny.json", "[1, 2]"), ("tiny.json", "model_type")),
        "tokenizer-missing": (lambda e: e.config(tokenizer="no-such-tokenizer"), ("tiny.json", "'tokenizer'", "no-such-tokenizer")),
        "vocab-too-small": (lambda e: e.config(vocab_size=3), ("tiny.json", "vocab_size")),
    }
    for name, (config, expect) in configs.items():
        cases.append(Case(f"sft/config-{name}", lambda e, c=config: sft(e, model=c(e)), expect))
    cases.append(Case("distill/student-config-unknown-model-type", lambda e: distill_traces(e, student=e.config(model_type="nope")), ("tiny.json", "nope")))
    cases.append(Case("sample/config-negative-size", lambda e: sample(e, model=e.config(hidden_size=-32)), ("tiny.json", "model config")))
    return cases


def sampling_cases() -> list[Case]:
    cases = []
    for name, command in SAMPLING_COMMANDS.items():
        for value in ("0", "1.5", "nan"):
            cases.append(Case(f"{name}/top-p-{value}", lambda e, c=command, v=value: c(e, "--top-p", v), ("--top-p", "(0, 1]")))
        for value in ("-1", "nan"):
            cases.append(Case(f"{name}/temperature-{value}", lambda e, c=command, v=value: c(e, "--temperature", v), ("--temperature",)))
        cases.append(Case(f"{name}/template-nope", lambda e, c=command: c(e, "--template", "nope"), ("--template", "nope", "chat, r1-zero")))
    for name, command in (("sample", sample), ("eval", evaluate), ("distill", distill)):
        cases.append(Case(f"{name}/n-0", lambda e, c=command: c(e, "--n", "0"), ("--n",)))
    cases += [
        Case("grpo/temperature-0", lambda e: grpo(e, "--temperature", "0"), ("--temperature 0",)),
        Case("grpo/num-generations-1", lambda e: grpo(e, "--num-generations", "1"), ("--num-generations",)),
        Case("sample/top-k--1", lambda e: sample(e, "--top-k", "-1"), ("--top-k",)),
        Case("sample/max-new-tokens-0", lambda e: sample(e, "--max-new-tokens", "0"), ("--max-new-tokens",)),
        Case("sample/stop-empty", lambda e: sample(e, "--stop", ""), ("--stop",)),
        Case("sample/shard-2-of-2", lambda e: sample(e, "--shard", "2/2"), ("--shard '2/2'", "0 <= I < N")),
        Case("sample/shard-x", lambda e: sample(e, "--shard", "x"), ("--shard 'x'", "I/N")),
        Case("sample/shard-0-of-0", lambda e: sample(e, "--shard", "0/0"), ("--shard '0/0'",)),
        Case("sample/shard-3-parts", lambda e: sample(e, "--shard", "0/1/2"), ("--shard '0/1/2'", "I/N")),
        Case("eval/k-above-n", lambda e: evaluate(e, "--k", "1,4"), ("--k 1,4", "--n is 2")),
        Case("eval/k-0", lambda e: evaluate(e, "--k", "0"), ("--k '0'", "at least 1")),
        Case("eval/k-x", lambda e: evaluate(e, "--k", "x"), ("--k 'x'", "integers")),
        Case("eval/samples-k-above-samples", lambda e: eval_samples(e, "--k", "3"), ("--k 3", "k <= n")),
        Case("eval/samples-and-model", lambda e: eval_samples(e) + [e.ckpt], ("either MODEL DATA",)),
        Case("eval/no-model", lambda e: ["eval", e.jsonl("data.jsonl", PROMPT), "--out", e.out("report.json")], ("MODEL and DATA",)),
    ]
    return cases


REWARDS = {"filter": filter_, "grpo": grpo, "eval": evaluate, "distill": distill, "eval-samples": eval_samples}


def reward_cases() -> list[Case]:
    cases = []
    for name, command in REWARDS.items():
        cases += [
            Case(f"{name}/reward-nope", lambda e, c=command: c(e, "--reward", "nope"), ("'nope'", "accuracy, format")),
            Case(f"{name}/reward-weight-abc", lambda e, c=command: c(e, "--reward", "format=abc"), ("--reward 'format=abc'", "'abc'")),
        ]
    for name, command in (("filter", filter_), ("grpo", grpo)):
        for value in ("nan", "inf"):
            cases.append(Case(f"{name}/reward-weight-{value}", lambda e, c=command, v=value: c(e, "--reward", f"tags={v}"),
                              (f"--reward 'tags={value}'",)))
    cases += [
        Case("grpo/reward-named-twice", lambda e: grpo(e, "--reward", "format"), ("named twice",)),
        Case("filter/reward-module-missing", lambda e: filter_(e, "--reward", "no_such_module_r1:score", "--min", "accuracy=1"),
             ("no_such_module_r1",)),
        Case("filter/code-test-list-a-string",
             lambda e: filter_(e, "--reward", "code", "--min", "code=1",
                               records=({**SAMPLE, "completion": "<think>t</think> ```python\ndef f(x):\n    return x\n```", "test_list": "assert f(1) == 1"},)),
             ("samples.jsonl:1", "'test_list'")),
        Case("filter/overlong-tokens-a-string",
             lambda e: filter_(e, "--reward", "overlong", "--overlong-length", "64", "--min", "overlong=0", records=({**SAMPLE, "completion_tokens": "many"},)),
             ("samples.jsonl:1", "'completion_tokens'")),
    ]
    return cases


def option_cases() -> list[Case]:
    return [
        # filter
        Case("filter/min-x-nan", lambda e: filter_(e, "--min", "accuracy=nan"), ("--min 'accuracy=nan'", "finite")),
        Case("filter/min-no-value", lambda e: filter_(e, "--min", "accuracy"), ("--min 'accuracy'", "NAME=VALUE")),
        Case("filter/min-twice", lambda e: filter_(e, "--min", "accuracy=1", "--min", "accuracy=0"), ("--min 'accuracy=0'", "already")),
        Case("filter/min-no-name", lambda e: filter_(e, "--min", "=1"), ("--min '=1'", "NAME=VALUE")),
        Case("filter/min-not-scored", lambda e: filter_(e, "--min", "format=1"), ("--min format", "not a reward being scored")),
        Case("filter/max-paragraph-chars--1", lambda e: filter_(e, "--max-paragraph-chars", "-1"), ("--max-paragraph-chars -1",)),
        Case("filter/max-paragraph-chars-0", lambda e: filter_(e, "--max-paragraph-chars", "0"), ("--max-paragraph-chars 0",)),
        Case("filter/per-prompt-0", lambda e: filter_(e, "--per-prompt", "0"), ("--per-prompt '0'", "all, best")),
        Case("filter/per-prompt-x", lambda e: filter_(e, "--per-prompt", "x"), ("--per-prompt 'x'", "all, best")),
        Case("filter/near-duplicate-0", lambda e: filter_(e, "--dedupe", "--near-duplicate", "0"), ("--near-duplicate",)),
        Case("filter/near-duplicate-nan", lambda e: filter_(e, "--dedupe", "--near-duplicate", "nan"), ("--near-duplicate",)),
        Case("filter/overlong-length-0", lambda e: filter_(e, "--reward", "overlong", "--overlong-length", "0"), ("--overlong-length",)),
        Case("filter/overlong-buffer--1", lambda e: filter_(e, "--reward", "overlong", "--overlong-buffer", "-1"), ("--overlong-buffer",)),
        Case("distill/min-x-nan", lambda e: distill_traces(e, "--min", "accuracy=nan"), ("--min 'accuracy=nan'", "finite")),
        Case("distill/per-prompt-0", lambda e: distill_traces(e, "--per-prompt", "0"), ("--per-prompt '0'",)),
        Case("distill/kd-weight-nan", lambda e: distill_traces(e, "--kd-weight", "nan"), ("--kd-weight",)),
        # mix
        Case("mix/weight-inf", lambda e: mix(e, "a.jsonl:inf"), ("a.jsonl:inf", "finite number >= 0")),
        Case("mix/weight-nan", lambda e: mix(e, "a.jsonl:nan"), ("a.jsonl:nan", "finite number >= 0")),
        Case("mix/weight--1", lambda e: mix(e, "a.jsonl:-1", "b.jsonl"), ("a.jsonl:-1:", "finite number >= 0")),
        Case("mix/weights-all-0-with-total", lambda e: mix(e, "a.jsonl:0", "b.jsonl:0", extra=("--total", "4")), ("weights", "0")),
        Case("mix/total-0", lambda e: mix(e, "a.jsonl", extra=("--total", "0")), ("--total",)),
        Case("mix/prompts-with-training", lambda e: mix(e, "a.jsonl", e.jsonl("p.jsonl", PROMPT)), ("cannot mix prompt records",)),
        Case("mix/source-weighted-directory", lambda e: mix(e, e.dir("d.jsonl") + ":2"), ("d.jsonl", "directory")),
        # grpo
        Case("grpo/loss-nope", lambda e: grpo(e, "--loss", "nope"), ("--loss 'nope'", "grpo, dapo")),
        Case("grpo/scale-rewards-nope", lambda e: grpo(e, "--scale-rewards", "nope"), ("--scale-rewards 'nope'", "group")),
        Case("grpo/prompts-per-step-above-prompts", lambda e: grpo(e, "--prompts-per-step", "5"), ("prompts.jsonl", "--prompts-per-step 5")),
        Case("grpo/beta--1", lambda e: grpo(e, "--beta", "-1"), ("--beta",)),
        Case("grpo/epsilon--1", lambda e: grpo(e, "--epsilon", "-1"), ("--epsilon",)),
        Case("grpo/lr-nan", lambda e: grpo(e, "--lr", "nan"), ("--lr",)),
        Case("grpo/lora-targets-nonexistent", lambda e: grpo(e, "--lora-r", "2", "--lora-targets", "nonexistent"), ("--lora-targets",)),
        # sft
        Case("sft/schedule-nope", lambda e: sft(e, "--schedule", "nope"), ("--schedule 'nope'", "cosine, linear, constant")),
        Case("sft/warmup--1", lambda e: sft(e, "--warmup", "-1"), ("--warmup",)),
        Case("sft/warmup-nan", lambda e: sft(e, "--warmup", "nan"), ("--warmup",)),
        Case("sft/template-nope", lambda e: sft(e, "--template", "nope"), ("--template 'nope'", "auto, chat, r1-zero, plain")),
        Case("sft/lora-targets-nonexistent", lambda e: sft(e, "--lora-r", "2", "--lora-targets", "nonexistent"), ("--lora-targets nonexistent",)),
        Case("sft/epochs-0", lambda e: ["sft", e.ckpt, e.jsonl("train.jsonl", TRAINING), "--out", e.out("run"), "--epochs", "0",
                                        *SFT[2:]], ("--epochs",)),
        Case("sft/lr-nan", lambda e: sft(e, "--lr", "nan"), ("--lr",)),
        Case("sft/lr--1", lambda e: sft(e, "--lr", "-1"), ("--lr",)),
        Case("sft/weight-decay--1", lambda e: sft(e, "--weight-decay", "-1"), ("--weight-decay",)),
        Case("sft/min-lr-ratio-2", lambda e: sft(e, "--min-lr-ratio", "2"), ("--min-lr-ratio",)),
        Case("sft/lora-dropout-1.5", lambda e: sft(e, "--lora-r", "2", "--lora-dropout", "1.5"), ("--lora-dropout",)),
        # summary
        Case("summary/not-an-eval-report", lambda e: summary(e, report(e, {"step": 1})), ("base.json", "not an `r1 eval` report")),
        Case("summary/report-a-list", lambda e: summary(e, report(e, [1, 2])), ("base.json", "not an `r1 eval` report")),
        Case("summary/report-not-json", lambda e: summary(e, "base=" + e.write("base.json", "{")), ("base.json", "not valid JSON")),
        Case("summary/report-not-utf8", lambda e: summary(e, "base=" + e.write("base.json", b'{"overall": "\xe9"}')), ("base.json", "UTF-8")),
        Case("summary/report-missing", lambda e: summary(e, "base=" + e.path("base.json")), ("base.json", "no such file")),
        Case("summary/report-a-directory", lambda e: summary(e, "base=" + e.dir("base.json")), ("base.json", "is a directory")),
        Case("summary/no-equals", lambda e: summary(e, e.write("base.json", json.dumps(REPORT))), ("base.json", "NAME=REPORT.json")),
        Case("summary/empty-name", lambda e: summary(e, "=" + e.write("base.json", json.dumps(REPORT))), ("NAME=REPORT.json",)),
        Case("summary/values-not-numbers", lambda e: summary(e, report(e, {"overall": {"pass@1": "high", "format_rate": [1]}})),
             ("base.json", "pass@1")),
        Case("summary/pass-at-not-a-number", lambda e: summary(e, report(e, {"overall": {"pass@1": 0.5, "pass@all": 0.9}})),
             ("base.json", "pass@all")),
        Case("summary/name-twice", lambda e: summary(e, report(e), report(e, name="other.json")), ("'base'", "twice")),
        Case("summary/since-nan", lambda e: summary(e, report(e), extra=("--since", "nan")), ("--since",)),
        Case("summary/markdown-a-directory", lambda e: summary(e, report(e), extra=("--markdown", e.existing_dir("table.md"))),
             ("--markdown", "table.md", "is a directory")),
        Case("summary/markdown-is-the-report", lambda e: summary(e, report(e), extra=("--markdown", e.keep(e.path("base.json")))),
             ("--markdown", "base.json", "is also an input")),
        # plot
        Case("plot/metric-not-logged", lambda e: plot(e, "--metric", "nope"), ("nope", "reward")),
        Case("plot/no-default-metric-logged", lambda e: plot(e, records=({"step": 1, "tokens_seen": 1.0},)), ("--metric", "tokens_seen")),
        Case("plot/label-count", lambda e: plot(e, "--label", "a", "--label", "b"), ("--label",)),
        Case("plot/smooth-0", lambda e: plot(e, "--smooth", "0"), ("--smooth",)),
        # report
        Case("report/run-dir-missing", lambda e: report_page(e, e.path("runs")), ("runs", "no such directory")),
        Case("report/run-dir-a-file", lambda e: report_page(e, e.write("runs", "x")), ("runs", "is a file")),
        Case("report/no-runs-inside", lambda e: report_page(e, e.dir("runs/data")), ("runs/data", "holds no r1 run")),
        Case("report/one-of-two-missing", lambda e: report_page(e, run_dir(e), e.path("other")), ("other", "no such directory")),
        Case("report/samples-bad-line", lambda e: report_page(e, broken_run(e, "samples.jsonl", '{"step": 1}\n{\n')),
             ("samples.jsonl:2", "not valid JSON")),
        Case("report/samples-step-a-string", lambda e: report_page(e, broken_run(e, "samples.jsonl", '{"step": "one"}\n')),
             ("samples.jsonl:1", "'step'")),
        Case("report/metrics-bad-line", lambda e: report_page(e, broken_run(e, "metrics.jsonl", json.dumps(METRICS) + "\n[1]\n")),
             ("metrics.jsonl:2", "JSON object")),
        Case("report/lineage-not-json", lambda e: report_page(e, broken_run(e, "r1.json", "{")), ("r1.json", "not a readable r1.json")),
        Case("report/smooth-0", lambda e: report_page(e) + ["--smooth", "0"], ("--smooth",)),
        # toy
        Case("toy/base-size-nope", lambda e: ["toy", "base", e.out("toy-ckpt"), "--size", "nope"], ("--size 'nope'", "base, student")),
        Case("toy/data-into-a-file", lambda e: ["toy", "data", e.existing_file("world")], ("world", "is a file")),
        Case("toy/base-into-a-foreign-directory", lambda e: ["toy", "base", e.existing_dir("toy-ckpt"), "--max-steps", "1"],
             ("toy-ckpt", "not an r1 run directory")),
        Case("toy/base-into-a-file", lambda e: ["toy", "base", e.existing_file("toy-ckpt"), "--max-steps", "1"], ("toy-ckpt", "is a file")),
    ]


def output_cases() -> list[Case]:
    file_outputs = {
        "sample": lambda e, o: ["sample", e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", o, *SAMPLING],
        "filter": lambda e, o: ["filter", e.jsonl("samples.jsonl", SAMPLE), "--out", o],
        "mix": lambda e, o: ["mix", e.jsonl("a.jsonl", TRAINING), "--out", o],
        "eval": lambda e, o: ["eval", e.ckpt, e.jsonl("data.jsonl", PROMPT), "--out", o, *EVAL],
        "eval-samples": lambda e, o: ["eval", "--samples", e.jsonl("samples.jsonl", SAMPLE), "--out", o],
        "summary": lambda e, o: ["summary", report(e), "--out", o],
        "plot": lambda e, o: ["plot", e.jsonl("metrics.jsonl", METRICS), "--out", o],
        "report": lambda e, o: ["report", run_dir(e), "--out", o],
    }
    own_input = {
        "sample": lambda e: ["sample", e.ckpt, e.keep(e.jsonl("prompts.jsonl", PROMPT)), "--out", e.path("prompts.jsonl"), *SAMPLING],
        "filter": lambda e: ["filter", e.keep(e.jsonl("samples.jsonl", SAMPLE)), "--out", e.path("samples.jsonl")],
        "mix": lambda e: ["mix", e.keep(e.jsonl("a.jsonl", TRAINING)), "--out", e.path("a.jsonl")],
        "mix-weighted": lambda e: ["mix", e.keep(e.jsonl("a.jsonl", TRAINING)) + ":2", "--out", e.path("a.jsonl")],
        "eval": lambda e: ["eval", e.ckpt, e.keep(e.jsonl("data.jsonl", PROMPT)), "--out", e.path("data.jsonl"), *EVAL],
        "eval-samples-file": lambda e: ["eval", e.ckpt, e.keep(e.jsonl("report.samples.jsonl", PROMPT)), "--out", e.path("report.json"), *EVAL],
        "eval-samples": lambda e: ["eval", "--samples", e.keep(e.jsonl("samples.jsonl", SAMPLE)), "--out", e.path("samples.jsonl")],
        "summary": lambda e: ["summary", report(e), "--out", e.keep(e.path("base.json"))],
        "plot": lambda e: ["plot", e.keep(e.jsonl("metrics.jsonl", METRICS)), "--out", e.path("metrics.jsonl")],
        "report-metrics": lambda e: ["report", run_dir(e), "--out", e.keep(e.path("runs/run/metrics.jsonl"))],
        "report-summary": lambda e: ["report", run_dir(e) and e.path("runs"), "--out",
                                     e.keep(e.write("runs/summary.json", json.dumps({"checkpoints": {"run": REPORT["overall"]}})))],
        "report-run-dir": lambda e: ["report", e.keep(run_dir(e)), "--out", e.path("runs/run")],
        "sft": lambda e: ["sft", e.keep(e.ckpt), e.jsonl("train.jsonl", TRAINING), "--out", e.ckpt, *SFT],
        "sft-data": lambda e: ["sft", e.ckpt, e.keep(e.jsonl("train.jsonl", TRAINING)), "--out", e.path("train.jsonl"), *SFT],
        "grpo": lambda e: ["grpo", e.keep(e.ckpt), e.jsonl("prompts.jsonl", PROMPT), "--out", e.ckpt, *GRPO],
        "distill": lambda e: ["distill", e.keep(e.ckpt), e.config(), e.jsonl("prompts.jsonl", PROMPT), "--out", e.ckpt, *DISTILL],
    }
    run_outputs = {
        "sft": lambda e, o: ["sft", e.ckpt, e.jsonl("train.jsonl", TRAINING), "--out", o, *SFT],
        "grpo": lambda e, o: ["grpo", e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", o, *GRPO],
        "distill": lambda e, o: ["distill", e.ckpt, e.ckpt, e.jsonl("prompts.jsonl", PROMPT), "--out", o, *DISTILL],
    }
    cases = []
    for name, argv in file_outputs.items():
        cases.append(Case(f"{name}/out-an-existing-directory", lambda e, a=argv: a(e, e.existing_dir("output")), ("--out", "output", "is a directory")))
    cases.append(Case("sample/out-a-file-r1-did-not-write", lambda e: file_outputs["sample"](e, e.existing_file("output.jsonl")),
                      ("--out", "output.jsonl", "not written by r1 sample")))
    for name, argv in own_input.items():
        cases.append(Case(f"{name}/out-is-an-input", argv, ("--out",)))
    for name, argv in run_outputs.items():
        cases.append(Case(f"{name}/out-an-existing-file", lambda e, a=argv: a(e, e.existing_file("run")), ("--out", "run", "is a file")))
        cases.append(Case(f"{name}/out-a-foreign-directory", lambda e, a=argv: a(e, e.existing_dir("run")), ("--out", "run", "not an r1 run directory")))
    return cases


def environment_cases() -> list[Case]:
    space = ("no space left",)
    return [
        Case("filter/disk-full", filter_, ("kept.jsonl: no space left",), setup=disk_full),
        Case("mix/disk-full", lambda e: mix(e, "a.jsonl"), ("mix.jsonl: no space left",), setup=disk_full),
        Case("eval-samples/disk-full", eval_samples, ("report.json: no space left",), setup=disk_full),
        Case("summary/disk-full", lambda e: summary(e, report(e)), ("summary.json: no space left",), setup=disk_full),
        Case("plot/disk-full", plot, ("curves.png: no space left",), setup=disk_full),
        Case("report/disk-full", report_page, ("report.html: no space left",), setup=disk_full),
        Case("toy/data-disk-full", lambda e: ["toy", "data", e.out("world")], ("world", "no space left"), setup=disk_full),
        Case("sample/disk-full", sample, space, setup=disk_full, resumable=True),
        Case("sft/disk-full", sft, space, setup=disk_full, resumable=True),
        # Positions and names that rich would read as emoji codes or markup are printed as they are.
        Case("mix/colon-minus-one-verbatim", lambda e: mix(e, "a.jsonl:-1"), (lambda e: e.path("a.jsonl:-1: a weight"),)),
        Case("filter/emoji-code-in-a-name", lambda e: ["filter", e.path(":smile:.jsonl"), "--out", e.out("kept.jsonl")], (":smile:.jsonl: no such file",)),
        Case("filter/markup-in-a-name", lambda e: ["filter", e.path("[red]x[/red].jsonl"), "--out", e.out("kept.jsonl")], ("[red]x[/red].jsonl",)),
    ]


CASES = [case for reader in READERS for case in reader_cases(reader)] + model_cases() + sampling_cases() + reward_cases() \
    + option_cases() + output_cases() + environment_cases()


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, checkpoint, tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, checkpoint)
    argv = case.argv(env)
    before = {path: snapshot(path) for path in env.kept}
    if case.setup:
        case.setup(env, monkeypatch)
    try:
        status, out, err = run_cli(monkeypatch, capsys, *argv)
    except Exception as error:  # noqa: BLE001 - an exception escaping the CLI is the failure being looked for
        monkeypatch.undo()
        pytest.fail(f"traceback: {type(error).__name__}: {error}")
    monkeypatch.undo()

    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert status == 2, f"exit {status}; stderr:\n{err}"
    if case.resumable:  # it failed mid-run: its progress lines come first, then the one error
        assert lines and sum(line.startswith("error: ") for line in lines) == 1 and lines[-1].startswith("error: "), err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line:\n{err}"
    for expected in case.expect:
        text = expected(env) if callable(expected) else expected
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert "\N{THUMBS DOWN SIGN}" not in err and "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in err
    for path, content in before.items():
        assert snapshot(path) == content, f"{path} was changed"
    for output in env.outputs:
        if case.resumable:
            assert not (output / "r1.json").exists() and not (output.is_file() and output.suffix == ".jsonl"), f"{output} looks finished"
        else:
            assert not output.exists(), f"{output} was left behind"
            assert not Path(f"{output}.partial").exists(), f"{output}.partial was left behind"
            assert not Path(f"{output}.r1.json").exists(), f"{output}.r1.json was left behind"
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name.endswith(".lock")]
    assert not leftovers, f"left behind: {leftovers}"


# ---------------------------------------------------------------- a corrupt .partial is repaired, not fatal


def test_a_corrupt_line_in_the_middle_of_a_partial_is_dropped_and_sampled_again(checkpoint, tmp_path, monkeypatch, capsys):
    env = Env(tmp_path, checkpoint)
    prompts = env.jsonl("prompts.jsonl", *({"id": f"p{i}", "prompt": f"{i} + 2?", "answer": str(i + 2)} for i in range(3)))
    out = tmp_path / "samples.jsonl"
    argv = ["sample", env.ckpt, prompts, "--out", str(out), "--n", "2", *SAMPLING]
    status, _, err = run_cli(monkeypatch, capsys, *argv)
    assert status == 0, err
    whole = out.read_text().splitlines()
    assert len(whole) == 6
    # A finished file reopened (a larger --n) and then damaged in the middle.
    partial = Path(f"{out}.partial")
    out.rename(partial)
    partial.write_text("\n".join(whole[:2] + ['{"id": "p1", "sample": 0, "compl\x00etion": '] + whole[3:]) + "\n")

    status, _, err = run_cli(monkeypatch, capsys, *argv)
    assert status == 0 and "Traceback" not in err, err
    assert "dropped" in err and "sampled again" in err, err
    again = out.read_text().splitlines()
    assert sorted(again) == sorted(whole) and not partial.exists()
    assert json.loads(Path(f"{out}.r1.json").read_text())["complete"] is True
