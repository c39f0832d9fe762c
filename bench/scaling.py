"""Side by side: `r1 sft` / `r1 grpo` as one process on one GPU and under torchrun on N GPUs.

Both sides: the same randomly initialised checkpoint of CONFIG (written once, in bf16), the same
data and the same global batch (sft: --batch-size x --grad-accum packed rows of --row-tokens;
grpo: --prompts x --generations completions of up to --new-tokens), gradient checkpointing. Each
side is the real command in its own processes; its metrics.jsonl gives the medians after the first
step: seconds per step, tokens/s (sft: trained tokens; grpo: completion tokens) and the peak GPU
memory of the busiest process. Scaling efficiency = (N-GPU throughput) / (N x 1-GPU throughput).
A side that runs out of memory is reported as such.

    python bench/scaling.py sft  --config bench/qwen2.5-1.5b-shape.json --nproc 2
    python bench/scaling.py grpo --config bench/qwen2.5-7b-shape.json --nproc 2
    python bench/scaling.py sft --device cpu      # a smoke run on this machine's CPUs (gloo), a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from r1cli.toy.world import make_world

TINY = {"model_type": "qwen2", "tokenizer": str(Path(__file__).resolve().parents[1] / "r1cli/toy/assets/tokenizer"), "hidden_size": 64,
        "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 4096, "tie_word_embeddings": True}


def write_checkpoint(config_path: Path, out: Path, device: torch.device) -> None:
    """A random checkpoint of CONFIG_PATH in bf16 (fp32 on the CPU), initialised on DEVICE (a 7B model in seconds)."""
    from transformers import AutoModelForCausalLM

    from r1cli.modeling import _init_config
    from r1cli.train.checkpoint import write_loadable

    config, tokenizer = _init_config(config_path)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    write_loadable(out, model, tokenizer, dtype)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def command_options(args, data: Path, out: Path) -> list[str]:
    """The stage's options, the same on both sides."""
    common = ["--out", str(out), "--device", args.device, "--gradient-checkpointing", "--save-every", "0", "--overwrite"]
    if args.stage == "sft":
        return [str(data), *common, "--max-steps", str(args.steps), "--batch-size", str(args.batch_size), "--grad-accum",
                str(args.grad_accum), "--packing", "--max-length", str(args.row_tokens), "--lr", "1e-5", "--warmup", "0"]
    return [str(data), *common, "--reward", "format", "--steps", str(args.steps), "--prompts-per-step", str(args.prompts),
            "--num-generations", str(args.generations), "--max-new-tokens", str(args.new_tokens), "--beta", "0.04", "--lr", "1e-6",
            "--log-samples-every", "0", "--generation-batch-size", str(args.prompts * args.generations)]


def run_side(args, processes: int, checkpoint: Path, data: Path, out: Path) -> dict:
    """One side: the command on PROCESSES processes; the medians of its steps after the first."""
    stage = [args.stage, str(checkpoint), *command_options(args, data, out)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "R1_PROGRESS_SECONDS": "3600"}
    if processes == 1:
        launch = [sys.executable, "-m", "r1cli", *stage]
        if args.device == "cuda":
            environment["CUDA_VISIBLE_DEVICES"] = environment.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    else:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "r1cli", "--", *stage]
    done = subprocess.run(launch, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        oom = any("out of memory" in line.lower() for line in (done.stderr + done.stdout).splitlines())
        return {"failed": "out of memory" if oom else " | ".join(tail)}
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][1:]  # after the first step
    per_step = args.prompts * args.generations
    tokens_per_s = [line["tokens_per_s"] if args.stage == "sft" else line["completion_length"] * per_step / line["seconds"] for line in lines]
    return {"seconds": statistics.median(line["seconds"] for line in lines), "tokens_per_s": statistics.median(tokens_per_s),
            "peak_memory_gib": max((line.get("peak_memory_gib", 0.0) for line in lines), default=0.0), "steps": len(lines) + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sft", "grpo"])
    parser.add_argument("--config", default="bench/qwen2.5-1.5b-shape.json")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4, help="sft: packed rows per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=4, help="sft: micro-batches per step (global batch: batch x accum rows)")
    parser.add_argument("--row-tokens", type=int, default=2048, help="sft: tokens per packed row")
    parser.add_argument("--prompts", type=int, default=8, help="grpo: prompts per step")
    parser.add_argument("--generations", type=int, default=8, help="grpo: completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=256, help="grpo: new tokens per completion at most")
    parser.add_argument("--sides", type=int, nargs="+", default=None, help="process counts to run [default: 1 and --nproc]")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="scaling-bench-"))
    config = Path(args.config)
    if args.device == "cpu":
        config = scratch / "tiny.json"
        config.write_text(json.dumps(TINY))
        args.batch_size, args.grad_accum, args.row_tokens, args.steps = 2, 2, 256, 3
        args.prompts, args.generations, args.new_tokens = 4, 4, 16
    checkpoint = scratch / "checkpoint"
    write_checkpoint(config, checkpoint, torch.device(args.device))
    world = make_world(0)
    records = world["cold_start"] + world["general"] if args.stage == "sft" else world["rl_prompts"]
    data = scratch / "data.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (gloo)"
    print(f"device {device_name}, sides {args.sides or [1, args.nproc]} processes, torch {torch.__version__}, {Path(args.config).name if args.device == 'cuda' else 'tiny'}, "
          f"r1 {args.stage}, {args.steps} steps")

    results = {}
    for processes in args.sides or [1, args.nproc]:
        results[processes] = result = run_side(args, processes, checkpoint, data, scratch / f"run-{processes}")
        if "failed" in result:
            print(f"{processes} process(es): failed: {result['failed']}")
            continue
        print(f"{processes} process(es): median {result['seconds']:.3f} s per step, {result['tokens_per_s']:,.0f} tokens/s, "
              f"peak {result['peak_memory_gib']:.1f} GiB per GPU ({result['steps']} steps)")
    one, many = results.get(1, {}), results.get(args.nproc, {})
    if "tokens_per_s" in one and "tokens_per_s" in many:
        print(f"scaling efficiency ({args.nproc} processes): {many['tokens_per_s'] / (args.nproc * one['tokens_per_s']):.2f}")


if __name__ == "__main__":
    main()
