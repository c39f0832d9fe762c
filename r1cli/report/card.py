"""A checkpoint's model card: README.md in the hub's format (YAML front matter, then Markdown),
built from its r1.json and from the `r1 eval` reports run on it.

Neither file is part of the model: the content fingerprint that resumption and downstream stages
record (r1cli.data.outputs.model_fingerprint) leaves out README.md and EVALS, so writing them
changes no identity.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from r1cli.data.records import read_json_file, write_json, write_text

CARD = "README.md"
EVALS = "r1-evals.json"  # the eval results the card shows, by report path
# The R1 paper's sampling for its reasoning models (temperature 0.6, top-p 0.95), which
# generation_config.json carries for a checkpoint trained in the think format.
REASONING_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
THINK_SHARE = 0.5  # at least this share of the trained texts close a think block
STAGES = {"sft": "supervised fine-tuning", "grpo": "GRPO reinforcement learning", "distill": "distillation (fine-tuning on a teacher's traces)"}
REPORT_COLUMNS = (("pass@1", "pass@1"), ("format", "format_rate"), ("language", "language_consistency"), ("tokens", "mean_completion_tokens"))


# ---------------------------------------------------------------- the think format


def think_format_reason(*, template: str, rewards: tuple[str, ...] = (), think_share: float | None = None) -> str | None:
    """Why a stage's checkpoint is a think-format model, or None. One rule for every stage: it used
    the R1-Zero template, rewarded the think format (the format or tags reward), or trained on
    texts at least half of which close a think block (`</think>`)."""
    if template == "r1-zero":
        return "trained with --template r1-zero"
    rewarded = [name for name in rewards if name.split("=")[0] in ("format", "tags")]
    if rewarded:
        return f"rewarded for the think format (--reward {rewarded[0].split('=')[0]})"
    if think_share is not None and think_share >= THINK_SHARE:
        return f"{think_share:.0%} of its training examples close a think block with `</think>`"
    return None


def think_share(texts: list[str]) -> float:
    """The share of TEXTS (what a stage trains on) that close a think block."""
    return sum("</think>" in text for text in texts) / len(texts) if texts else 0.0


def set_reasoning_sampling(directory: Path) -> None:
    """R1's sampling settings into DIRECTORY's generation_config.json (a merged or full model's;
    an adapter directory has none and is left as it is)."""
    path = directory / "generation_config.json"
    if path.is_file():
        write_json(path, {**read_json_file(path), **REASONING_SAMPLING})


# ---------------------------------------------------------------- the card


def card_name(checkpoint: Path) -> str:
    """The name a card gives checkpoint CHECKPOINT: its run directory's, with the step for an
    intermediate one (RUN/checkpoints/step-N)."""
    checkpoint = Path(checkpoint).resolve()
    return f"{checkpoint.parent.parent.name}-{checkpoint.name}" if checkpoint.parent.name == "checkpoints" else checkpoint.name


def write_card(directory: Path, lineage: dict, evals: dict | None = None, *, name: str | None = None) -> None:
    """DIRECTORY/README.md from LINEAGE (its r1.json) and EVALS (report path -> eval entry); NAME is
    the checkpoint's (by default DIRECTORY's, see card_name)."""
    write_text(directory / CARD, render_card(name or card_name(directory), lineage, evals or {}))


def render_card(name: str, lineage: dict, evals: dict) -> str:
    from huggingface_hub import ModelCardData

    options, parent = lineage.get("options") or {}, lineage.get("parent") or {}
    hub_datasets = sorted({i["hub_dataset"] for i in lineage.get("inputs") or [] if i.get("hub_dataset")})
    command = lineage.get("command") or "?"
    tags = ["r1", command, *(["lora"] if options.get("lora_r") else []), *(["reasoning"] if lineage.get("sampling_defaults") else [])]
    metadata = ModelCardData(base_model=parent.get("base_model"), library_name="transformers", pipeline_tag="text-generation",
                             tags=tags, datasets=hub_datasets or None)
    sections = [f"---\n{metadata.to_yaml()}\n---\n", f"# {name}\n", _made(lineage), _data(lineage),
                _options(lineage), _metrics(lineage), _sampling(lineage), _evals(evals), _usage(name)]
    return "\n".join(section for section in sections if section)


def _made(lineage: dict) -> str:
    command, parent = lineage.get("command") or "?", lineage.get("parent") or {}
    stage = STAGES.get(command, command)
    if command == "sft" and parent.get("sha256"):
        stage = "pre-training from a model config (random initialisation)"
    source = parent.get("path", "?")
    made_by = f" (made by `r1 {parent['command']}`, step {parent.get('step')})" if parent.get("command") else ""
    lines = [f"Made by r1 {lineage.get('r1_version', '?')} with `r1 {command}`: {stage}.\n",
             f"- Parent: `{source}`{made_by}" + (f", sha256 `{parent['sha256']}`" if parent.get("sha256") else ""),
             f"- Step: {lineage.get('step')}; seed: {lineage.get('seed')}; written {lineage.get('written_at', '?')}",
             "- Libraries: " + ", ".join(f"{name} {version}" for name, version in (lineage.get("libraries") or {}).items())]
    if command == "distill" and (lineage.get("options") or {}).get("teacher"):
        lines.insert(2, f"- Teacher: `{lineage['options']['teacher']}`")
    return "\n".join(lines) + "\n"


def _data(lineage: dict) -> str:
    inputs = lineage.get("inputs") or []
    if not inputs:
        return ""
    rows = ["## Data\n", "| input | split | rows | sha256 |", "|---|---|---|---|"]
    for item in inputs:
        split = " / ".join(str(part) for part in (item.get("subset"), item.get("split")) if part)
        rows.append(f"| `{item.get('path')}` | {split} | {item.get('rows', '')} | `{item.get('sha256')}` |")
    return "\n".join(rows) + "\n"


def _options(lineage: dict) -> str:
    options = json.dumps(lineage.get("options") or {}, indent=2, ensure_ascii=False)
    return ("## Options\n\nAs r1.json records them (r1.json is itself a `--config` for the same command):\n\n"
            f"```json\n{options}\n```\n")


def _metrics(lineage: dict) -> str:
    metrics = lineage.get("metrics") or {}
    if not metrics:
        return ""
    rows = [f"## Metrics at step {lineage.get('step')}\n", "| metric | value |", "|---|---|"]
    rows += [f"| {name} | {_number(value)} |" for name, value in metrics.items()]
    return "\n".join(rows) + "\n"


def _sampling(lineage: dict) -> str:
    defaults = lineage.get("sampling_defaults")
    if not defaults:
        return ("## Sampling\n\n`generation_config.json` is the parent's (or transformers' defaults): this stage did not "
                "train the think format.\n")
    return ("## Sampling\n\n`generation_config.json` carries the R1 paper's sampling for reasoning models: "
            f"temperature {defaults['temperature']}, top-p {defaults['top_p']}, sampling on ({defaults['reason']}).\n")


def _evals(evals: dict) -> str:
    if not evals:
        return "## Evaluation\n\nNo `r1 eval` report on this checkpoint yet (`r1 eval` adds one here).\n"
    ks = sorted({int(key.split("@")[1]) for entry in evals.values() for key in entry["overall"] if key.startswith("maj@")} - {1})
    header = ["report", "data", "samples / prompt", *[name for name, _ in REPORT_COLUMNS[:1]], *[f"maj@{k}" for k in ks],
              *[name for name, _ in REPORT_COLUMNS[1:]]]
    rows = ["## Evaluation\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for report, entry in sorted(evals.items()):
        overall = entry["overall"]
        data = ", ".join(f"`{item.get('path')}`" + (f" ({item['split']})" if item.get("split") else "") for item in entry.get("data") or [])
        cells = [f"`{report}`", data, str(entry.get("n", "")), _number(overall.get("pass@1")),
                 *[_number(overall.get(f"maj@{k}")) for k in ks], *[_number(overall.get(key)) for _, key in REPORT_COLUMNS[1:]]]
        rows.append("| " + " | ".join(cells) + " |")
    settings = {_sampling_words(entry.get("sampling") or {}) for entry in evals.values()}
    said = f"Sampled with {settings.pop()}; each" if len(settings) == 1 else "Each"
    return "\n".join(rows) + f"\n\n{said} report's provenance block has its sampling settings, seed and template.\n"


def _sampling_words(sampling: dict) -> str:
    words = [f"temperature {sampling.get('temperature')}", f"top-p {sampling.get('top_p')}"]
    if sampling.get("top_k"):
        words.append(f"top-k {sampling['top_k']}")
    words.append(f"up to {sampling.get('max_new_tokens')} new tokens")
    if sampling.get("stop"):
        words.append("stop at " + ", ".join(map(repr, sampling["stop"])))
    return ", ".join(words)


def _usage(name: str) -> str:
    return ("## Use and share\n\n```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("YOUR-NAME/{name}")  # or this directory\'s path\n'
            f'tokenizer = AutoTokenizer.from_pretrained("YOUR-NAME/{name}")\n```\n\n'
            f"Upload this directory with the hub's client: `hf upload YOUR-NAME/{name} path/to/{name} . --exclude \"checkpoints/*\"` "
            f'(or `HfApi().upload_folder(repo_id="YOUR-NAME/{name}", folder_path="path/to/{name}", ignore_patterns=["checkpoints/*"])`).\n')


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


# ---------------------------------------------------------------- eval results


def record_eval(checkpoint: Path, report_path: Path, entry: dict) -> None:
    """Add (or refresh) the eval ENTRY of REPORT_PATH in CHECKPOINT's EVALS and card. Under a lock on
    the directory, so that evals of one checkpoint finishing together both land; each file is
    replaced atomically."""
    with _locked(checkpoint):
        path = checkpoint / EVALS
        evals = read_json_file(path) if path.is_file() else {}
        evals[str(Path(report_path).resolve())] = entry
        write_json(path, evals)
        write_card(checkpoint, read_json_file(checkpoint / "r1.json"), evals)


@contextlib.contextmanager
def _locked(directory: Path):
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits: another eval's update takes a moment
        yield
    finally:
        os.close(fd)
