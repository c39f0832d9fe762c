"""Records and their files: read JSONL (path or `-`), JSON and Parquet; write JSONL atomically.

Every record read keeps where it came from (`record.where`, "FILE:LINE"), so any stage can
report a bad record by file and line. Unknown fields pass through untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from r1cli.errors import UserError

STDIO = "-"
CHAT_ROLES = ("system", "user", "assistant", "tool")


class Record(dict):
    """A JSON object from an input file that remembers its place there ("FILE:LINE")."""

    where: str = "?"

    @classmethod
    def at(cls, fields: dict, where: str) -> Record:
        record = cls(fields)
        record.where = where
        return record


# ---------------------------------------------------------------- reading


def is_table_file(name: str) -> bool:
    """A Parquet file or a JSON array: read whole (through datasets), not line by line."""
    return name.endswith(".parquet") or (name.endswith(".json") and _starts_with_array(name))


def read_records(path: str | Path) -> Iterator[Record]:
    """Yield the records of a JSONL file (or stdin for `-`), a JSON array file, or a Parquet file."""
    name = str(path)
    if name != STDIO:
        if not Path(name).exists():
            raise UserError(f"{name}: no such file")
        if Path(name).is_dir():
            raise UserError(f"{name}: is a directory, not a file of records")
    if is_table_file(name):
        yield from _read_with_datasets(name)
    elif name == STDIO:
        yield from _read_jsonl(io.BytesIO(stdin_bytes()), "<stdin>")
    else:
        with open(name, "rb") as handle:
            yield from _read_jsonl(handle, name)


_stdin: dict = {}


def stdin_bytes() -> bytes:
    """Standard input, read once: a command may read its records and hash them."""
    if _stdin.get("stream") is not sys.stdin:
        stream = getattr(sys.stdin, "buffer", None)  # a text stream without bytes underneath (tests): encode it
        _stdin["data"] = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        _stdin["stream"] = sys.stdin
    return _stdin["data"]


def input_sha256(path: str | Path) -> str:
    """The sha256 of an input file's bytes (of standard input for `-`)."""
    if str(path) == STDIO:
        return hashlib.sha256(stdin_bytes()).hexdigest()
    if not Path(path).is_file():
        raise UserError(f"{path}: {'is a directory, not a file of records' if Path(path).is_dir() else 'no such file'}")
    return file_sha256(path)


def read_all(paths: Iterable[str | Path]) -> list[Record]:
    """Every record of every path, in order; an input with no records at all is an error."""
    records: list[Record] = []
    for path in paths:
        before = len(records)
        records.extend(read_records(path))
        if len(records) == before:
            raise UserError(f"{path}: no records (the input is empty)")
    return records


def _read_jsonl(handle: IO[bytes], name: str) -> Iterator[Record]:
    for line_number, raw in enumerate(handle, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{name}:{line_number}: not UTF-8 text (byte {error.start + 1} of the line)") from None
        if line.strip():
            yield parse_line(line, f"{name}:{line_number}")


def parse_line(line: str | bytes, where: str) -> Record:
    """One JSONL line as a Record, or a user error naming WHERE ("FILE:LINE")."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise UserError(f"{where}: not UTF-8 text (byte {error.start + 1} of the line)") from None
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: not valid JSON ({error.msg} at column {error.pos + 1})") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return Record.at(value, where)


def _starts_with_array(name: str) -> bool:
    with open(name, "rb") as handle:
        head = handle.read(4096).lstrip()
    return head.startswith(b"[")


def _read_with_datasets(name: str) -> Iterator[Record]:
    import datasets

    builder = "parquet" if name.endswith(".parquet") else "json"
    datasets.disable_progress_bars()  # r1's own lines on stderr only
    try:
        table = datasets.load_dataset(builder, data_files=name, split="train")
    except Exception as error:  # datasets raises many types; all mean the file is unreadable
        raise UserError(f"{name}: cannot read as {builder} ({type(error).__name__}: {error})") from None
    for row_number, row in enumerate(table, start=1):
        yield Record.at(row, f"{name}:row {row_number}")


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside PATH; on success it replaces PATH, on failure it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, final)
    except OSError as error:
        if error.filename is None:  # a failed write (a full disk) names no file: name the output
            error.filename = str(final)
        raise
    finally:
        temporary.unlink(missing_ok=True)


def dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_records(path: str | Path, records: Iterable[dict]) -> int:
    """Write RECORDS as JSONL to PATH (atomically) or to stdout for `-`; return how many."""
    count = 0
    if str(path) == STDIO:
        for record in records:
            sys.stdout.write(dumps(record) + "\n")
            count += 1
        sys.stdout.flush()
        return count
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(dumps(record) + "\n")
            count += 1
    return count


def write_json(path: str | Path, value: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- record kinds


def require(record: Record, field: str, kinds: type | tuple[type, ...] = str) -> Any:
    """The value of FIELD, or a user error naming the field, the file and the line."""
    if field not in record or record[field] is None:
        present = ", ".join(sorted(record)) or "none"
        raise UserError(f"{record.where}: missing field '{field}' (fields present: {present})")
    value = record[field]
    if not isinstance(value, kinds):
        expected = kinds.__name__ if isinstance(kinds, type) else " or ".join(k.__name__ for k in kinds)
        raise UserError(f"{record.where}: field '{field}' must be {expected}, got {type(value).__name__}")
    return value


def prompt_id(prompt: str | list) -> str:
    """A stable id for a prompt: a hash of its JSON form."""
    text = json.dumps(prompt, ensure_ascii=False, sort_keys=True)
    return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def to_prompt_record(record: Record, prompt_key: str = "prompt", answer_key: str = "answer") -> Record:
    """A prompt record with `id`, `prompt` (and `answer` when present) under their standard names.

    The fields named by PROMPT_KEY / ANSWER_KEY are renamed; every other field passes through.
    """
    prompt = require(record, prompt_key, (str, list))
    if isinstance(prompt, list):
        check_messages(record, prompt_key)
    check_answer_and_id(record, answer_key)
    fields = {k: v for k, v in record.items() if k not in (prompt_key, answer_key)}
    fields["prompt"] = prompt
    if record.get(answer_key) is not None:
        fields["answer"] = record[answer_key]
    if fields.get("id") is None:
        fields["id"] = prompt_id(prompt)
    if not isinstance(fields["id"], str):
        fields["id"] = str(fields["id"])
    return Record.at(fields, record.where)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_answer_and_id(record: Record, answer_key: str = "answer") -> None:
    """The gold answer is text or a number and the id a string or an integer: anything else
    (a dict, a list, true) would be compared or keyed by its Python repr, which means nothing."""
    answer = record.get(answer_key)
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, (str, int, float))):
        raise UserError(f"{record.where}: field '{answer_key}' must be a string or a number (the gold answer), got {_kind(answer)}")
    identifier = record.get("id")
    if identifier is not None and (isinstance(identifier, bool) or not isinstance(identifier, (str, int))):
        raise UserError(f"{record.where}: field 'id' must be a string or an integer, got {_kind(identifier)}")


def check_sample_fields(record: Record, *, prompt_required: bool = True) -> Record:
    """A sample record (DESIGN.md) whose fields have their kinds: `completion` a string, `prompt`
    a string or chat messages, and, where present, `reasoning` / `response` strings, `rewards` an
    object of numbers, `sample` and `completion_tokens` integers, `answer` and `id` as in a
    prompt record. Rewards and metrics read them all, so a wrong kind is reported here, by line."""
    require(record, "completion", str)
    if prompt_required or record.get("prompt") is not None:
        if isinstance(require(record, "prompt", (str, list)), list):
            check_messages(record, "prompt")
    check_answer_and_id(record)
    for name, kinds, expected in (("reasoning", str, "a string"), ("response", str, "a string"), ("rewards", dict, "an object"),
                                  ("sample", int, "an integer"), ("completion_tokens", int, "an integer")):
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            raise UserError(f"{record.where}: field '{name}' must be {expected}, got {_kind(value)}")
    for name, value in (record.get("rewards") or {}).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{record.where}: field 'rewards' must map names to numbers; '{name}' is {_kind(value)}")
    return record


def unique_ids(records: list[Record]) -> tuple[list[Record], int]:
    """Each id once (samples are keyed by (id, sample), so a repeated prompt is sampled once),
    and how many repeats were dropped."""
    seen: dict[str, Record] = {}
    for record in records:
        seen.setdefault(record["id"], record)
    return list(seen.values()), len(records) - len(seen)


def sample_record(record: dict, k: int, completion) -> dict:
    """The sample record (DESIGN.md) of completion K of a prompt record."""
    from r1cli.data.answers import split_completion

    reasoning, response = split_completion(completion.text)
    return {
        **record,
        "sample": k,
        "completion": completion.text,
        "reasoning": reasoning,
        "response": response,
        "finish_reason": completion.finish_reason,
        "completion_tokens": len(completion.token_ids),
    }


def check_messages(record: Record, field: str = "messages") -> list[dict]:
    messages = require(record, field, list)
    if not messages:
        raise UserError(f"{record.where}: field '{field}' is an empty list")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise UserError(f"{record.where}: {field}[{index}] must be an object with a string 'content'")
        if message.get("role") not in CHAT_ROLES:
            raise UserError(
                f"{record.where}: {field}[{index}] has role {message.get('role')!r}; "
                f"valid roles: {', '.join(CHAT_ROLES)}"
            )
    return messages


def training_kind(record: Record) -> str:
    """Which training record this is: 'messages', 'prompt_completion' or 'text'."""
    if "messages" in record:
        messages = check_messages(record)
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{record.where}: 'messages' has no assistant turn to train on")
        return "messages"
    if "prompt" in record and "completion" in record:
        prompt = require(record, "prompt", (str, list))
        if isinstance(prompt, list):
            check_messages(record, "prompt")
        require(record, "completion", str)
        return "prompt_completion"
    if "text" in record:
        require(record, "text", str)
        return "text"
    present = ", ".join(sorted(record)) or "none"
    raise UserError(
        f"{record.where}: not a training record: needs 'messages', 'prompt' and 'completion', "
        f"or 'text' (fields present: {present})"
    )


def read_json_file(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'is a directory, not a JSON file' if path.is_dir() else 'no such file'}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
