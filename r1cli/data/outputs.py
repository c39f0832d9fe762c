"""What a command may do to its output: claim it alone, know what made it, resume or refuse.

- **One writer.** An exclusive lock (`flock` on `.NAME.lock` beside the output) is held while
  a command writes; a second writer is refused with one line. The kernel drops the lock when
  the process ends, however it ends.
- **Nothing silently reused.** A resumable output records its identity: the model's content
  fingerprint, the inputs' sha256 and the options that shape the result. A rerun resumes only
  when they are the same, and otherwise says what differs. Paths are not part of it, so a moved
  run directory or an `--out` spelled differently still resumes.
- **Nothing destroyed.** An output never replaces one of its own inputs; an existing file or
  directory r1 did not write is left alone (also with `--overwrite`, which removes only what
  r1 wrote).
- **Nothing left behind.** Temporary files of a killed run (`.NAME.tmp-PID`) are removed by the
  next run of the same output, under the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1cli.data.records import STDIO, read_json_file
from r1cli.errors import UserError

# Every entry r1 writes into a run directory (checkpoints, lineage, logs, distill's stages);
# `--overwrite` removes these and nothing else.
RUN_ENTRIES = (
    "config.json", "generation_config.json", "model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
    "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model", "adapter", "adapter_config.json",
    "adapter_model.safetensors", "README.md", "r1-evals.json", "r1.json", "metrics.jsonl", "samples.jsonl", "checkpoints", "pretrain.jsonl",
    "traces.jsonl", "traces.jsonl.*", "kept.jsonl", "kept.jsonl.*", "tensorboard", "wandb", "tracking.json", ".*.tmp-*",
)
RUN_MARKERS = ("r1.json", "metrics.jsonl", "checkpoints", "traces.jsonl", "traces.jsonl.r1.json", "kept.jsonl", "pretrain.jsonl")
NOT_THE_MODEL = ("r1.json", "r1-evals.json")  # in a checkpoint directory, but not what it computes (README.md is no model file either)
FULL_HASH_BYTES = 512 << 20  # models up to this size are hashed whole; larger ones by sampled blocks
SAMPLE_BLOCKS, BLOCK_BYTES = 16, 64 << 10


# ---------------------------------------------------------------- one writer


@contextlib.contextmanager
def exclusive(output: str | Path) -> Iterator[None]:
    """Hold the lock of OUTPUT (a file or a run directory) for the block; refuse if it is taken."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{path}: another r1 process (pid {holder}) is writing it; wait for it to finish or choose another --out") from None
        # The holder before us may have removed the file as it let go: lock the one at the path.
        try:
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        remove_stale_temporaries(path)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


def remove_stale_temporaries(path: Path) -> None:
    """Temporary files and directories of earlier, killed writes of PATH (the caller holds its lock)."""
    stale = list(path.parent.glob(f".{path.name}.tmp-*"))
    if path.is_dir():
        stale += list(path.glob(".*.tmp-*")) + list(path.glob("checkpoints/.*.tmp-*"))
    for entry in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# ---------------------------------------------------------------- nothing destroyed


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_file_output(output: str, inputs: Iterable[str]) -> None:
    """A JSONL/JSON output: not a directory, not one of the command's own inputs."""
    if output == STDIO:
        return
    path = Path(output)
    if path.is_dir():
        raise UserError(f"--out {output}: is a directory; give a file name")
    for source in inputs:
        if source != STDIO and _same(path, Path(source)):
            raise UserError(f"--out {output}: is also an input ({source}); writing it would destroy what is being read")


def check_run_directory(out: Path, inputs: Iterable[str], *, overwrite: bool) -> None:
    """A run directory: not a file, not an input's directory; an existing one must be r1's, and
    with --overwrite hold nothing r1 did not write (which would be lost)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; a run directory is needed")
    for source in inputs:
        if source == STDIO or not Path(source).exists():
            continue
        source_path = Path(source).resolve()
        if _same(out, source_path) or (overwrite and out.resolve() in source_path.parents):
            raise UserError(f"--out {out}: holds an input of this run ({source}); choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    entries = [entry.name for entry in out.iterdir() if not entry.name.startswith(".")]  # hidden files stay, untouched
    if not any(name in RUN_MARKERS for name in entries):
        raise UserError(f"--out {out}: exists and is not an r1 run directory (no r1.json, metrics.jsonl or checkpoints/); "
                        "choose another --out")
    foreign = [name for name in entries if not _is_run_entry(name)]
    if overwrite and foreign:
        raise UserError(f"--out {out}: holds {foreign[0]}, which r1 did not write; --overwrite would lose it: move it away first")


def _is_run_entry(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in RUN_ENTRIES)


def clear_run_directory(out: Path) -> None:
    """--overwrite: remove what r1 wrote in OUT (check_run_directory has refused anything else)."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if _is_run_entry(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# ---------------------------------------------------------------- nothing silently reused


@dataclass
class Identity:
    """What determines a resumable output: a rerun continues it only when all of this is equal."""

    models: dict[str, str] = field(default_factory=dict)  # role ("model", "teacher", ...) -> content fingerprint
    inputs: dict[str, str] = field(default_factory=dict)  # role ("prompts", "data[0]", ...) -> sha256
    options: dict = field(default_factory=dict)  # the options that shape the output

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Identity:
        return cls(dict(data.get("models", {})), dict(data.get("inputs", {})), dict(data.get("options", {})))

    def differences(self, saved: Identity) -> list[str]:
        """One phrase per difference, saved value first ("model: another checkpoint", "n: 2 there, 3 now")."""
        found = []
        for role in sorted(set(self.models) | set(saved.models)):
            if self.models.get(role) != saved.models.get(role):
                found.append(f"{role}: another model (content fingerprint {_short(saved.models.get(role))} there, {_short(self.models.get(role))} now)")
        for role in sorted(set(self.inputs) | set(saved.inputs)):
            if self.inputs.get(role) != saved.inputs.get(role):
                found.append(f"{role}: other contents (sha256 {_short(saved.inputs.get(role))} there, {_short(self.inputs.get(role))} now)")
        for name in sorted(set(self.options) | set(saved.options)):
            if self.options.get(name) != saved.options.get(name):
                found.append(f"--{name.replace('_', '-')}: {saved.options.get(name)!r} there, {self.options.get(name)!r} now")
        return found


def _short(digest: str | None) -> str:
    return "none" if digest is None else digest[:12]


def refuse_other_identity(what: str, current: Identity, saved: Identity, start_over: str) -> None:
    differences = current.differences(saved)
    if differences:
        more = f"; {len(differences) - 1} more" if len(differences) > 1 else ""
        raise UserError(f"{what} was made with other settings ({differences[0]}{more}): {start_over}")


def records_sha256(records: Iterable[dict]) -> str:
    """The sha256 of records as canonical JSON lines: their content, whatever file they came from."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def model_fingerprint(model: str) -> str:
    """A content fingerprint of a checkpoint directory or config file (a hub name: its cached
    snapshot, else the name). Weights up to FULL_HASH_BYTES are hashed whole; larger ones by
    their sizes and SAMPLE_BLOCKS blocks spread over each file, which any training changes."""
    path = Path(model)
    if not path.exists():
        path = _cached_snapshot(model) or path
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    if not path.is_dir():
        return hashlib.sha256(f"name:{model}".encode()).hexdigest()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja")))
    adapter = path / "adapter"
    if adapter.is_dir():
        files += sorted(p for p in adapter.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix in (".safetensors", ".bin")]
    whole = sum(p.stat().st_size for p in weights) <= FULL_HASH_BYTES
    for file in files:
        if file.name in NOT_THE_MODEL:
            continue  # lineage and eval results: they change (written_at, argv, a new eval) without the model changing
        digest.update(f"{file.relative_to(path)}:{file.stat().st_size}\n".encode())
        if file not in weights or whole:
            with open(file, "rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
        else:
            digest.update(_sampled_blocks(file))
    return digest.hexdigest()


def _sampled_blocks(file: Path) -> bytes:
    size = file.stat().st_size
    with open(file, "rb") as handle:
        parts = []
        for index in range(SAMPLE_BLOCKS):
            handle.seek(max(0, (size - BLOCK_BYTES) * index // (SAMPLE_BLOCKS - 1)))
            parts.append(handle.read(BLOCK_BYTES))
    return b"".join(parts)


# What loading a hub model reads: fetched before the fingerprint, so that a run's identity is
# the same before and after its first download (a killed first run then resumes).
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*")


def _cached_snapshot(name: str) -> Path | None:
    from r1cli.hub import access, is_hub_name

    if not is_hub_name(name):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not in the cache (or no hub library)
        pass
    if not access().online:
        return None  # the name stands for itself; loading it fails with the hub's one line
    try:
        return Path(snapshot_download(name, allow_patterns=list(MODEL_FILES)))
    except Exception:  # no such repository: loading it says so
        return None


# ---------------------------------------------------------------- a file output's record


def sidecar(output: str | Path) -> Path:
    """Where a resumable file output records what made it: FILE.r1.json beside FILE."""
    return Path(f"{output}.r1.json")


def read_sidecar(output: str | Path) -> dict | None:
    path = sidecar(output)
    if not path.exists():
        return None
    data = read_json_file(path)
    if not isinstance(data, dict) or "identity" not in data:
        raise UserError(f"{path}: not a record r1 wrote (no 'identity'); remove it with the output to start over")
    return data
