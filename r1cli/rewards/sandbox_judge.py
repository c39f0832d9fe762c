"""The inside of the code sandbox: set up isolation, start the solution, run the tests, report.

Run as `python -I -S sandbox_judge.py` (standard library only) by `r1cli.rewards.sandbox`, usually as
PID 1 of fresh Linux namespaces. It reads one JSON request on stdin and writes one JSON report
on the file descriptor the request names, a pipe only this process holds. Two processes do the work:

- the solution ("worker"): a fresh interpreter that runs the model's program and nothing else,
  as another user (or with every capability dropped), with an empty environment, no network,
  a private /tmp and no view of the host's files beyond the system directories Python needs;
  it answers calls of its functions over a pipe, returning plain values only;
- the judge (this process): runs the tests, which the worker never sees, calling the worker's
  functions through proxies, and compares what comes back with its own, untouched builtins.
  Only the judge can write the report, and it writes it once, after every test ran, with the
  request's nonce. Whatever the solution does - exit early, print markers, patch builtins,
  return objects with a rigged `__eq__`, kill itself - can only make tests fail.
"""

from __future__ import annotations

import builtins
import collections
import ctypes
import json
import os
import resource
import signal
import struct
import sys

MAX_FRAME = 64 << 20  # bytes of one message between judge and worker

# Linux mount(2) and prctl(2) constants (not in the standard library).
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 32, 4096, 16384, 1024, 2048, 1 << 21
ST_TO_MS = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: MS_NOATIME, 2048: MS_NODIRATIME, 4096: MS_RELATIME}
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LAST_CAPABILITY = 63
LINUX_CAPABILITY_VERSION_3 = 0x20080522
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# ---------------------------------------------------------------- plain values across the pipe
#
# Only exact builtin types cross, tagged, so that a value the judge decodes is always a plain
# builtin object: its comparisons are Python's own, never the solution's.

_SCALARS = {type(None): "n", bool: "b", int: "i", float: "f", complex: "c", str: "s", bytes: "y"}
_CONTAINERS = {list: "l", tuple: "t", set: "S", frozenset: "F", dict: "d",
               # the standard library's containers, rebuilt by the judge as its own (trusted) types
               collections.Counter: "C", collections.OrderedDict: "O", collections.defaultdict: "d", collections.deque: "q"}
_REBUILD = {"l": list, "t": tuple, "S": set, "F": frozenset, "q": collections.deque}
_MAPPINGS = {"d": dict, "C": collections.Counter, "O": collections.OrderedDict}


def encode(value, depth: int = 0):
    kind = type(value)
    if depth > 200:
        raise TypeError("value nested too deeply")
    if kind in _SCALARS:
        tag = _SCALARS[kind]
        if tag == "n":
            return ["n"]
        if tag in ("b", "s"):
            return [tag, value]
        if tag == "i":
            return ["i", str(value)]
        if tag == "f":
            return ["f", value.hex()]
        if tag == "c":
            return ["c", value.real.hex(), value.imag.hex()]
        return ["y", value.hex()]
    if kind in _CONTAINERS:
        tag = _CONTAINERS[kind]
        if tag in _MAPPINGS:
            return [tag, [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
        return [tag, [encode(item, depth + 1) for item in value]]
    raise TypeError(f"{kind.__name__} is not a plain value")


def decode(data, depth: int = 0):
    """The plain value DATA stands for; anything else is a TypeError (the test then fails)."""
    if depth > 200 or not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise TypeError("malformed value")
    tag, rest = data[0], data[1:]
    if tag == "n" and not rest:
        return None
    if tag == "b" and len(rest) == 1 and isinstance(rest[0], bool):
        return rest[0]
    if tag == "s" and len(rest) == 1 and isinstance(rest[0], str):
        return rest[0]
    if tag == "i" and len(rest) == 1 and isinstance(rest[0], str) and len(rest[0]) < 5000:
        return int(rest[0])
    if tag == "f" and len(rest) == 1 and isinstance(rest[0], str):
        return float.fromhex(rest[0])
    if tag == "c" and len(rest) == 2 and all(isinstance(part, str) for part in rest):
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag == "y" and len(rest) == 1 and isinstance(rest[0], str):
        return bytes.fromhex(rest[0])
    if tag in _REBUILD and len(rest) == 1 and isinstance(rest[0], list):
        return _REBUILD[tag](decode(item, depth + 1) for item in rest[0])
    if tag in _MAPPINGS and len(rest) == 1 and isinstance(rest[0], list):
        pairs = _MAPPINGS[tag]()
        for pair in rest[0]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise TypeError("malformed value")
            pairs[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        return pairs
    raise TypeError("malformed value")


def send(fd: int, message) -> None:
    data = json.dumps(message).encode("utf-8")
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def receive(fd: int):
    """The next message on FD, or None when the other side is gone or broke the framing."""
    header = _read_exactly(fd, 4)
    if header is None:
        return None
    (size,) = struct.unpack(">I", header)
    if size > MAX_FRAME:
        return None
    body = _read_exactly(fd, size)
    try:
        return None if body is None else json.loads(body)
    except ValueError:
        return None


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the worker (untrusted side)

def worker_main(program_fd: int, requests: int, replies: int) -> None:
    """The solution's process: runs the program, then answers calls of its functions."""
    with os.fdopen(program_fd, "rb") as source:
        program = source.read().decode("utf-8", "replace")
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(program, "solution.py", "exec"), namespace)
    except BaseException as error:  # SystemExit included: a program that exits early has failed
        send(replies, {"loaded": False, "error": type(error).__name__})
        os._exit(1)
    send(replies, {"loaded": True})
    while True:
        request = receive(requests)
        if request is None:
            os._exit(0)
        try:
            function = namespace[request["name"]]
            args = [decode(a) for a in request["args"]]
            kwargs = {k: decode(v) for k, v in request["kwargs"].items()}
            reply = {"value": encode(function(*args, **kwargs))}
        except BaseException as error:
            reply = {"error": type(error).__name__}
        send(replies, reply)


# ---------------------------------------------------------------- the judge (trusted side)


class CandidateError(Exception):
    """A call of the solution's function failed, or returned something that is not a plain value."""


class Judge:
    def __init__(self, requests_fd: int, replies_fd: int):
        self.requests, self.replies = requests_fd, replies_fd
        self.alive = True

    def loaded(self) -> bool:
        reply = receive(self.replies)
        return isinstance(reply, dict) and reply.get("loaded") is True

    def proxy(self, name: str):
        """A stand-in for the solution's function NAME: arguments go over, a plain value comes back."""

        def call(*args, **kwargs):
            if not self.alive:
                raise CandidateError("the solution's process is gone")
            try:
                send(self.requests, {"name": name, "args": [encode(a) for a in args],
                                     "kwargs": {k: encode(v) for k, v in kwargs.items()}})
            except OSError:
                self.alive = False
                raise CandidateError("the solution's process is gone") from None
            reply = receive(self.replies)
            if not isinstance(reply, dict):
                self.alive = False
                raise CandidateError("the solution's process is gone")
            if "value" not in reply:
                raise CandidateError(str(reply.get("error", "failed")))
            return decode(reply["value"])

        call.__name__ = call.__qualname__ = name
        return call


def run_tests(judge: Judge, suite: dict) -> list[bool]:
    """Each test's outcome: setup, then every test in one namespace, the solution's names bound
    to proxies. A test passes when it runs to its end without an exception."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(suite["setup"], "setup.py", "exec"), namespace)
    tests = [compile(test, f"test-{index}.py", "exec") for index, test in enumerate(suite["tests"])]
    names = suite["names"] if suite.get("names") is not None else solution_names(tests, namespace)
    for name in names:
        namespace[name] = judge.proxy(name)
    outcomes = []
    for test in tests:
        try:
            exec(test, namespace)
            outcomes.append(True)
        except Exception:  # a failed assert, or a call that failed: this test fails
            outcomes.append(False)
    return outcomes


def solution_names(tests, namespace: dict) -> list[str]:
    """Names the tests read that neither the setup nor Python defines: the solution's functions."""
    names: set[str] = set()

    def visit(code) -> None:
        names.update(code.co_names)
        for constant in code.co_consts:
            if hasattr(constant, "co_names"):
                visit(constant)

    for test in tests:
        visit(test)
    return sorted(n for n in names if n not in namespace and not hasattr(builtins, n))


# ---------------------------------------------------------------- isolation


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def build_root(root: str, python_prefixes: list[str], tmp_mb: int, hidden: list[str]) -> None:
    """A new filesystem root, read-only: the system directories Python needs and the
    interpreter, a few device files, and a small writable /tmp of its own. Nothing else of the
    host (no /etc, /home, /root, /proc, project files) exists in it."""
    libc = _libc()
    _check(libc.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755"), "mount tmpfs")
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), os.path.join(root, name))
        elif os.path.isdir(host):
            _bind_read_only(libc, host, root + host)
    for prefix in python_prefixes:
        if not any(prefix == p or prefix.startswith(p + "/") for p in ("/usr", "/bin", "/lib", "/lib64")):
            _bind_read_only(libc, prefix, root + prefix)
    # Installed packages are not the standard library: an evaluation package's test data could be there.
    for packages in hidden:
        if os.path.isdir(root + packages):
            _check(libc.mount(b"tmpfs", (root + packages).encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, b"size=4k"),
                   f"hide {packages}")
    os.makedirs(root + "/dev")
    for device in ("null", "zero", "random", "urandom"):
        target = f"{root}/dev/{device}"
        open(target, "w").close()
        _check(libc.mount(f"/dev/{device}".encode(), target.encode(), None, MS_BIND, None), f"bind /dev/{device}")
    os.makedirs(root + "/tmp")
    options = f"size={tmp_mb}m,mode=1777".encode()
    _check(libc.mount(b"tmpfs", (root + "/tmp").encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), "mount /tmp")
    # Make it the root and detach the host's: unlike chroot, nothing of the old tree stays
    # reachable from this mount namespace (no `..` escape, whatever privileges remain).
    os.chdir(root)
    _check(libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "detach the old root")
    os.chdir("/")
    flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _check(libc.mount(None, b"/", None, flags, b"size=1m,mode=755"), "remount the root read-only")


def _bind_read_only(libc, source: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    _check(libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"bind {source}")
    # A read-only remount must keep the flags the source mount has locked (user namespaces).
    kept = 0
    for st_bit, ms_bit in ST_TO_MS.items():
        if os.statvfs(source).f_flag & st_bit:
            kept |= ms_bit
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | kept
    _check(libc.mount(None, target.encode(), None, flags, None), f"remount {source} read-only")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities(libc) -> None:
    """Every capability gone, now and after any exec (user-namespace mode, where the process
    stays uid 0 of its namespace: without this it could mount /proc, trace the judge, chroot).
    The bounding and ambient sets are emptied first (that needs CAP_SETPCAP), then the
    effective, permitted and inheritable sets themselves, which apply at once."""
    for capability in range(LAST_CAPABILITY + 1):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # EINVAL past the kernel's last: ignored
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header, data = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), data), "capset")


def set_limits(memory_mb: int, cpu_seconds: int, processes: int, file_mb: int) -> None:
    limits = {
        resource.RLIMIT_AS: memory_mb << 20,
        resource.RLIMIT_CPU: cpu_seconds,
        resource.RLIMIT_NPROC: processes,
        resource.RLIMIT_FSIZE: file_mb << 20,
        resource.RLIMIT_NOFILE: 64,
        resource.RLIMIT_CORE: 0,
    }
    for limit, value in limits.items():
        resource.setrlimit(limit, (value, value))


# ---------------------------------------------------------------- system calls the solution may not make
#
# Kernel objects that outlive the check or are shared with other checks and the host, or that
# hold memory outside the address-space limit: keyrings (persistent ones, and the scorer's
# session keyring), SysV shared memory and message queues, memfd, file locks and inotify /
# fanotify (state that concurrent checks could share through the system files every check
# sees), io_uring. Denied with EPERM by a seccomp filter; another architecture's numbers (and
# x32's) kill the process.
SECCOMP_RULES = {  # machine: (audit arch, denied syscall numbers, fcntl's number)
    "x86_64": (0xC000003E, {29, 68, 248, 249, 250, 319, 447, 73, 253, 294, 300, 425}, 72),
    "aarch64": (0xC00000B7, {194, 186, 217, 218, 219, 279, 447, 32, 26, 262, 425}, 25),
}
FCNTL_LOCKS = (5, 6, 7, 36, 37, 38)  # F_GETLK F_SETLK F_SETLKW F_OFD_GETLK F_OFD_SETLK F_OFD_SETLKW
BPF_LD_W_ABS, BPF_JEQ, BPF_JGE, BPF_RET = 0x20, 0x15, 0x35, 0x06
SECCOMP_ALLOW, SECCOMP_EPERM, SECCOMP_KILL = 0x7FFF0000, 0x00050001, 0x80000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
KEYCTL_JOIN_SESSION_KEYRING, SYS_KEYCTL = 1, {"x86_64": 250, "aarch64": 219}


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def restrict_syscalls(libc) -> None:
    """Install the seccomp filter (a classic BPF program over `struct seccomp_data`: the call's
    number at offset 0, the architecture at 4, the arguments from 16)."""
    rules = SECCOMP_RULES.get(os.uname().machine)
    if rules is None:
        return  # an architecture without a table: the other layers still hold
    arch, denied, fcntl_number = rules
    program = [(BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ, 1, 0, arch), (BPF_RET, 0, 0, SECCOMP_KILL), (BPF_LD_W_ABS, 0, 0, 0)]
    if arch == 0xC000003E:
        program += [(BPF_JGE, 0, 1, 0x40000000), (BPF_RET, 0, 0, SECCOMP_KILL)]  # x32 numbers
    for number in sorted(denied):
        program += [(BPF_JEQ, 0, 1, number), (BPF_RET, 0, 0, SECCOMP_EPERM)]
    # fcntl: deny the lock commands (its second argument, the low word at offset 24), allow the rest.
    program += [(BPF_JEQ, 0, len(FCNTL_LOCKS) + 3, fcntl_number), (BPF_LD_W_ABS, 0, 0, 24)]
    for index, command in enumerate(FCNTL_LOCKS):
        program += [(BPF_JEQ, len(FCNTL_LOCKS) - index, 0, command)]
    program += [(BPF_RET, 0, 0, SECCOMP_ALLOW), (BPF_RET, 0, 0, SECCOMP_EPERM), (BPF_RET, 0, 0, SECCOMP_ALLOW)]
    filters = (_SockFilter * len(program))(*[_SockFilter(*row) for row in program])
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(_SockFprog(len(program), filters)), 0, 0), "seccomp")


def become_worker(settings: dict) -> None:
    """In the forked child, before any of the solution runs: its own user (or no capabilities),
    no way back to privileges, the limits, and death with the judge."""
    libc = _libc() if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if settings["mode"] == "root":  # another user than the judge's: it cannot signal, trace or read it
        os.setgroups([])
        os.setgid(settings["uid"])
        os.setuid(settings["uid"])
    elif settings["mode"] == "userns":
        drop_capabilities(libc)
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # again: a change of user clears it
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        restrict_syscalls(libc)
    limits = settings["limits"]
    set_limits(limits["memory_mb"], int(limits["timeout"]) + 1, limits["processes"], limits["file_mb"])
    os.chdir("/tmp" if settings["mode"] != "plain" else settings["workdir"])


def become_judge(settings: dict) -> None:
    """Give up every privilege before running any test (the tests call into the solution)."""
    mode = settings["mode"]
    libc = _libc() if sys.platform.startswith("linux") else None
    if mode == "root":
        judge_id = settings["uid"] + 1
        os.setgroups([])
        os.setgid(judge_id)
        os.setuid(judge_id)  # also makes this process non-dumpable
    elif mode == "userns":
        drop_capabilities(libc)
    if libc is not None:
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem, fd or environ access for peers
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # dies with the scorer (a change of user cleared it)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_AS, (settings["limits"]["memory_mb"] << 20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(settings: dict) -> None:
    """SETTINGS (argv) say how to isolate; the request (stdin: the program, the tests and the
    nonce) is read only after the worker is forked, so its memory never holds the tests."""
    report_fd = settings["report_fd"]
    # The whole check ends at its deadline even if the scorer that set it is gone (killed):
    # as PID 1 of its namespace this process ignores signals it has no handler for, so set one.
    signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
    signal.alarm(int(settings["limits"]["timeout"]) + 2)
    try:
        for cgroup in settings.get("cgroups", []):  # the whole tree's memory and processes, where writable
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as handle:
                handle.write("0")
        if settings["mode"] in ("root", "userns"):
            build_root("/tmp", settings["python_prefixes"], settings["limits"]["tmp_mb"], settings.get("hidden", []))
    except OSError as error:  # no worker exists: reading the request now is safe
        request = json.loads(sys.stdin.buffer.read())
        send_report(report_fd, {"nonce": request["nonce"], "setup_error": str(error)})
        return
    if sys.platform.startswith("linux") and os.uname().machine in SYS_KEYCTL:
        # An anonymous session keyring of its own: the scorer's (and its keys) out of reach.
        _libc().syscall(SYS_KEYCTL[os.uname().machine], KEYCTL_JOIN_SESSION_KEYRING, None)
    program_r, program_w = os.pipe()
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    worker = os.fork()
    if worker == 0:
        try:
            for fd in (report_fd, program_w, requests_w, replies_r):
                os.close(fd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            os.dup2(1, 2)
            become_worker(settings)
            signal.alarm(int(settings["limits"]["timeout"]) + 2)  # fork clears pending alarms
            worker_main(program_r, requests_r, replies_w)
        finally:
            os._exit(1)
    for fd in (program_r, requests_r, replies_w):
        os.close(fd)
    request = json.loads(sys.stdin.buffer.read())
    try:
        with os.fdopen(program_w, "wb") as program:
            program.write(request["program"].encode("utf-8", "replace"))
    except OSError:
        pass
    become_judge(settings)
    judge = Judge(requests_w, replies_r)
    suite = request["suite"]
    outcomes = run_tests(judge, suite) if judge.loaded() else [False] * len(suite["tests"])
    send_report(report_fd, {"nonce": request["nonce"], "passed": outcomes, "complete": True})
    os.close(requests_w)
    try:
        os.kill(worker, signal.SIGKILL)
    except OSError:
        pass


def send_report(fd: int, report: dict) -> None:
    data = json.dumps(report).encode("utf-8")
    while data:
        data = data[os.write(fd, data) :]
    os.close(fd)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
