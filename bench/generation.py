"""Side by side: r1's engines (fast, hf) against transformers' `model.generate`.

Same randomly initialised model, same prompts, the same number of sequences and new tokens. By
default end of sequence is off on every side, so every sequence runs to the limit; with
`--eos-ids K` the K ids after the toy vocabulary's own end every sequence (a random model then
stops at varied lengths: the ragged case), on every side alike. Prints seconds, tokens/s, peak
memory and the ratios to the first side. Run on a GPU:

    python bench/generation.py --config bench/qwen2.5-0.5b-shape.json --sequences 64 256 512 --new-tokens 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from r1cli.data.templates import format_prompt
from r1cli.engines.base import SamplingOptions
from r1cli.engines.fast import FastEngine
from r1cli.engines.hf import HFEngine
from r1cli.modeling import _init_config
from r1cli.toy.world import make_world


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function) -> tuple[float, int]:
    """Seconds for FUNCTION, and the tokens it generated."""
    synchronize()
    started = time.perf_counter()
    tokens = function()
    synchronize()
    return time.perf_counter() - started, tokens


def build(config_path: str, device: torch.device, dtype: torch.dtype):
    """The random model, initialised directly on the device (a 7B model initialises in seconds)."""
    from transformers import AutoModelForCausalLM

    config, tokenizer = _init_config(Path(config_path))
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval(), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--sequences", type=int, nargs="+", default=[64])
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", default=["generate", "hf", "fast"], choices=["generate", "hf", "fast", "fast-torch"],
                        help="fast-torch: the fast engine without its Triton decode kernels (torch ops alone)")
    parser.add_argument("--eos-ids", type=int, default=0, help="ids that end a sequence (0: end of sequence off)")
    parser.add_argument("--json", help="append each result as a JSON line to this file")
    parser.add_argument("--refresh", action="store_true", help="also time the fast engine's refresh_weights alone")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = build(args.config, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    eos = list(range(len(tokenizer), len(tokenizer) + args.eos_ids))  # ids past the toy vocabulary: random logits
    model.generation_config.eos_token_id = eos or None
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device {device_name}, torch {torch.__version__}, {Path(args.config).name} ({parameters / 1e6:.0f}M parameters), {dtype}, "
          f"{args.new_tokens} new tokens, end of sequence {'on: ' + str(len(eos)) + ' ids' if eos else 'off'}")
    world = make_world(0)["eval"]

    for sequences in args.sequences:
        measure(sequences, args, model, tokenizer, eos, world, device, device_name)


def measure(sequences: int, args, model, tokenizer, eos: list[int], world: list[dict], device: torch.device, device_name: str) -> None:
    """Every side at SEQUENCES sequences: a warm-up call, then the median of --repeats calls."""
    prompts = [format_prompt(world[i % len(world)]["prompt"], tokenizer, "chat") for i in range(sequences // args.per_prompt)]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    options = SamplingOptions(temperature=1.0, top_p=1.0, max_new_tokens=args.new_tokens, seed=0)
    sides = {}
    if "generate" in args.sides:
        tokenizer.padding_side = "left"
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        minimum = {} if eos else {"min_new_tokens": args.new_tokens}

        def reference():
            with torch.no_grad():
                output = model.generate(**inputs, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                        num_return_sequences=args.per_prompt, max_new_tokens=args.new_tokens,
                                        pad_token_id=tokenizer.pad_token_id, eos_token_id=eos or None, **minimum)
            new = output[:, inputs["input_ids"].shape[1]:]
            if not eos:
                return new.numel()
            finished = torch.isin(new, torch.tensor(eos, device=device))
            # tokens up to and including each sequence's first end-of-sequence id
            return int(torch.where(finished.any(-1), finished.int().argmax(-1) + 1, new.shape[1]).sum())

        sides["transformers generate"] = reference
    if "hf" in args.sides:
        hf = HFEngine(model, tokenizer, batch_size=sequences)
        hf.eos = set(eos)
        sides["r1 hf"] = lambda: sum(len(c.token_ids) for p in hf.generate_ids(encoded, options, n=args.per_prompt) for c in p)
    engines = []
    for side, use_kernels in (("fast", True), ("fast-torch", False)):
        if side in args.sides:
            engine = FastEngine(model, tokenizer, batch_size=sequences, memory_share=0.9, eos=set(eos), use_kernels=use_kernels)
            engines.append(engine)
            sides[f"r1 {side}"] = lambda e=engine: sum(len(c.token_ids) for p in e.generate_ids(encoded, options, n=args.per_prompt) for c in p)

    results = {}
    for name, function in sides.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        warm_seconds, _ = timed(function)  # warm-up (the fast engine captures its graphs here)
        runs = [timed(function) for _ in range(args.repeats)]
        seconds = statistics.median(s for s, _ in runs)
        tokens = runs[0][1]
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
        results[name] = seconds
        print(f"{sequences:4d} seqs  {name:22s} median {seconds:7.3f} s  {tokens / seconds:9.0f} tokens/s  {tokens:7d} tokens  "
              f"peak {peak:5.1f} GiB  first call {warm_seconds:.2f} s  runs {[round(s, 3) for s, _ in runs]}")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps({"config": args.config, "sequences": sequences, "side": name, "seconds": seconds,
                                         "tokens": tokens, "tokens_per_s": tokens / seconds, "peak_gib": peak,
                                         "first_call_s": warm_seconds, "eos_ids": len(eos), "device": device_name}) + "\n")
    if args.refresh and engines:
        measure_refresh(engines[0], model)
    for engine in engines:
        engine.close()
    first = next(iter(results))
    print("  ratios: " + ", ".join(f"{name} {results[first] / s:.2f}x" for name, s in results.items() if name != first)
          + f" (against {first})")


def measure_refresh(engine, model) -> None:
    """refresh_weights alone: the model's weights copied into the engine's buffers, from the bf16
    model itself and from an fp32 copy (GRPO's master weights), median of five, synchronized."""
    import copy

    master = copy.deepcopy(model).float()
    for name, source in (("bf16 model", model), ("fp32 master", master)):
        engine.refresh_weights(source)
        runs = [timed(lambda s=source: engine.refresh_weights(s) or 0)[0] for _ in range(5)]
        print(f"  refresh_weights from the {name}: median {statistics.median(runs) * 1e3:.1f} ms  runs {[round(r * 1e3, 1) for r in runs]}")
    del master


if __name__ == "__main__":
    main()
