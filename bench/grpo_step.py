"""Side by side: an `r1 grpo` step against TRL's `GRPOTrainer` (no vLLM), same checkpoint, prompts and shape.

Both sides: a randomly initialised checkpoint of the given config, the toy world's RL prompts in
the chat template, P prompts x G completions of up to N new tokens at temperature 1, beta 0.04,
gradient checkpointing, bf16, AdamW at 1e-6, one optimizer step per generation step, a cheap
rule reward. Prints each side's per-step seconds, the medians after the first step and the ratio.

    python bench/grpo_step.py --config bench/qwen2.5-0.5b-shape.json --steps 6
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from r1cli.modeling import load_model
from r1cli.toy.world import make_world
from r1cli.train.checkpoint import write_loadable


def r1_side(checkpoint: Path, prompts: Path, args, out: Path, engine: str) -> list[float]:
    from r1cli.commands.grpo import grpo

    grpo(str(checkpoint), str(prompts), out, ["format"], steps=args.steps, prompts_per_step=args.prompts, num_generations=args.generations,
         max_new_tokens=args.new_tokens, beta=0.04, lr=1e-6, gradient_checkpointing=True, save_every=0, log_samples_every=0,
         engine=engine, generation_batch_size=args.prompts * args.generations)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        print(f"  r1 {engine} step {line['step']}: {line['seconds']:.2f} s (generate {line['generate_seconds']:.2f} s, "
              f"train {line['train_seconds']:.2f} s, {line['completion_length']:.0f} tokens per completion)")
    return [line["seconds"] for line in lines]


def trl_side(checkpoint: Path, records: list[dict], args, out: Path) -> list[float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.started = [], None

        def on_step_begin(self, *_, **__):
            torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, *_, **__):
            torch.cuda.synchronize()
            self.seconds.append(time.perf_counter() - self.started)
            print(f"  TRL step {len(self.seconds)}: {self.seconds[-1]:.2f} s")

    def format_reward(completions, **_):  # the same kind of cheap rule as r1's format reward
        return [float("<think>" in (c if isinstance(c, str) else c[0]["content"])) for c in completions]

    timer = StepTimer()
    config = GRPOConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.prompts * args.generations,
                        num_generations=args.generations, max_completion_length=args.new_tokens, beta=0.04, learning_rate=1e-6,
                        temperature=1.0, bf16=True, gradient_checkpointing=True, logging_steps=1, save_strategy="no", report_to="none",
                        use_vllm=False)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in records])
    trainer = GRPOTrainer(model=str(checkpoint), reward_funcs=[format_reward], args=config, train_dataset=dataset, callbacks=[timer])
    trainer.train()
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--sides", nargs="+", default=["r1", "trl"], choices=["r1", "r1-hf", "trl"])
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model, tokenizer = load_model(args.config, dtype=torch.float32, seed=0)
    checkpoint = scratch / "checkpoint"
    write_loadable(checkpoint, model, tokenizer, torch.bfloat16)
    del model
    records = [{"prompt": r["prompt"], "answer": r["answer"]} for r in make_world(0)["rl_prompts"][: args.prompts * args.steps]]
    prompts = scratch / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, {Path(args.config).name}, "
          f"{args.prompts} prompts x {args.generations} completions x {args.new_tokens} tokens, beta 0.04, gradient checkpointing")

    medians = {}
    for side in args.sides:
        if side == "trl":
            seconds = trl_side(checkpoint, records, args, scratch / "trl")
        else:
            engine = "hf" if side == "r1-hf" else "fast"
            seconds = r1_side(checkpoint, prompts, args, scratch / side, engine)
        medians[side] = statistics.median(seconds[1:])
        print(f"{side}: first step {seconds[0]:.2f} s, then median {medians[side]:.2f} s (steps 2-{len(seconds)}: "
              f"{[round(s, 2) for s in seconds[1:]]})")
    if "trl" in medians:
        for side, median in medians.items():
            if side != "trl":
                print(f"ratio (TRL / {side}): {medians['trl'] / median:.2f}x")


if __name__ == "__main__":
    main()
