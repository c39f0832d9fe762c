"""Side by side: r1's built-in generation engine against transformers' `model.generate`.

Same randomly initialised model, same prompts, the same number of sequences and new tokens
(end of sequence disabled in both, so every sequence runs to the limit). Prints seconds,
tokens/s and the ratio. Run on a GPU:

    python bench/generation.py --config bench/qwen2.5-0.5b-shape.json --sequences 64 --new-tokens 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from r1cli.data.templates import format_prompt
from r1cli.engines.base import SamplingOptions
from r1cli.engines.hf import HFEngine
from r1cli.modeling import load_model, resolve_device, resolve_dtype
from r1cli.toy.world import make_world


def timed(function) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = resolve_device("auto")
    dtype = resolve_dtype("auto", device)
    model, tokenizer = load_model(args.config, dtype=dtype, seed=0)
    model = model.to(device).eval()
    prompts = [format_prompt(r["prompt"], tokenizer, "chat") for r in make_world(0)["eval"][: args.sequences // args.per_prompt]]
    total_tokens = len(prompts) * args.per_prompt * args.new_tokens

    engine = HFEngine(model, tokenizer, batch_size=args.sequences)
    engine.eos = set()
    options = SamplingOptions(temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens, seed=0)

    tokenizer.padding_side = "left"
    inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)

    def reference():
        with torch.no_grad():
            model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, num_return_sequences=args.per_prompt,
                           max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=tokenizer.pad_token_id)

    def ours():
        engine.generate(prompts, options, n=args.per_prompt)

    results = {}
    for name, function in (("transformers generate", reference), ("r1 HFEngine", ours)):
        function()  # warm-up
        seconds = [timed(function) for _ in range(args.repeats)]
        results[name] = statistics.median(seconds)
        print(f"{name:24s} median {results[name]:7.2f} s  ({total_tokens / results[name]:8.0f} tokens/s)  runs {[round(s, 2) for s in seconds]}")
    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device_name}, torch {torch.__version__}, {len(prompts)} prompts x {args.per_prompt} = "
          f"{len(prompts) * args.per_prompt} sequences x {args.new_tokens} new tokens, {dtype}")
    print(f"ratio (transformers / r1): {results['transformers generate'] / results['r1 HFEngine']:.2f}x")


if __name__ == "__main__":
    main()
