"""Running model-written code against tests, so that only a correct program can pass.

Written by hand because it is the product: an RL policy searches for any way to be paid, and a
code reward it can satisfy without solving the task (exit early, print the pass marker, return
an object equal to everything, read the expected values, kill its scorer) would be found.

Each check runs `sandbox_judge.py` in fresh Linux namespaces (`unshare` from util-linux): no
network, a PID namespace (nothing outlives the check; the scorer cannot be signalled), a private
filesystem root holding only the system directories and the interpreter, read-only, and a
private /tmp; an empty environment; the solution as an unprivileged user apart from the judge;
limits on address space per process, processes (so the tree's memory is bounded by
processes x memory), CPU, file size and open files; and a wall-clock limit on the whole check.
Inside, a judge process runs the tests and calls the solution's functions in another process
through a pipe; only plain builtin values cross, so every comparison is Python's own. The
judge alone holds the report pipe, and reports once, after every test ran, with a per-check
random nonce: an early exit, a crash or a timeout is a failure, never a pass.

Where namespaces are not available (not Linux, no `unshare`, or a kernel or container that
forbids them), the same judge and worker run as plain processes, with the limits and the
empty environment but without network, filesystem and PID isolation; a warning says so once.
The solution's process also runs under a seccomp filter denying the kernel objects that outlive
a check or cross between checks (keyrings, SysV IPC, memfd, file locks, inotify, io_uring),
with a session keyring of its own. What remains possible even with namespaces: a program that
solves the task only for the tests' inputs (hard-coding outputs it can infer from the prompt),
timing channels between checks that run at the same time, and attacks on the kernel.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from r1cli.console import warn
from r1cli.errors import UserError

JUDGE = Path(__file__).with_name("sandbox_judge.py")
MODES = ("root", "userns", "plain")
FIRST_SANDBOX_UID = 0x30000  # ids of nobody's account, far above any ordinary user's
_mode_lock = threading.Lock()
_mode: dict[str, str] = {}


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # seconds for the whole check, wall clock
    memory_mb: int = 1024  # address space of each process
    processes: int = 8  # processes and threads of the solution's user at once
    file_mb: int = 16  # largest file the solution may write
    tmp_mb: int = 64  # the private filesystem (its /tmp included)


@dataclass(frozen=True)
class TestSuite:
    """What the judge runs: SETUP (trusted code: imports, the prompt's helper functions), then
    each of TESTS in the same namespace. NAMES are the solution's functions the tests call;
    None: every name the tests read that neither the setup nor Python defines."""

    setup: str
    tests: tuple[str, ...]
    names: tuple[str, ...] | None = None


@dataclass
class CheckResult:
    passed: list[bool]  # one per test; all False when the check produced no trusted report
    reported: bool  # whether the judge's report arrived (False: timeout, crash, setup failure)

    @property
    def share(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def run_tests(program: str, suite: TestSuite, limits: Limits = Limits()) -> CheckResult:
    """Run PROGRAM (the solution) and SUITE in the sandbox; each test's outcome."""
    report = _run(program, suite, limits, isolation_mode())
    failed = [False] * len(suite.tests)
    # No report, a setup error (the probe succeeded, so the check itself caused it), or anything
    # but a complete one: a failure. Nothing a program does can switch the sandbox off.
    if report is None or report.get("complete") is not True:
        return CheckResult(failed, reported=False)
    passed = report.get("passed")
    if not isinstance(passed, list) or len(passed) != len(suite.tests) or not all(isinstance(p, bool) for p in passed):
        return CheckResult(failed, reported=False)
    return CheckResult(passed, reported=True)


# ---------------------------------------------------------------- isolation mode


def isolation_mode() -> str:
    """`root` or `userns` where Linux namespaces work here (checked once per process), else `plain`."""
    with _mode_lock:
        if "mode" not in _mode:
            remove_stale_workdirs()
            forced = os.environ.get("R1_SANDBOX")
            if forced in MODES:
                _mode["mode"] = forced
            else:
                _mode["mode"] = _probe()
        return _mode["mode"]


def _probe() -> str:
    if not sys.platform.startswith("linux"):
        return _fallback_mode("namespaces are Linux's")
    if shutil.which("unshare") is None:
        return _fallback_mode("`unshare` (util-linux) is not installed")
    mode = "root" if os.geteuid() == 0 else "userns"
    suite = TestSuite(setup="", tests=("assert f() == 1",), names=("f",))
    report = _run("def f():\n    return 1\n", suite, Limits(timeout=20), mode)
    if report is None:
        return _fallback_mode("`unshare` could not start the sandbox")
    if "setup_error" in report:
        return _fallback_mode(f"setting up the sandbox failed: {report['setup_error']}")
    if report.get("passed") != [True]:
        return _fallback_mode("the sandbox did not run a trivial check")
    return mode


def _fallback_mode(reason: str) -> str:
    warn(
        f"code sandbox without Linux namespaces ({reason}): programs run as this user with time, memory, "
        "process and file limits and an empty environment, but with network access, this machine's files "
        "(they can change r1 itself), other processes of this user within reach, and the means to forge "
        "their own score; `r1 grpo` refuses the code reward here unless R1_SANDBOX=plain is set"
    )
    return "plain"


def require_isolation(what: str) -> None:
    """Refuse WHAT (training against the code reward) where a program could forge its score,
    unless the user chose to run without namespaces (R1_SANDBOX=plain)."""
    if isolation_mode() == "plain" and os.environ.get("R1_SANDBOX") != "plain":
        raise UserError(f"{what}: the code sandbox needs Linux namespaces (`unshare`), which are not available here, and "
                        "without them a policy can learn to forge its score; set R1_SANDBOX=plain to train anyway")


# ---------------------------------------------------------------- one check


def _run(program: str, suite: TestSuite, limits: Limits, mode: str) -> dict | None:
    """Start the judge, send it the request, wait for its report (or the deadline)."""
    nonce = secrets.token_hex(16)
    uid = FIRST_SANDBOX_UID + 2 * secrets.randbelow(1_000_000)  # a fresh pair of users per check, whatever ran before
    python = os.path.realpath(sys.executable)
    workdir = tempfile.mkdtemp(prefix=f"r1-sandbox-{os.getpid()}-") if mode == "plain" else None
    cgroups = _make_cgroups(limits) if mode != "plain" else []
    settings = {  # how to isolate: on the command line, nothing secret
        "mode": mode, "uid": uid, "workdir": workdir, "cgroups": cgroups,
        "python_prefixes": sorted({os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(python))}),
        "hidden": _installed_packages(),
        "limits": {"timeout": limits.timeout, "memory_mb": limits.memory_mb, "processes": limits.processes,
                   "file_mb": limits.file_mb, "tmp_mb": limits.tmp_mb},
    }
    request = {  # what to check: on stdin, read by the judge only after the solution's process exists
        "nonce": nonce, "program": program,
        "suite": {"setup": suite.setup, "tests": list(suite.tests), "names": None if suite.names is None else list(suite.names)},
    }
    report_r, report_w = os.pipe()
    settings["report_fd"] = report_w
    command = [python, "-I", "-S", str(JUDGE), json.dumps(settings)]
    if mode in ("root", "userns"):
        flags = ["--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child", "--propagation", "private"]
        if mode == "userns":
            flags = ["--user", "--map-root-user", *flags]
        command = [shutil.which("unshare") or "unshare", *flags, *command]
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(report_w,), env={}, cwd=workdir or "/", start_new_session=True,
        )
    except OSError:
        os.close(report_r)
        os.close(report_w)
        _remove(workdir)
        return None
    os.close(report_w)
    deadline = time.monotonic() + limits.timeout
    try:
        try:
            process.stdin.write(json.dumps(request).encode("utf-8"))
            process.stdin.close()
        except OSError:
            pass
        data = _read_until(report_r, deadline)
    finally:
        os.close(report_r)
        _stop(process)
        _remove(workdir)
        _remove_cgroups(cgroups)
    try:
        report = json.loads(data) if data else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(report, dict) or report.get("nonce") != nonce:
        return None
    return report


def _installed_packages() -> list[str]:
    """The interpreter's site-packages directories: inside its prefix, but not the standard library."""
    import site
    import sysconfig

    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    found = [*site.getsitepackages(), sysconfig.get_path("purelib", vars=base), sysconfig.get_path("platlib", vars=base)]
    return sorted({os.path.realpath(p) for p in found if os.path.isdir(p)})


def _read_until(fd: int, deadline: float, limit: int = 1 << 20) -> bytes:
    """What arrives on FD until its writer closes it, the deadline passes, or LIMIT bytes."""
    chunks, size = [], 0
    while size < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""  # a report that did not finish in time does not count
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return b""
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _stop(process: subprocess.Popen) -> None:
    """Kill what is left: `unshare --kill-child` takes the namespace's PID 1, and with it every
    process of the check; without namespaces, the process group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _remove(workdir: str | None) -> None:
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------- cgroups, where writable
#
# A control group per check bounds the memory and the processes of its whole tree (rather than
# each process's address space times the process cap). cgroup v1's memory and pids hierarchies,
# or a cgroup v2 root that delegates both, writable only by root in practice.

CGROUP_V1 = {"memory": "/sys/fs/cgroup/memory", "pids": "/sys/fs/cgroup/pids"}
CGROUP_V2 = "/sys/fs/cgroup"
_cgroup_layout: dict[str, str] = {}
_cgroup_lock = threading.Lock()
_cgroup_names = itertools.count()


def _cgroup_kind() -> str:
    with _cgroup_lock:
        if "kind" not in _cgroup_layout:
            _cgroup_layout["kind"] = _probe_cgroups()
        return _cgroup_layout["kind"]


def _probe_cgroups() -> str:
    if all(os.access(path, os.W_OK) and os.path.isfile(f"{path}/cgroup.procs") for path in CGROUP_V1.values()):
        return "v1"
    controllers = Path(CGROUP_V2, "cgroup.subtree_control")
    if controllers.is_file() and {"memory", "pids"} <= set(controllers.read_text().split()) and os.access(CGROUP_V2, os.W_OK):
        return "v2"
    return "none"


def _make_cgroups(limits: Limits) -> list[str]:
    kind = _cgroup_kind()
    if kind == "none":
        return []
    name = f"r1-sandbox-{os.getpid()}-{next(_cgroup_names)}"
    memory = str(limits.memory_mb << 20)
    if kind == "v1":
        settings = {CGROUP_V1["memory"]: {"memory.limit_in_bytes": memory}, CGROUP_V1["pids"]: {"pids.max": str(limits.processes + 1)}}
    else:
        settings = {CGROUP_V2: {"memory.max": memory, "memory.swap.max": "0", "pids.max": str(limits.processes + 1)}}
    made = []
    try:
        for root, values in settings.items():
            path = os.path.join(root, name)
            os.mkdir(path)
            made.append(path)
            for file, value in values.items():
                if os.path.exists(os.path.join(path, file)):
                    Path(path, file).write_text(value)
    except OSError:
        _remove_cgroups(made)
        return []
    return made


def _remove_cgroups(paths: list[str]) -> None:
    for path in paths:
        for _ in range(50):  # the check's processes leave the group a moment after they are killed
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)


def remove_stale_workdirs() -> None:
    """Working directories of plain-mode checks whose r1 process died (a kill mid-check)."""
    roots = [Path(tempfile.gettempdir()), *(Path(p) for p in (*CGROUP_V1.values(), CGROUP_V2))]
    for path in (entry for root in roots if root.is_dir() for entry in root.glob("r1-sandbox-*-*")):
        try:
            pid = int(path.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            if path.parent == Path(tempfile.gettempdir()):
                shutil.rmtree(path, ignore_errors=True)
            else:
                _remove_cgroups([str(path)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
