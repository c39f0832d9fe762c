"""Throughput of the `code` reward: the sandboxed judge against a plain subprocess per program.

Both sides score the same 164 canonical HumanEval solutions in one run, with the same number of
threads. The reference is the harness r1 used before the sandbox: the prompt, the solution and
the tests concatenated into one program, run by `python -I` in a subprocess with an address-space
limit, passing when it exits with status 0 (which a program can fake with `sys.exit(0)`).

    python bench/code_reward.py [--data ../shared/data/humaneval/test.jsonl] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from r1cli.rewards.code import code
from r1cli.rewards.sandbox import isolation_mode


def reference_check(task: dict) -> float:
    """One program, one `python -I` subprocess, exit status 0 = pass."""
    program = f"{task['prompt']}{task['canonical_solution']}\n\n{task['test']}\n\ncheck({task['entry_point']})\n"
    with tempfile.TemporaryDirectory(prefix="r1-bench-") as workdir:
        path = os.path.join(workdir, "program.py")
        Path(path).write_text(program, encoding="utf-8")

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

        result = subprocess.run([sys.executable, "-I", path], cwd=workdir, capture_output=True, timeout=10,
                                preexec_fn=limit, env={"PATH": os.environ.get("PATH", "")})
    return float(result.returncode == 0)


def sandboxed_check(task: dict) -> float:
    completion = f"<think>.</think>\n```python\n{task['canonical_solution']}```\n"
    return code({**task, "completion": completion}, timeout=10, memory_mb=1024)


def timed(check, tasks: list[dict], threads: int) -> tuple[float, list[float]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        scores = list(pool.map(check, tasks))
    return time.perf_counter() - started, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/humaneval/test.jsonl"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tasks = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines()]
    print(f"{len(tasks)} canonical HumanEval solutions, {args.threads} threads, sandbox mode: {isolation_mode()}")
    results = {}
    for name, check in (("reference (plain subprocess)", reference_check), ("r1 sandbox (judge + worker)", sandboxed_check)):
        timed(check, tasks[:8], args.threads)  # warm-up
        runs = [timed(check, tasks, args.threads) for _ in range(args.repeats)]
        seconds = statistics.median(t for t, _ in runs)
        passed = sum(runs[-1][1])
        results[name] = seconds
        print(f"{name:30s} median {seconds:6.2f} s  {len(tasks) / seconds:6.1f} checks/s  passed {passed:.0f}/{len(tasks)}"
              f"  runs {', '.join(f'{t:.2f}' for t, _ in runs)}")
    reference, ours = results.values()
    print(f"ratio (sandbox time / reference time): {ours / reference:.2f}x")


if __name__ == "__main__":
    main()
