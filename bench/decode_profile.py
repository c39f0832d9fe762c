"""One decode step of the fast engine, looked at closely: milliseconds per captured step and the
kernels one eager step launches, with and without the engine's Triton kernels, side by side.

    python bench/decode_profile.py --config bench/qwen2.5-0.5b-shape.json --rows 64 256

Each side: an engine on the same random model generates once (building its cache and graphs),
then its captured step for ROWS rows is replayed --replays times (synchronized, wall time), and
one eager step runs under torch.profiler, whose kernel table (count, total CUDA time) is printed.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from generation import build

from r1cli.engines.base import SamplingOptions
from r1cli.engines.fast import FastEngine
from r1cli.engines.fast.step import decode_step


def replay_ms(engine: FastEngine, rows: int, options: SamplingOptions, replays: int) -> float:
    engine.graphs.run(rows, options)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(replays):
        engine.graphs.run(rows, options)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / replays * 1e3


def kernel_table(engine: FastEngine, rows: int, options: SamplingOptions, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    decode_step(engine.decoder, engine.cache, engine.slots, rows, options, engine.constants)  # warm
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        decode_step(engine.decoder, engine.cache, engine.slots, rows, options, engine.constants)
        torch.cuda.synchronize()
    counts, times = Counter(), Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            counts[event.name] += 1
            times[event.name] += event.device_time_total
    print(f"    {sum(counts.values())} kernels, {sum(times.values()) / 1e3:.3f} ms of kernel time in one eager step")
    for name, total in times.most_common(top):
        print(f"    {total / 1e3:7.3f} ms  x{counts[name]:4d}  {name[:110]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--rows", type=int, nargs="+", default=[64])
    parser.add_argument("--prompt-tokens", type=int, default=128, help="positions already in each slot's cache")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--replays", type=int, default=200)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    model, tokenizer = build(args.config, torch.device("cuda"), torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(len(tokenizer), (max(args.rows), args.prompt_tokens), generator=generator).tolist()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, {args.config}, bf16")
    options = SamplingOptions(temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens, seed=0)
    for rows in args.rows:
        results = {}
        for side, use_kernels in (("torch ops", False), ("triton kernels", True)):
            engine = FastEngine(model, tokenizer, batch_size=rows, memory_share=0.9, eos=set(), use_kernels=use_kernels)
            engine.generate_ids(prompts[:rows], options)
            results[side] = replay_ms(engine, rows, options, args.replays)
            print(f"{rows:4d} rows  {side:15s} {results[side]:.3f} ms per captured step ({rows / results[side] * 1e3:,.0f} tokens/s)")
            kernel_table(engine, rows, options, args.top)
            engine.close()
        print(f"  ratio: {results['torch ops'] / results['triton kernels']:.2f}x")


if __name__ == "__main__":
    main()
