"""`r1 report`: one self-contained HTML page for a pipeline's runs, checked on a tiny real pipeline
(sft -> grpo -> eval -> summary) and on hand-made runs, and rendered in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from browser import HOW_TO_GET_ONE, find_chromium, render
from conftest import run_cli, write_jsonl

from r1cli.toy.tokenizer import TOKENIZER_DIR

TINY = {"model_type": "qwen2", "tokenizer": str(TOKENIZER_DIR), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 512, "tie_word_embeddings": True}
ATTACK = "</details></pre><script>alert(1)</script><img src=x onerror=alert(2)>"


# ---------------------------------------------------------------- reading the page back


@dataclass
class Element:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)  # Elements and strings

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str, **attrs) -> list[Element]:
        found = []
        for child in self.children:
            if isinstance(child, Element):
                if child.tag == tag and all(attrs[k] in (child.attrs.get(k) or "").split() for k in attrs):
                    found.append(child)
                found += child.all(tag, **attrs)
        return found


class Tree(HTMLParser):
    """The page as a tree, the way a browser's tokenizer splits it (an unescaped tag in a
    completion would show up here as an element)."""

    VOID = {"meta", "img", "br", "hr", "input", "link"}

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.starts: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs))
        self.starts.append(tag)
        self.stack[-1].children.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def page_of(path: Path) -> tuple[str, Element, Tree]:
    page = path.read_text(encoding="utf-8")
    tree = Tree(page)
    assert tree.stack == [tree.root], "unclosed elements"
    return page, tree.root, tree


def lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def sections(root: Element) -> list[Element]:
    return root.all("section", **{"class": "stage"})


# ---------------------------------------------------------------- a tiny real pipeline


def cli(*argv: str) -> None:
    from r1cli import cli as entry

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["r1", *argv])
        with pytest.raises(SystemExit) as exit_:
            entry.main()
    assert exit_.value.code in (0, None), f"r1 {' '.join(argv)} exited {exit_.value.code}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """base (sft from a random init) -> r1 (grpo, logging samples every step), both evaluated and summarised."""
    work = tmp_path_factory.mktemp("pipeline")
    root = work / "runs"
    (work / "tiny.json").write_text(json.dumps(TINY))
    questions = [(n, m) for n in range(2, 8) for m in (1, 2)]
    write_jsonl(work / "train.jsonl", [{"messages": [
        {"role": "user", "content": f"Ann has {n} pens, gets {m}. How many pens now?"},
        {"role": "assistant", "content": f"<think>{n} plus {m} is {n + m}.</think> The answer is \\boxed{{{n + m}}}."}]}
        for n, m in questions])
    write_jsonl(work / "prompts.jsonl", [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)}
                                          for n, m in questions])
    cpu = ["--device", "cpu", "--save-every", "0"]
    cli("sft", str(work / "tiny.json"), str(work / "train.jsonl"), "--out", str(root / "base"), "--max-steps", "3",
        "--batch-size", "4", "--max-length", "64", "--lr", "1e-3", *cpu)
    cli("grpo", str(root / "base"), str(work / "prompts.jsonl"), "--out", str(root / "r1"), "--reward", "format",
        "--reward", "accuracy", "--steps", "3", "--prompts-per-step", "2", "--num-generations", "2", "--max-new-tokens", "8",
        "--generation-batch-size", "8", "--log-samples-every", "1", "--lr", "1e-3", *cpu)
    for name in ("base", "r1"):  # eval/r1.json: an eval report named like a run's lineage file
        cli("eval", str(root / name), str(work / "prompts.jsonl"), "--out", str(root / "eval" / f"{name}.json"), "--n", "2",
            "--max-new-tokens", "8", "--device", "cpu")
    cli("summary", f"base={root / 'eval' / 'base.json'}", f"r1={root / 'eval' / 'r1.json'}", "--out", str(root / "summary.json"),
        "--markdown", str(root / "summary.md"))
    cli("report", str(root), "--out", str(root / "report.html"))
    return root


def test_the_page_has_the_eval_table_then_a_section_per_run_in_lineage_order(pipeline):
    page, root, _ = page_of(pipeline / "report.html")
    assert [s.attrs["id"] for s in sections(root)] == ["run-base", "run-r1"]  # not eval/: its r1.json is a report
    assert [s.attrs["data-command"] for s in sections(root)] == ["sft", "grpo"]
    # The table equals summary.md cell for cell, and summary.json's numbers as percentages.
    table = root.all("table", **{"class": "eval"})[0]
    header = [th.text() for th in table.all("th")]
    rows = [[td.text() for td in tr.all("td")] for tr in table.all("tbody")[0].all("tr")]
    markdown = [[cell.strip() for cell in line.strip("|").split("|")] for line in (pipeline / "summary.md").read_text().splitlines()
                if line.startswith("|") and not line.startswith("|---")]
    assert [header, *rows] == markdown
    summary = json.loads((pipeline / "summary.json").read_text())["checkpoints"]
    for row in rows:
        block = summary[row[0]]
        assert row[1:4] == [f"{100 * block[key]:.1f}" for key in ("pass@1", "maj@2", "pass@2")]
        assert row[6] == f"{block['mean_completion_tokens']:.1f}"
    # Each run's section shows its own command line, the eval row of the checkpoint it made, and its curves.
    base, r1 = sections(root)
    assert r1.all("pre", **{"class": "command"})[0].text().startswith("r1 grpo ")
    assert [td.text() for td in r1.all("table", **{"class": "stage-eval"})[0].all("td")] == rows[1]
    assert "base" in r1.all("a")[0].text() and r1.all("a")[0].attrs["href"] == "#run-base"  # its parent, linked
    for section in (base, r1):
        image = section.all("img", **{"class": "curves"})[0].attrs["src"]
        assert image.startswith("data:image/png;base64,")
        from PIL import Image

        assert Image.open(io.BytesIO(base64.b64decode(image.split(",", 1)[1]))).size[0] > 400


def test_the_logged_samples_of_a_grpo_run_are_shown_by_step_in_step_order(pipeline):
    _, root, _ = page_of(pipeline / "report.html")
    logged = [json.loads(line) for line in (pipeline / "r1" / "samples.jsonl").read_text().splitlines()]
    steps = sections(root)[1].all("details", **{"class": "step"})
    assert [int(d.attrs["data-step"]) for d in steps] == [1, 2, 3] == sorted({r["step"] for r in logged})
    for details in steps:
        expected = [r for r in logged if r["step"] == int(details.attrs["data-step"])]
        shown = details.all("div", **{"class": "sample"})
        # (HTML reads a carriage return as a line break, as a browser shows it)
        assert [s.all("pre", **{"class": "completion"})[0].text() for s in shown] == [lines(r["completion"]) for r in expected]
        assert [s.all("pre", **{"class": "prompt"})[0].text() for s in shown] == [lines(r["prompt"]) for r in expected]
        assert f"format {expected[0]['rewards']['format']:.4g}" in shown[0].all("div", **{"class": "rewards"})[0].text()
    assert [("open" in d.attrs) for d in steps] == [True, False, True]  # the first and the last open
    assert sections(root)[0].all("details", **{"class": "step"}) == []  # an SFT run logs none


def test_the_page_loads_nothing_from_anywhere(pipeline):
    page, root, tree = page_of(pipeline / "report.html")
    assert "script" not in tree.starts and "link" not in tree.starts and "iframe" not in tree.starts
    elements = [root, *(e for tag in set(tree.starts) for e in root.all(tag))]
    for element in elements:  # no address in any attribute (model output in text may hold anything)
        for name, value in element.attrs.items():
            assert not re.search(r"https?:|^\s*//", value or ""), f"<{element.tag} {name}={value[:60]!r}>"
    assert not re.search(r"url\(|@import|https?:", root.all("style")[0].text())
    assert [img.attrs["src"][:22] for img in root.all("img")] == ["data:image/png;base64,"] * 2
    assert all(a.attrs["href"].startswith("#") for a in root.all("a"))
    policy = root.all("meta")[1].attrs
    assert policy["http-equiv"] == "Content-Security-Policy" and "default-src 'none'" in policy["content"]


# ---------------------------------------------------------------- hand-made runs


def make_run(directory: Path, command: str = "grpo", *, parent: Path | str | None = None, written_at: str = "2026-01-01T00:00:00+00:00",
             options: dict | None = None, metrics: list[dict] | None = None, samples: list[dict] | None = None,
             finished: bool = True) -> Path:
    directory.mkdir(parents=True)
    if finished:
        (directory / "r1.json").write_text(json.dumps({
            "command": command, "argv": ["r1", command, "--out", str(directory)], "options": options or {"seed": 0},
            "parent": {"path": str(parent)} if parent else {}, "step": 2, "metrics": {}, "written_at": written_at}))
    write_jsonl(directory / "metrics.jsonl", metrics or [{"step": s, "reward": s / 2, "loss": 1 / s} for s in (1, 2)])
    if samples is not None:
        write_jsonl(directory / "samples.jsonl", samples)
    return directory


def sample(step: int, completion: str = "<think>t</think> 4", **fields) -> dict:
    return {"step": step, "id": "p1", "prompt": "2 + 2?", "completion": completion, "rewards": {"format": 1.0}, "reward": 1.0, **fields}


def report(monkeypatch, capsys, *run_dirs: Path, out: Path) -> tuple[int, str]:
    status, _, err = run_cli(monkeypatch, capsys, "report", *map(str, run_dirs), "--out", str(out))
    return status, err


def test_model_output_and_names_are_shown_as_text_never_as_markup(tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    make_run(root / "<b>run", options={"system": ATTACK},
             samples=[sample(1, ATTACK, prompt=[{"role": "user", "content": ATTACK}], rewards={ATTACK: 1.0}, id=ATTACK)])
    status, err = report(monkeypatch, capsys, root, out=tmp_path / "report.html")
    assert status == 0, err
    page, root_element, tree = page_of(tmp_path / "report.html")
    assert "script" not in tree.starts and "<script" not in page
    assert [img.attrs["src"][:5] for img in root_element.all("img")] == ["data:"]  # only the curves
    assert not [attrs for element in [root_element, *root_element.all("img")] for attrs in element.attrs if attrs.startswith("on")]
    shown = root_element.all("div", **{"class": "sample"})[0]
    assert shown.all("pre", **{"class": "completion"})[0].text() == ATTACK
    assert shown.all("pre", **{"class": "prompt"})[0].text() == f"user: {ATTACK}"
    assert ATTACK in shown.all("div", **{"class": "rewards"})[0].text()
    assert sections(root_element)[0].all("h2")[0].text().startswith("<b>run")
    options = sections(root_element)[0].all("details", **{"class": "options"})[0].text()
    assert json.dumps(ATTACK) in options
    assert len(root_element.all("details", **{"class": "step"})) == 1  # the </details> inside closed nothing


def test_runs_are_ordered_parents_first_each_chain_in_one_piece(tmp_path, monkeypatch, capsys):
    root = tmp_path / "demo"
    # Finish times disagree with the lineage (a parent rerun later), and two chains interleave in time.
    make_run(root / "base", "sft", written_at="2026-01-01T00:01:30+00:00")
    make_run(root / "zero", parent=root / "base", written_at="2026-01-01T00:09:00+00:00")
    make_run(root / "cold", "sft", parent=root / "base", written_at="2026-01-01T00:01:00+00:00")
    make_run(root / "reasoning", parent=root / "cold", written_at="2026-01-01T00:03:00+00:00")
    make_run(root / "student", "sft", written_at="2026-01-01T00:02:00+00:00")
    make_run(root / "distilled", "distill", parent=root / "student", options={"teacher": "runs/demo/reasoning"},
             written_at="2026-01-01T00:04:00+00:00")
    make_run(root / "live", finished=False, metrics=[{"step": 1, "reward": 0.5}])
    status, err = report(monkeypatch, capsys, root, out=tmp_path / "report.html")
    assert status == 0, err
    _, page, _ = page_of(tmp_path / "report.html")
    order = [s.attrs["id"].removeprefix("run-") for s in sections(page)]
    # distilled waits for its teacher (named as typed, relative to where it ran); the unfinished run comes last.
    assert order == ["base", "cold", "reasoning", "zero", "student", "distilled", "live"], order
    assert "unfinished" in sections(page)[-1].all("h2")[0].text()


def test_a_resumed_runs_relogged_steps_are_shown_once_and_a_line_being_written_is_left_out(tmp_path, monkeypatch, capsys):
    def logging(step: int, *completions: str) -> list[dict]:
        return [sample(step, completion) for completion in completions]

    # Two lines a logging. Killed after logging step 3 with a checkpoint at 2: the resumed run logs
    # step 3 again (the same lines: a resumed run equals an uninterrupted one), then 4; step 5 is
    # half written. Step 1's two completions happen to be the same.
    run = make_run(tmp_path / "run", samples=[*logging(1, "one", "one"), *logging(2, "two", "2"), *logging(3, "three", "3"),
                                              *logging(3, "three", "3"), *logging(4, "four", "4")])
    with open(run / "samples.jsonl", "a") as handle:
        handle.write('{"step": 5, "completion": "fi')
    # Killed after step 4 with a checkpoint at 2, resumed elsewhere (other samples): the later logging counts.
    other = make_run(tmp_path / "other", samples=[*logging(2, "two", "2"), *logging(3, "lost", "x"), *logging(4, "lost", "x"),
                                                  *logging(3, "three", "3"), *logging(4, "four", "4")])
    for directory, steps in ((run, ["1", "2", "3", "4"]), (other, ["2", "3", "4"])):
        status, err = report(monkeypatch, capsys, directory, out=tmp_path / "report.html")
        assert status == 0, err
        _, page, _ = page_of(tmp_path / "report.html")
        shown = page.all("details", **{"class": "step"})
        assert [d.attrs["data-step"] for d in shown] == steps
        completions = [[pre.text() for pre in d.all("pre", **{"class": "completion"})] for d in shown]
        assert completions[-2:] == [["three", "3"], ["four", "4"]]
        if directory == run:
            assert completions[0] == ["one", "one"]


def test_eval_reports_without_a_summary_make_the_table(tmp_path, monkeypatch, capsys):
    root = tmp_path / "runs"
    make_run(root / "tuned", samples=[])
    block = {"pass@1": 0.25, "pass@4": 0.5, "maj@4": 0.375, "format_rate": 1.0, "language_consistency": 0.5, "mean_completion_tokens": 12.5}
    (root / "eval").mkdir()
    (root / "eval" / "tuned.json").write_text(json.dumps({"overall": block, "by": {}}))
    status, err = report(monkeypatch, capsys, root, out=tmp_path / "report.html")
    assert status == 0, err
    _, page, _ = page_of(tmp_path / "report.html")
    rows = [[td.text() for td in tr.all("td")] for tr in page.all("table", **{"class": "eval"})[0].all("tbody")[0].all("tr")]
    assert rows == [["tuned", "25.0", "37.5", "50.0", "100.0", "50.0", "12.5"]]


def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.html"
    status, err = report(monkeypatch, capsys, tmp_path / "nowhere", out=out)
    assert status == 2 and f"{tmp_path / 'nowhere'}: no such directory" in err
    (tmp_path / "empty" / "data").mkdir(parents=True)
    status, err = report(monkeypatch, capsys, tmp_path / "empty", out=out)
    assert status == 2 and "holds no r1 run" in err
    run = make_run(tmp_path / "run", samples=[sample(1)])
    (run / "samples.jsonl").write_text('{"step": 1}\n{"step": "two"}\n{"step": 3}\n')
    status, err = report(monkeypatch, capsys, run, out=out)
    assert status == 2 and f"{run / 'samples.jsonl'}:2" in err and "'step'" in err
    (run / "samples.jsonl").write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
    status, err = report(monkeypatch, capsys, run, out=out)
    assert status == 2 and f"{run / 'samples.jsonl'}:2: not valid JSON" in err
    assert not out.exists() and "Traceback" not in err


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def chromium() -> str:
    browser = find_chromium()
    if browser is None:
        pytest.skip(HOW_TO_GET_ONE)
    return browser


def test_the_page_renders_in_headless_chromium_with_no_console_errors(chromium, pipeline, tmp_path):
    import numpy as np
    from PIL import Image

    rendered = render(chromium, pipeline / "report.html")
    assert rendered.problems == []
    pixels = np.asarray(Image.open(io.BytesIO(rendered.png)).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005, "the screenshot is blank"
    (tmp_path / "screenshot.png").write_bytes(rendered.png)


def test_the_browser_check_sees_console_errors_and_blocked_loads(chromium, tmp_path):
    """The check above could fail: a script's error and a load the page's policy blocks are both seen."""
    policy = '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; style-src \'unsafe-inline\'">'
    (tmp_path / "bad.html").write_text(f"<html><head>{policy}</head><body><p>x</p><img src='https://example.invalid/a.png'></body></html>")
    assert any("Content Security Policy" in problem or "Refused" in problem for problem in render(chromium, tmp_path / "bad.html").problems)
    (tmp_path / "error.html").write_text("<html><body><script>console.error('broken')</script></body></html>")
    assert "console.error: broken" in render(chromium, tmp_path / "error.html").problems


def test_runs_of_several_pipelines_are_named_by_their_pipeline(tmp_path, monkeypatch, capsys):
    a = make_run(tmp_path / "toy" / "r1-zero", samples=[sample(1, "toy's")])
    b = make_run(tmp_path / "qwen" / "r1-zero", samples=[sample(1, "qwen's")])
    status, err = report(monkeypatch, capsys, a, b, out=tmp_path / "report.html")
    assert status == 0, err
    _, page, _ = page_of(tmp_path / "report.html")
    assert [s.all("h2")[0].children[0] for s in sections(page)] == ["toy/r1-zero", "qwen/r1-zero"]
    assert [s.attrs["id"] for s in sections(page)] == ["run-toy-r1-zero", "run-qwen-r1-zero"]
    assert [s.all("pre", **{"class": "completion"})[0].text() for s in sections(page)] == ["toy's", "qwen's"]
