"""Side by side: the training side's memory and time, chunked log-probs and token-budget
micro-batches (r1 now) against the full-logits path it replaced (bench/legacy_logits.py).

    python bench/lean_training.py update  --config bench/qwen2.5-0.5b-shape.json --lengths 1024 4096 8192
    python bench/lean_training.py loss    --tokens 8192
    python bench/lean_training.py longest --config bench/qwen2.5-1.5b-shape.json
    python bench/lean_training.py sft     --config bench/qwen2.5-0.5b-shape.json --row-tokens 4096
    python bench/lean_training.py cpu-memory            # this machine's CPU: peak resident memory of one r1 grpo step

GPU modes: one GRPO update (64 completions, fp32 master weights under bf16 autocast, a bf16
reference, beta 0.04, gradient checkpointing) on a randomly initialised checkpoint of CONFIG;
peak memory is torch.cuda.max_memory_allocated over the update, time is wall time with a
synchronize. The old side keeps its micro-batches of --old-rows rows (its --grad-accum), the new
side takes the default token budget. Every figure is printed with the device and both sides.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

GiB = 2**30
DEVICE = torch.device("cuda")  # --device cpu: a smoke run of the GPU modes with a tiny config


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int:
    return torch.cuda.max_memory_allocated() if DEVICE.type == "cuda" else 0


def allocated_bytes() -> int:
    return torch.cuda.memory_allocated() if DEVICE.type == "cuda" else 0


# ---------------------------------------------------------------- GRPO update (GPU)


def make_policy(config: str, beta: float = 0.04):
    from r1cli.modeling import load_model
    from r1cli.rl.policy import Policy
    from r1cli.train.optim import make_optimizer, make_scheduler

    device = DEVICE
    network, tokenizer = load_model(config, dtype=torch.float32, seed=0)
    network.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    network.config.use_cache = False
    network = network.to(device)
    reference = None
    if beta > 0:
        reference = load_model(config, dtype=torch.bfloat16, seed=0)[0].to(device).eval().requires_grad_(False)
    optimizer = make_optimizer(network, 1e-6, 0.0, (0.9, 0.95), 1e-8)
    scheduler = make_scheduler(optimizer, schedule="constant", warmup=0, total_steps=10, min_lr_ratio=0.1)
    return Policy(network, reference, optimizer, scheduler, device, torch.bfloat16, tokenizer.pad_token_id)


def rollouts(count: int, prompt_tokens: int, completion_tokens: int, vocab: int):
    from r1cli.rl.rollouts import Rollout

    rng = random.Random(0)
    return [Rollout([rng.randrange(vocab) for _ in range(prompt_tokens)], [rng.randrange(vocab) for _ in range(completion_tokens)],
                    reward=0.0, truncated=False, scores={}, sample={}) for _ in range(count)]


def one_update(policy, batch, side: str, old_rows: int, new_budget: int | None = None) -> dict:
    """Peak memory and seconds of one update (the optimizer state already allocated by a warm-up)."""
    from r1cli.rl.policy import UpdateSettings, update_policy

    grad_accum = max(1, len(batch) // old_rows) if side == "old" else 1
    settings = UpdateSettings("grpo", 1.0, 0.2, 0.2, 0.04, 1, 1, grad_accum, False, len(batch[0].completion_ids), 1.0, 0,
                              max_tokens_per_batch=None if side == "old" else new_budget or budget(policy))
    advantages = torch.linspace(-1, 1, len(batch))
    synchronize()
    reset_peak()
    started = time.perf_counter()
    try:
        update_policy(policy, batch, advantages, settings)
        synchronize()
    except torch.OutOfMemoryError:
        policy.optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"oom": True}
    return {"seconds": round(time.perf_counter() - started, 2), "peak_gib": round(peak_bytes() / GiB, 1),
            "micro_batch_tokens": settings.max_tokens_per_batch or (len(batch) // grad_accum) * (len(batch[0].prompt_ids) + len(batch[0].completion_ids))}


def budget(policy) -> int:
    from r1cli.train.batching import token_budget

    return token_budget(None, policy.network, policy.device, policy.dtype, checkpointing=True)


def warm_up(policy) -> None:
    """One tiny update, so that both sides start with AdamW's moments allocated."""
    one_update(policy, rollouts(2, 8, 8, 1000), "new", 2)


def update_mode(args) -> None:
    import legacy_logits

    policy = make_policy(args.config)
    warm_up(policy)
    vocab = policy.network.config.vocab_size
    for length in args.lengths:
        batch = rollouts(args.completions, args.prompt_tokens, length, vocab)
        new = one_update(policy, batch, "new", args.old_rows, args.new_budget)
        print(json.dumps({"mode": "update", "side": "new", "completions": args.completions, "completion_tokens": length, **new}), flush=True)
        saved = {name: getattr(module, name) for module, name in legacy_modules()}
        legacy_logits.install()
        old = one_update(policy, batch, "old", args.old_rows)
        restore(saved)
        print(json.dumps({"mode": "update", "side": "old", "completions": args.completions, "completion_tokens": length,
                          "rows_per_micro_batch": args.old_rows, **old}), flush=True)


def legacy_modules():
    import r1cli.recipes.sft as sft
    import r1cli.rl.policy as policy

    return [(policy, "completion_logprobs"), (sft, "token_loss_sum")]


def restore(saved: dict) -> None:
    for module, name in legacy_modules():
        setattr(module, name, saved[name])


def longest_mode(args) -> None:
    """The longest completion (doubling from 1,024, up to the model's context less the prompt) whose
    update fits, at --completions per step."""
    policy = make_policy(args.config)
    warm_up(policy)
    fits = None
    context = policy.network.config.max_position_embeddings
    lengths = [2**k for k in range(10, 20) if 2**k < context - args.prompt_tokens] + [context - args.prompt_tokens]
    for length in (length for length in lengths if length >= args.start):
        result = one_update(policy, rollouts(args.completions, args.prompt_tokens, length, policy.network.config.vocab_size), "new", 8)
        print(json.dumps({"mode": "longest", "config": Path(args.config).name, "completion_tokens": length, **result}), flush=True)
        if result.get("oom"):
            break
        fits = length
    print(json.dumps({"mode": "longest", "config": Path(args.config).name, "longest_that_fits": fits, "context": context,
                      "prompt_tokens": args.prompt_tokens}), flush=True)


# ---------------------------------------------------------------- the loss alone (GPU)


def loss_mode(args) -> None:
    """Peak memory above the inputs and time of the scoring alone (head, log-softmax, gather,
    entropy, backward) on given hidden states; each side run twice, the second one reported."""
    from r1cli.train.logprobs import OutputHead, chunked_token_scores

    device = DEVICE
    hidden_size, vocab = (896, 151936) if DEVICE.type == "cuda" else (64, 5000)
    weight = torch.randn(vocab, hidden_size, device=device, requires_grad=True)

    def score(side, hidden, targets):
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            if side == "new":
                scores = chunked_token_scores(hidden, OutputHead(weight, None), targets, 1.0, with_entropy=True)
                return scores.logprobs_N, scores.entropy_N.detach()
            logprobs_NV = (torch.nn.functional.linear(hidden, weight).float() / 1.0).log_softmax(-1)
            with torch.no_grad():
                entropy = -(logprobs_NV.exp() * logprobs_NV).sum(-1)
            return logprobs_NV.gather(-1, targets[:, None]).squeeze(-1), entropy

    for tokens in args.tokens:
        inputs = torch.randn(tokens, hidden_size, device=device, dtype=torch.bfloat16)
        targets = torch.randint(vocab, (tokens,), device=device)
        for side in ("new", "old"):
            result: dict = {}
            for _ in range(2):
                hidden = inputs.clone().requires_grad_(True)
                weight.grad = None
                synchronize()
                base = allocated_bytes()
                reset_peak()
                started = time.perf_counter()
                try:
                    logprobs, entropy = score(side, hidden, targets)
                    logprobs.sum().backward()
                    synchronize()
                    result = {"peak_gib_above_inputs": round((peak_bytes() - base) / GiB, 2), "seconds": round(time.perf_counter() - started, 3),
                              "entropy_mean": round(entropy.float().mean().item(), 4)}
                    del logprobs, entropy
                except torch.OutOfMemoryError:
                    result = {"oom": True}
                    torch.cuda.empty_cache()
            print(json.dumps({"mode": "loss", "side": side, "tokens": tokens, "vocab": vocab, **result}), flush=True)


# ---------------------------------------------------------------- SFT (GPU)


def sft_mode(args) -> None:
    import types

    import legacy_logits

    import r1cli.recipes.sft as sft
    from r1cli.data.sft_rows import Row, StepPlan

    policy = make_policy(args.config, beta=0.0)
    vocab = policy.network.config.vocab_size
    rng = random.Random(0)
    rows = []
    for _ in range(args.rows):  # packed rows of 512-token examples, positions restarting per example
        ids = [rng.randrange(vocab) for _ in range(args.row_tokens)]
        positions = [i % 512 for i in range(args.row_tokens)]
        labels = [-100 if i % 512 == 0 else token for i, token in enumerate(ids)]
        rows.append(Row(ids, labels, positions))
    for side in ("new", "old"):
        saved = {name: getattr(module, name) for module, name in legacy_modules()}
        if side == "old":
            legacy_logits.install()
        state = types.SimpleNamespace(network=policy.network, rows=rows, tokenizer=types.SimpleNamespace(pad_token_id=0),
                                      plan=StepPlan(len(rows), args.rows if side == "new" else args.old_rows,
                                                    1 if side == "new" else args.rows // args.old_rows, 0),
                                      device=policy.device, dtype=torch.bfloat16, optimizer=policy.optimizer,
                                      max_tokens_per_batch=budget(policy) if side == "new" else None)
        sft.train_step(state, 0, 1.0)  # warm-up: optimizer state allocated
        synchronize()
        reset_peak()
        started = time.perf_counter()
        try:
            stats = sft.train_step(state, 1, 1.0)
            synchronize()
            seconds = time.perf_counter() - started
            result = {"tokens_per_s": round(stats.tokens / seconds), "seconds": round(seconds, 2),
                      "peak_gib": round(peak_bytes() / GiB, 1)}
        except torch.OutOfMemoryError:
            policy.optimizer.zero_grad(set_to_none=True)
            result = {"oom": True}
        restore(saved)
        print(json.dumps({"mode": "sft", "side": side, "rows": args.rows, "row_tokens": args.row_tokens, **result}), flush=True)


# ---------------------------------------------------------------- one r1 grpo step on the CPU


CPU_MODEL = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "max_position_embeddings": 1024, "vocab_size": 151936, "tie_word_embeddings": True}


def cpu_memory_mode(args) -> None:
    """Peak resident memory of one `r1 grpo` step (4 prompts x 8 completions x 128 tokens) of a
    2-layer, 64-wide model with Qwen's 151,936-token vocabulary, new path and old, each in a fresh process."""
    from r1cli.toy.tokenizer import TOKENIZER_DIR

    scratch = Path(tempfile.mkdtemp(prefix="lean-cpu-"))
    (scratch / "model.json").write_text(json.dumps({**CPU_MODEL, "tokenizer": str(TOKENIZER_DIR)}))
    prompts = [{"prompt": f"Ann has {n} pens, gets {m}. How many pens now?", "answer": str(n + m)} for n in range(2, 9) for m in (1, 2)]
    (scratch / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    for side in ("new", "old"):
        argv = ["grpo", str(scratch / "model.json"), str(scratch / "prompts.jsonl"), "--out", str(scratch / side), "--reward", "format",
                "--steps", "1", "--prompts-per-step", "4", "--num-generations", "8", "--max-new-tokens", "128", "--beta", "0.04",
                "--device", "cpu", "--save-every", "0"]
        peak, seconds = peak_rss_of([sys.executable, __file__, "child", *(["--legacy"] if side == "old" else []), "--", *argv])
        line = json.loads((scratch / side / "metrics.jsonl").read_text().splitlines()[0])
        print(json.dumps({"mode": "cpu-memory", "side": side, "peak_rss_gib": round(peak / GiB, 2), "seconds": round(seconds, 1),
                          "completion_length": line["completion_length"], "train_seconds": line["train_seconds"]}), flush=True)


def peak_rss_of(command: list[str]) -> tuple[int, float]:
    """Peak resident bytes of COMMAND (a fresh process, so that nothing else counts) and its wall seconds."""
    probe = ("import resource, subprocess, sys, time; t = time.time(); subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True).stdout.split()
    return int(out[-2]), float(out[-1])


def child_mode(argv: list[str], legacy: bool) -> None:
    if legacy:
        import legacy_logits

        legacy_logits.install()
    from r1cli.cli import main

    sys.argv = ["r1", *argv]
    main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["update", "loss", "longest", "sft", "cpu-memory", "child"])
    parser.add_argument("--config", default="bench/qwen2.5-0.5b-shape.json")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--completions", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--old-rows", type=int, default=8, help="the old path's rows per micro-batch")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192], help="loss mode: scored tokens")
    parser.add_argument("--new-budget", type=int, default=None, help="update mode: the new side's token budget [default: r1's]")
    parser.add_argument("--start", type=int, default=1024, help="longest mode: the first length tried")
    parser.add_argument("--rows", type=int, default=16, help="sft mode: rows per step")
    parser.add_argument("--row-tokens", type=int, default=4096)
    parser.add_argument("--legacy", action="store_true")
    parser.add_argument("--device", default="cuda")
    args, rest = parser.parse_known_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.mode == "child":
        return child_mode([a for a in rest if a != "--"], args.legacy)
    if args.mode != "cpu-memory":
        name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu"
        print(json.dumps({"device": name, "torch": torch.__version__, "config": Path(args.config).name}), flush=True)
    {"update": update_mode, "loss": loss_mode, "longest": longest_mode, "sft": sft_mode, "cpu-memory": cpu_memory_mode}[args.mode](args)


if __name__ == "__main__":
    main()
