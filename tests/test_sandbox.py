"""The code reward under attack: each completion below tries to be paid without solving the
task, or to reach outside its check. Each must score 0, and leave nothing behind.

Each attack is written so that it scores 1 exactly when it works (its task's test expects
`True`, and the attack returns whether it got through), so a hole in the sandbox fails a test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from conftest import shared_records

from r1cli.rewards.code import code
from r1cli.rewards.sandbox import isolation_mode

# A task whose only test is `assert candidate() == True`: an attack returns True iff it worked.
PROBE = {"prompt": 'def probe():\n    """Whether the attack worked."""\n', "entry_point": "probe", "test": "def check(candidate):\n    assert candidate() == True\n"}
# A task with real expected values, for the attacks on the comparison.
SQUARE = {"prompt": 'def square(x):\n    """Return x squared."""\n', "entry_point": "square",
          "test": "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-4) == 16\n    assert candidate(10) == 100\n"}
MBPP = {"prompt": "Write a function to square a number.", "code_header": "def square(x):",
        "test_list": ["assert square(3) == 9", "assert square(-4) == 16", "assert square(10) == 100"], "test_imports": []}

namespaced = pytest.mark.skipif(isolation_mode() == "plain", reason="needs Linux namespaces: without them the sandbox cannot stop this (its warning says so)")


def score(program: str, task: dict = PROBE, timeout: float = 10, memory_mb: int = 512) -> float:
    completion = f"<think>.</think>\n```python\n{textwrap.dedent(program).strip()}\n```"
    return code({**task, "completion": completion}, timeout=timeout, memory_mb=memory_mb)


def test_a_correct_solution_scores_1_and_a_wrong_one_0():
    assert score("def square(x):\n    return x * x", SQUARE) == 1.0
    assert score("def square(x):\n    return x + x", SQUARE) == 0.0
    assert score("def square(x):\n    return x * x", MBPP) == 1.0
    assert score("def square(x):\n    return 9 if x == 3 else 0", MBPP) == 0.0  # one assert of three: no credit
    assert score("def probe():\n    return True") == 1.0


def test_canonical_humaneval_solutions_score_1():
    tasks = shared_records("humaneval", "test")[::41]
    for task in tasks:
        assert score(task["prompt"] + task["canonical_solution"], task) == 1.0, task["task_id"]


# ---------------------------------------------------------------- ending the process early


@pytest.mark.parametrize("ending", [
    "import sys\nsys.exit(0)",
    "raise SystemExit",
    "import os\nos._exit(0)",
    "import atexit, os\natexit.register(os._exit, 0)\nraise SystemExit(0)",
    "def square(x):\n    import sys\n    sys.exit(0)",
    "def square(x):\n    import os\n    os._exit(0)",
], ids=["sys.exit", "SystemExit", "os._exit", "atexit", "exit-in-call", "os._exit-in-call"])
def test_ending_the_process_early_is_a_failure(ending):
    assert score(ending, SQUARE) == 0.0
    assert score(ending, MBPP) == 0.0


# ---------------------------------------------------------------- rigged comparisons


def test_an_object_equal_to_everything_fails():
    rigged = """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __bool__(self): return True
        def square(x):
            return Anything()
    """
    assert score(rigged, SQUARE) == 0.0
    assert score(rigged, MBPP) == 0.0


def test_a_subclass_of_a_builtin_with_a_rigged_eq_fails():
    rigged = """
        class Int(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def square(x):
            return Int(0)
    """
    assert score(rigged, SQUARE) == 0.0


SNOOP = r"""
    import gc, glob, os, re, sys
    def _memory():
        frame = sys._getframe()
        while frame is not None:
            yield from (c for c in frame.f_code.co_consts if isinstance(c, str))
            yield from (v for v in frame.f_globals.values() if isinstance(v, str))
            frame = frame.f_back
        yield from (o for o in gc.get_objects() if isinstance(o, str))
    def _files():
        for path in glob.glob("*") + glob.glob("/tmp/**", recursive=True) + glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/fd/*"):
            try:
                with open(path, errors="replace") as handle:
                    yield handle.read(1 << 20)
            except Exception:
                pass
    def square(x):
        for text in WHERE():
            found = re.search(r"candidate\(" + re.escape(repr(x)) + r"\) == (\d+)", text)
            if found:
                return int(found.group(1))
        return None
"""


def test_reading_the_expected_values_out_of_memory_fails():
    # The calling frames and every object the interpreter holds: the tests are not there.
    assert score(SNOOP.replace("WHERE", "_memory"), SQUARE) == 0.0


@namespaced
def test_reading_the_expected_values_out_of_files_fails():
    # Files beside it and in /tmp, other processes' command lines and descriptors.
    assert score(SNOOP.replace("WHERE", "_files"), SQUARE) == 0.0


def test_printing_the_old_pass_marker_fails():
    assert score("print('__r1_passed__ 3')\nimport sys\nsys.exit(0)", MBPP) == 0.0
    assert score("def square(x):\n    print('__r1_passed__ 3')\n    return 0", MBPP) == 0.0


def test_replacing_builtins_fails():
    patched = """
        import builtins
        builtins.exec = lambda *a, **k: None
        builtins.AssertionError = type("Nothing", (Exception,), {})
        builtins.abs = lambda x: 0
        def square(x):
            return 0
    """
    assert score(patched, MBPP) == 0.0
    assert score(patched, SQUARE) == 0.0


def test_forging_a_report_on_every_descriptor_fails():
    forge = """
        import json, os, struct
        fake = json.dumps({"passed": [True], "complete": True}).encode()
        framed = struct.pack(">I", len(fake)) + fake
        for fd in range(3, 1024):
            for data in (fake, framed):
                try:
                    os.write(fd, data)
                except OSError:
                    pass
        def square(x):
            return 0
    """
    assert score(forge, SQUARE) == 0.0


# ---------------------------------------------------------------- reaching outside


@namespaced
def test_killing_the_scorer_fails_and_the_scorer_survives():
    attack = """
        import os, signal
        def probe():
            if os.getpid() > 16:  # not in a PID namespace of its own: signalling everything would hit the host
                return True
            for pid in {os.getppid(), 1}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.kill(-1, signal.SIGKILL)  # every process this user may signal
            except OSError:
                pass
            return False
    """
    # Scored in a child process: if the attack got out, that child dies, not the test run.
    completion = f"```python\n{textwrap.dedent(attack).strip()}\n```"
    script = f"from r1cli.rewards.code import code\nprint('score', code({{**{PROBE!r}, 'completion': {completion!r}}}, timeout=10, memory_mb=512))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "score 0.0" in result.stdout


@namespaced
def test_the_scorers_environment_is_out_of_reach(monkeypatch):
    secret = f"r1-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("R1_TEST_SECRET", secret)
    attack = f"""
        import glob, os
        def probe():
            if "{secret}" in str(os.environ):
                return True
            for path in glob.glob("/proc/*/environ"):
                try:
                    if b"{secret}" in open(path, "rb").read():
                        return True
                except OSError:
                    pass
            return False
    """
    assert score(attack) == 0.0


def test_the_child_environment_is_empty():
    assert score("import os\ndef probe():\n    return os.environ == {} or set(os.environ) <= {'LC_CTYPE'}") == 1.0


@namespaced
def test_writing_outside_the_private_tmp_fails(tmp_path):
    target = tmp_path / "escaped"
    attack = f"""
        import os
        def probe():
            wrote = False
            for path in ("{target}", "/usr/r1-escaped", "/r1-escaped", "/root/r1-escaped"):
                try:
                    with open(path, "w") as handle:
                        handle.write("x")
                    wrote = True
                except OSError:
                    pass
            return wrote
    """
    assert score(attack) == 0.0
    assert not any(os.path.exists(p) for p in (target, "/usr/r1-escaped", "/r1-escaped", "/root/r1-escaped"))
    # Its own /tmp is writable (programs may need scratch space), and private.
    assert score("def probe():\n    open('/tmp/scratch', 'w').write('x')\n    return open('/tmp/scratch').read() == 'x'") == 1.0


@namespaced
def test_the_hosts_files_are_not_visible(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("r1-secret")
    attack = f"""
        import os
        def probe():
            found = []
            for path in ("/etc/passwd", "/etc/shadow", "{secret}"):
                try:
                    found.append(len(open(path).read()) > 0)
                except OSError:
                    pass
            try:
                found += [os.path.isfile(os.path.join("/root", name)) for name in os.listdir("/root")]
            except OSError:
                pass
            try:
                found += [True for name in os.listdir("/home")]
            except OSError:
                pass
            return any(found)
    """
    assert os.path.exists("/etc/passwd")  # the host has it: the sandbox hides it
    assert score(attack) == 0.0


@namespaced
def test_the_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    attack = f"""
        import socket
        def probe():
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                return True
            except OSError:
                return False
    """
    try:
        assert score(attack) == 0.0
    finally:
        server.close()


@namespaced
def test_a_daemon_does_not_outlive_the_check():
    marker = f"r1-daemon-{uuid.uuid4().hex}"
    attack = f"""
        import subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{marker}"], start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def probe():
            return True
    """
    assert score(attack) == 1.0  # the daemon started: the program itself is fine
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert alive == []


@pytest.mark.skipif(isolation_mode() != "root" and os.geteuid() == 0, reason="the process cap binds root only through the sandbox's own users")
def test_children_cannot_multiply_the_memory_limit():
    # Each child holds 3/4 of the per-process limit; fifteen of them would hold 11 times it.
    attack = """
        import os, time
        def probe():
            held = 0
            for _ in range(15):
                read, write = os.pipe()
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    try:
                        block = bytearray(96 * 1024 * 1024)
                        os.write(write, b"1")
                        time.sleep(30)
                    finally:
                        os._exit(0)
                os.close(write)
                held += len(os.read(read, 1))
            return held >= 10
    """
    assert score(attack, memory_mb=128, timeout=20) == 0.0


def test_a_program_that_never_finishes_fails_within_the_time_limit():
    started = time.time()
    assert score("import time\ndef probe():\n    time.sleep(100)", timeout=2) == 0.0
    assert time.time() - started < 5


# ---------------------------------------------------------------- privileges inside (found by review)


@namespaced
def test_no_capability_is_left_to_mount_chroot_or_trace():
    attack = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        def probe():
            if os.getpid() > 16:
                return True
            os.makedirs("/tmp/p", exist_ok=True)
            mounted = libc.mount(b"proc", b"/tmp/p", b"proc", 0, None) == 0
            try:
                os.makedirs("/tmp/jail", exist_ok=True)
                os.chroot("/tmp/jail")
                rooted = True
            except OSError:
                rooted = False
            traced = libc.ptrace(16, 1, None, None) == 0  # PTRACE_ATTACH to the judge
            header = (ctypes.c_uint32 * 2)(0x20080522, 0)
            data = (ctypes.c_uint32 * 6)()
            libc.capget(header, data)
            return mounted or rooted or traced or any(data)
    """
    assert score(attack) == 0.0


@namespaced
def test_the_hosts_tree_is_detached_not_just_hidden(tmp_path):
    # The classic chroot escape (a descriptor to /, chroot elsewhere, climb out) finds nothing.
    target = tmp_path / "escaped"
    attack = f"""
        import os
        def probe():
            if os.getpid() > 16:
                return True
            try:
                real = os.open("/", os.O_RDONLY)
                os.makedirs("/tmp/jail", exist_ok=True)
                os.chroot("/tmp/jail")
                os.fchdir(real)
                for _ in range(64):
                    os.chdir("..")
                os.chroot(".")
            except OSError:
                pass
            found = os.path.exists("{tmp_path}") or os.path.exists("/etc/passwd") or os.path.exists("/work")
            try:
                open("{target}", "w").write("x")
                found = True
            except OSError:
                pass
            return found
    """
    assert score(attack) == 0.0 and not target.exists()


@namespaced
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the attack sets x86-64 registers")
def test_forging_the_report_through_proc_and_ptrace_fails():
    # With privileges it should not have, a solution could mount /proc, read the nonce from the
    # judge's memory, write a report into the judge's pipe and make the judge exit.
    attack = r"""
        import ctypes, json, os, re
        libc = ctypes.CDLL(None, use_errno=True)
        def _forge():
            if os.getpid() > 16:
                return
            os.makedirs("/tmp/p", exist_ok=True)
            if libc.mount(b"proc", b"/tmp/p", b"proc", 0, None) != 0:
                return
            nonces = set()
            memory = open("/tmp/p/1/mem", "rb", 0)
            for line in open("/tmp/p/1/maps"):
                span, permissions = line.split()[:2]
                low, high = (int(x, 16) for x in span.split("-"))
                if permissions.startswith("rw") and high - low <= 64 << 20:
                    try:
                        memory.seek(low)
                        nonces.update(re.findall(rb"\0{8}([0-9a-f]{32})\0", memory.read(high - low)))
                    except OSError:
                        pass
            settings = json.loads(open("/tmp/p/1/cmdline", "rb").read().split(b"\0")[4])
            for nonce in nonces:
                fd = os.open("/tmp/p/1/fd/%d" % settings["report_fd"], os.O_WRONLY)
                os.write(fd, json.dumps({"nonce": nonce.decode(), "passed": [True], "complete": True}).encode())
                os.close(fd)
            libc.ptrace(16, 1, None, None)
        def square(x):
            _forge()
            return 0
    """
    assert score(attack, SQUARE) == 0.0


def test_a_forged_setup_error_does_not_switch_the_sandbox_off():
    before = isolation_mode()
    forge = """
        import json, os
        for fd in range(3, 256):
            try:
                os.write(fd, json.dumps({"setup_error": "x"}).encode())
            except OSError:
                pass
        def square(x):
            return 0
    """
    assert score(forge, SQUARE) == 0.0
    assert isolation_mode() == before
    assert score("def square(x):\n    return x * x", SQUARE) == 1.0


@namespaced
def test_a_check_does_not_outlive_a_killed_scorer():
    marker = f"r1-orphan-{uuid.uuid4().hex}"
    completion = f"```python\nimport time\ndef probe():\n    time.sleep(3600)  # {marker}\n```"
    script = (f"from r1cli.rewards.code import code\n"
              f"code({{**{PROBE!r}, 'completion': {completion!r}}}, timeout=3, memory_mb=256)\n")
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 30
    while not subprocess.run(["pgrep", "-f", "sandbox_judge"], capture_output=True).stdout and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.kill()  # the scorer dies mid-check: nothing waits on the sandbox any more
    process.wait()
    time.sleep(6)  # past the check's own deadline (3 s + 2 s)
    assert subprocess.run(["pgrep", "-f", "sandbox_judge"], capture_output=True, text=True).stdout.split() == []


# ---------------------------------------------------------------- what the tests call (found by review)


def test_the_named_function_is_called_even_where_it_shadows_a_builtin():
    task = {"prompt": "Write a function to add two numbers.", "code_header": "import math\ndef max(a, b):",
            "test_list": ["assert max(1, 2) == 3", "assert max(2, 2) == 4"], "test_imports": []}
    assert score("def max(a, b):\n    return a + b", task) == 1.0
    assert score("pass", task) == 0.0  # Python's own max would pass neither, nor does an empty program
    shadowing = {"prompt": "Sum of common divisors.", "code": "def sum(a, b):\n    return 0\n",
                 "test_list": ["assert sum(10, 15) == 6"], "test_imports": []}
    assert score("def sum(a, b):\n    return sum_([i for i in range(1, min(a, b)) if a % i == 0 and b % i == 0])\n"
                 "def sum_(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total", shadowing) == 1.0


def test_partial_credit_is_not_paid():
    task = {"prompt": "Is it even?", "code_header": "def is_even(n):",
            "test_list": ["assert is_even(2) == True", "assert is_even(4) == True", "assert is_even(3) == False"], "test_imports": []}
    assert score("def is_even(n):\n    return True", task) == 0.0
    assert score("def is_even(n):\n    return n % 2 == 0", task) == 1.0


@pytest.mark.skipif(isolation_mode() != "root" or not os.access("/sys/fs/cgroup/memory", os.W_OK),
                    reason="a cgroup bounds the whole tree only where one is writable")
def test_a_cgroup_bounds_the_whole_trees_memory():
    attack = """
        import os, time
        def probe():
            children = []
            for _ in range(3):
                read, write = os.pipe()
                pid = os.fork()
                if pid == 0:
                    try:
                        block = bytearray(80 * 1024 * 1024)
                        for i in range(0, len(block), 4096):
                            block[i] = 1
                        os.write(write, b"1")
                        time.sleep(30)
                    finally:
                        os._exit(0)
                os.close(write)
                if os.read(read, 1):
                    children.append(pid)
            time.sleep(0.5)
            # Held at once: every child that filled its block is still alive (not killed to make room).
            alive = [pid for pid in children if os.waitpid(pid, os.WNOHANG) == (0, 0)]
            return len(alive) >= 3
    """
    assert score(attack, memory_mb=128, timeout=20) == 0.0  # 3 x 80 MB > 128 MB in all


# ---------------------------------------------------------------- state beyond the check (found by review)


@namespaced
@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="the syscall filter has tables for x86-64 and arm64")
def test_kernel_objects_that_outlive_or_cross_checks_are_denied():
    # Keyrings (the scorer's session keyring, named or persistent ones), SysV shared memory and
    # message queues, memfd and file locks: state another check could read, or memory no limit counts.
    attack = """
        import ctypes, fcntl, os
        libc = ctypes.CDLL(None, use_errno=True)
        def probe():
            got = []
            got.append(libc.syscall({"x86_64": 248, "aarch64": 217}[os.uname().machine], b"user", b"r1-probe", b"x", 1, -3) >= 0)
            got.append(libc.shmget(0, 1 << 20, 0o1600) >= 0)
            got.append(libc.msgget(0, 0o1600) >= 0)
            try:
                os.memfd_create("r1")
                got.append(True)
            except OSError:
                got.append(False)
            fd = os.open("/tmp/lock", os.O_CREAT | os.O_RDWR)
            for lock in (lambda: fcntl.flock(fd, fcntl.LOCK_EX), lambda: fcntl.lockf(fd, fcntl.LOCK_EX)):
                try:
                    lock()
                    got.append(True)
                except OSError:
                    got.append(False)
            return any(got)
    """
    assert score(attack) == 0.0
    # Ordinary descriptor work is untouched by the filter.
    assert score("import fcntl, os\ndef probe():\n    fd = os.open('/tmp/x', os.O_CREAT | os.O_RDWR)\n"
                 "    return fcntl.fcntl(fd, fcntl.F_GETFD) >= 0") == 1.0


@namespaced
def test_installed_packages_are_not_visible():
    import site

    packages = [p for p in site.getsitepackages() if os.path.isdir(p)]
    assert packages
    attack = f"""
        import os
        def probe():
            return any(os.listdir(p) for p in {packages!r} if os.path.isdir(p))
    """
    assert score(attack) == 0.0


def test_every_call_of_a_test_happens_whatever_the_answers():
    # A test that stopped at its first failed assert would tell the solution, by the calls that
    # never come, which of its answers were wrong: the asserts are deferred to the end.
    from r1cli.rewards.code import FAILURES, deferred_asserts

    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 4\n    assert candidate(3) == 6, 'msg'\n"
    for answers, failed in (({1: 0, 2: 0, 3: 0}, 3), ({1: 2, 2: 0, 3: 6}, 1), ({1: 2, 2: 4, 3: 6}, 0)):
        calls = []

        def candidate(x, answers=answers, calls=calls):
            calls.append(x)
            return answers[x]

        namespace = {}
        exec(deferred_asserts(test), namespace)
        namespace["check"](candidate)
        assert calls == [1, 2, 3] and len(namespace[FAILURES]) == failed
    assert score("def square(x):\n    return 9 if x == 3 else 0", SQUARE) == 0.0  # a deferred failure still fails


def test_a_response_of_backticks_is_read_in_linear_time():
    started = time.time()
    assert code({**SQUARE, "completion": "`" * 80_000}, timeout=10, memory_mb=256) == 0.0
    assert time.time() - started < 1.0
