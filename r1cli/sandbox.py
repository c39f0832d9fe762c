"""Running untrusted Python (model-written code) in a separate process with time and memory limits.

Each program runs in a fresh temporary directory, in its own process session, with an address
space limit; on timeout the whole process group is killed, so children it forked go too.
This is isolation against accidents (infinite loops, fork storms, runaway allocation), not a
security boundary against a determined adversary: use a container for that.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass
class RunResult:
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _limit(memory_bytes: int, cpu_seconds: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_python(program: str, *, timeout: float = 10.0, memory_mb: int = 1024) -> RunResult:
    """Run PROGRAM with `python -I` (no site dirs, no PYTHON* variables) under the limits."""
    with tempfile.TemporaryDirectory(prefix="r1-sandbox-") as workdir:
        path = os.path.join(workdir, "program.py")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(program)
        process = subprocess.Popen(
            [sys.executable, "-I", path],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_limit(memory_mb * 1024 * 1024, int(timeout) + 1),
            env={"PATH": os.environ.get("PATH", ""), "HOME": workdir, "TMPDIR": workdir},
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout)
            return RunResult(process.returncode, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))
        except subprocess.TimeoutExpired:
            return RunResult(None, "", "timed out")
        finally:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()
