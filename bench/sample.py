"""Side by side: `r1 sample` with the fast engine against the hf engine, same checkpoint and prompts.

A randomly initialised checkpoint of the given config, the toy world's RL prompts in the chat
template, N samples each at the R1 evaluation settings (temperature 0.6, top-p 0.95). Prints each
engine's wall time for the command and completion tokens per second, and the ratio.

    python bench/sample.py --config bench/qwen2.5-0.5b-shape.json --prompts 2000 --n 4 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from r1cli.commands.sample import sample
from r1cli.modeling import load_model
from r1cli.toy.world import make_world
from r1cli.train.checkpoint import write_loadable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--prompts", type=int, default=2000)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--generation-batch-size", type=int, default=256)
    parser.add_argument("--engines", nargs="+", default=["fast", "hf"])
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="sample-bench-"))
    model, tokenizer = load_model(args.config, dtype=torch.float32, seed=0)
    write_loadable(scratch / "checkpoint", model, tokenizer, torch.bfloat16)
    del model
    prompts = scratch / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "answer": r["answer"]}) + "\n"
                               for r in make_world(0)["rl_prompts"][: args.prompts]))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}, {Path(args.config).name}, {args.prompts} prompts x {args.n} samples, "
          f"up to {args.max_new_tokens} new tokens, --generation-batch-size {args.generation_batch_size}")
    rates = {}
    for engine in args.engines:
        out = scratch / f"{engine}.jsonl"
        started = time.perf_counter()
        sample(str(scratch / "checkpoint"), str(prompts), str(out), n=args.n, max_new_tokens=args.max_new_tokens, engine=engine,
               generation_batch_size=args.generation_batch_size)
        seconds = time.perf_counter() - started
        tokens = sum(json.loads(line)["completion_tokens"] for line in out.read_text().splitlines())
        rates[engine] = tokens / seconds
        print(f"{engine:5s} {seconds:7.1f} s for the command, {tokens} completion tokens, {rates[engine]:8.0f} tokens/s")
    if len(rates) > 1:
        first = args.engines[0]
        print(", ".join(f"ratio ({first} / {e}): {rates[first] / rates[e]:.2f}x" for e in args.engines[1:]))


if __name__ == "__main__":
    main()
