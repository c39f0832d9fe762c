"""The distillation recipe: a teacher's correct traces taught to a student, composed of the
sampling, rejection-sampling and SFT recipes.

Each stage leaves its file in the run directory (traces.jsonl, kept.jsonl, then the student
checkpoint), so a rerun resumes at the stage that did not finish and the traces stay there to
be read. Everything that can be checked is checked before anything is sampled or written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from r1cli.console import log, warn
from r1cli.data import outputs as runs
from r1cli.data.records import check_sample_fields, read_json_file, read_records
from r1cli.errors import UserError
from r1cli.modeling import check_loadable
from r1cli.options import (
    ComputeOptions,
    DataOptions,
    DistillFilterOptions,
    GenerationOptions,
    LoraOptions,
    PromptOptions,
    RewardSettings,
    RunOptions,
    SFTOptimizerOptions,
    as_dict,
    recorded_options,
)
from r1cli.recipes.filter import FilterJob, parse_per_prompt, parse_thresholds, run_filter
from r1cli.recipes.sample import SampleJob, load_prompts, run_sample
from r1cli.recipes.sft import SFTConfig, run_sft
from r1cli.rewards.registry import parse_rewards
from r1cli.train import distributed
from r1cli.train.teacher import Teacher, check_shared_tokenizer
from r1cli.train.tracking import check_report_to

TRACES, KEPT = "traces.jsonl", "kept.jsonl"
# --template is the teacher's prompt template; the student trains on the kept traces as chat records.
STUDENT_TEMPLATE = "auto"


@dataclass(frozen=True)
class DistillConfig:
    teacher: str
    student: str
    out: str
    prompts: str | None = None
    traces: str | None = None  # existing sample records: no sampling
    n: int = 4
    kd_weight: float = 0.0
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 2048
    packing: bool = False
    prompt: PromptOptions = PromptOptions()
    generation: GenerationOptions = GenerationOptions()
    rules: DistillFilterOptions = DistillFilterOptions()
    optim: SFTOptimizerOptions = SFTOptimizerOptions()
    lora: LoraOptions = LoraOptions()
    compute: ComputeOptions = ComputeOptions()
    run: RunOptions = RunOptions()
    source: DataOptions = DataOptions()  # the split and subset of PROMPTS (or --traces) when a dataset

    def options(self) -> dict:
        return {**recorded_options(self), "student_template": STUDENT_TEMPLATE}

    def sampling(self) -> SampleJob:
        return SampleJob(self.teacher, self.prompts, str(Path(self.out) / TRACES), self.n, self.prompt, self.generation,
                         self.compute, seed=self.run.seed, source=self.source)

    def training(self, kept: Path) -> SFTConfig:
        # Resuming is the SFT recipe's own.
        return SFTConfig(self.student, (str(kept),), self.out, self.epochs, self.max_steps, self.batch_size, self.max_length,
                         self.packing, STUDENT_TEMPLATE, (), 16, self.optim, self.lora, self.compute, replace(self.run, overwrite=False))


def run_distill(config: DistillConfig) -> None:
    """Sample the teacher, keep its correct traces, fine-tune the student on them. Under torchrun
    every rank samples its share of the prompts, rank 0 filters, and the SFT is sharded."""
    out = Path(config.out)
    if config.prompts is None and config.traces is None:
        raise UserError("give PROMPTS for the teacher to answer, or --traces FILE")
    if config.prompts is not None and config.traces is not None:
        warn(f"--traces given: PROMPTS ({config.prompts}) is not sampled")
    world = distributed.world()
    created = not out.exists()
    # Every rank checks before any rank writes (a collective: the ranks agree on the first error).
    distributed.checked_everywhere(world, check_before_starting, config)

    try:
        if config.run.overwrite:
            distributed.on_main(world, clear_run, out)
        out.mkdir(parents=True, exist_ok=True)
        # 1. The teacher's traces (resumed where they stopped).
        traces = Path(config.traces) if config.traces else Path(config.sampling().out)
        if config.traces is None:
            run_sample(config.sampling())
        # 2. The correct, well-formed ones (filtered again only when the traces or the rules changed), by rank 0.
        kept = distributed.on_main(world, keep_correct, traces, out / KEPT, config.rules,
                                   RewardSettings(overlong_length=config.generation.max_new_tokens),
                                   config.source if config.traces else DataOptions())
        # 3. The student, fine-tuned on them.
        teacher = Teacher(config.teacher, config.kd_weight) if config.kd_weight else None
        run_sft(config.training(kept), command="distill", teacher=teacher, recorded=config.options())
    except BaseException:
        if created and world.is_main and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # failed before writing anything: leave nothing
        raise


def clear_run(out: Path) -> None:
    """--overwrite: what r1 wrote in OUT removed, under its lock."""
    with runs.exclusive(out):
        runs.clear_run_directory(out)


def check_before_starting(config: DistillConfig) -> None:
    """Every input and option a later stage would reject, rejected now (before hours of sampling)."""
    runs.check_run_directory(Path(config.out), [config.teacher, config.student, config.traces or config.prompts],
                             overwrite=config.run.overwrite)
    if distributed.world().distributed and (config.kd_weight or config.lora.lora_r):
        raise UserError(f"{'--kd-weight' if config.kd_weight else '--lora-r'} under torchrun: not supported yet (run it as one process)")
    sampling = config.sampling()
    sampling.check()
    if config.traces is None:
        load_prompts(sampling)
    else:
        for record in read_records(config.traces, config.source):
            check_sample_fields(record)
    parse_rewards(list(config.rules.reward or ["accuracy"]))
    parse_thresholds(config.rules.min_score or [])
    parse_per_prompt(config.rules.per_prompt)
    check_loadable(config.student)
    check_report_to(config.run.report_to)
    if config.kd_weight:
        check_shared_tokenizer(config.teacher, config.student)


def keep_correct(traces: Path, kept: Path, rules: DistillFilterOptions, rewards: RewardSettings, source: DataOptions) -> Path:
    """Filter TRACES (SOURCE's split of it, for a dataset) into KEPT, unless KEPT is newer than the
    TRACES file and was made with the same rules (traces from a dataset are filtered again)."""
    summary_path = Path(f"{kept}.summary.json")
    wanted = as_dict(rules)
    if kept.exists() and summary_path.exists() and traces.is_file() and kept.stat().st_mtime >= traces.stat().st_mtime:
        saved = read_json_file(summary_path).get("options", {})
        if all(saved.get(name) == value for name, value in wanted.items()):
            log(f"{kept} is up to date with {traces}; not filtering again")
            return kept
    run_filter(FilterJob(str(traces), str(kept), rules, rewards, source))
    summary = read_json_file(summary_path)
    if summary["kept"] == 0:
        raise UserError(f"{traces}: no trace passed the filter (dropped: {summary['dropped']}); sample more (--n) or relax --min")
    return kept
