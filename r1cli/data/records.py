"""Records and their inputs: read JSONL (path or `-`), JSON and Parquet files, and datasets (a hub
dataset OWNER/NAME, a `save_to_disk` directory, a folder of data files); write JSONL atomically.

Every record read keeps where it came from (`record.where`, "FILE:LINE", "FILE:row N" or
"NAME[SPLIT]:row N"), so any stage can report a bad record by its place. Unknown fields pass
through untouched.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from r1cli import hub
from r1cli.console import warn
from r1cli.errors import UserError

if TYPE_CHECKING:
    from r1cli.options import DataOptions

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


def is_dataset_input(name: str) -> bool:
    """A directory (datasets reads it) or, where no such path exists, a hub dataset's OWNER/NAME."""
    return name != STDIO and (Path(name).is_dir() or (not Path(name).exists() and hub.is_hub_name(name)))


def read_records(path: str | Path, source: DataOptions | None = None) -> Iterator[Record]:
    """Yield the records of a JSONL file (or stdin for `-`), a JSON array file, a Parquet file, or
    the split SOURCE chooses of a dataset (see `open_dataset`)."""
    name = str(path)
    if is_dataset_input(name):
        dataset = open_dataset(name, source)
        for row_number, row in enumerate(dataset.table, start=1):
            where = f"{dataset.label}:row {row_number}"
            yield Record.at(plain_row(row, where), where)
        return
    if name != STDIO and not Path(name).exists():
        raise UserError(f"{name}: no such file")
    if source is not None and (source.split or source.subset):
        _read_whole(name, "a file has no splits or subsets")
    if is_table_file(name):
        yield from _read_with_datasets(name)
    elif name == STDIO:
        yield from _read_jsonl(io.BytesIO(stdin_bytes()), "<stdin>")
    else:
        with open(name, "rb") as handle:
            yield from _read_jsonl(handle, name)


_stdin: dict = {}
_warned: dict[str, bool] = {}


def stdin_bytes() -> bytes:
    """Standard input, read once: a command may read its records and hash them."""
    if _stdin.get("stream") is not sys.stdin:
        stream = getattr(sys.stdin, "buffer", None)  # a text stream without bytes underneath (tests): encode it
        _stdin["data"] = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
        _stdin["stream"] = sys.stdin
    return _stdin["data"]


def input_sha256(path: str | Path, source: DataOptions | None = None) -> str:
    """The sha256 of an input file's bytes (of standard input for `-`); of a dataset input, the
    sha256 of its chosen rows as canonical JSON lines (`rows_sha256`): its content, wherever it is."""
    if str(path) == STDIO:
        return hashlib.sha256(stdin_bytes()).hexdigest()
    if is_dataset_input(str(path)):
        dataset = open_dataset(str(path), source)
        return rows_sha256(dataset.table, dataset.label)
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    return file_sha256(path)


def describe_input(path: str | Path, source: DataOptions | None = None) -> dict:
    """An input as r1.json and reports record it: its path (a hub dataset: its name, split and
    subset) and the sha256 of its content."""
    name = str(path)
    if is_dataset_input(name):
        dataset = open_dataset(name, source)
        where = {"path": str(Path(name).resolve())} if Path(name).exists() else {"path": name, "hub_dataset": name}
        return {**where, "split": dataset.split, "subset": dataset.subset, "rows": len(dataset.table), "sha256": rows_sha256(dataset.table, dataset.label)}
    return {"path": str(Path(name).resolve()) if name != STDIO else STDIO, "sha256": input_sha256(name)}


def rows_sha256(rows: Iterable[dict], label: str = "dataset") -> str:
    """The sha256 of ROWS as canonical JSON lines (sorted keys; values as `plain_row` makes them)."""
    digest = hashlib.sha256()
    for number, row in enumerate(rows, start=1):
        digest.update(json.dumps(plain_row(dict(row), f"{label}:row {number}"), sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n")
    return digest.hexdigest()


def read_all(paths: Iterable[str | Path], source: DataOptions | None = None) -> list[Record]:
    """Every record of every path, in order; an input with no records at all is an error."""
    records: list[Record] = []
    for path in paths:
        before = len(records)
        records.extend(read_records(path, source))
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
        where = f"{name}:row {row_number}"
        yield Record.at(plain_row(row, where), where)


def plain_row(row: dict, where: str) -> dict:
    """ROW with every value as JSON holds it: dates and times as ISO text; a value JSON cannot hold
    (bytes, an image) is one clear error naming its column, not a traceback later when r1 writes
    or hashes the record."""
    return {key: _plain(value, where, key) for key, value in row.items()}


def _plain(value, where: str, column: str):
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {key: _plain(inner, where, column) for key, inner in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(inner, where, column) for inner in value]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalars
        return _plain(value.item(), where, column)
    raise UserError(f"{where}: field {column!r} holds a {type(value).__name__}, which r1's JSON records cannot hold; "
                    "drop or convert that column (e.g. Dataset.remove_columns)")


# ---------------------------------------------------------------- datasets


@dataclass
class DatasetInput:
    """The rows of a dataset input: the split chosen (None for a lone saved Dataset), the subset."""

    table: Any  # a datasets.Dataset
    name: str
    split: str | None
    subset: str | None

    @property
    def label(self) -> str:
        return f"{self.name}[{self.split}]" if self.split else self.name


def open_dataset(name: str, source: DataOptions | None = None) -> DatasetInput:
    """The rows of dataset input NAME: a `save_to_disk` directory (of a Dataset, or of a
    DatasetDict and then the split --split names), or what `datasets.load_dataset(NAME, --subset,
    split=--split)` loads: a folder of data files or a hub dataset. Without --split, the only split
    there is; several are an error that lists them."""
    import datasets

    datasets.disable_progress_bars()  # r1's own lines on stderr only
    split, subset = (source.split, source.subset) if source is not None else (None, None)
    path = Path(name)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _open_saved(name, split, subset)
    remote = not path.exists()
    if remote:
        hub.access()
    try:
        if split is None:
            split = _one_split(name, _split_names(name, subset))
        table = datasets.load_dataset(name, subset, split=split)
    except UserError:
        raise
    except datasets.data_files.EmptyDatasetError:
        raise UserError(f"{name}: is a directory, and not a dataset (no save_to_disk files, no data files datasets reads)") from None
    except Exception as error:  # datasets raises many types; each means this input cannot be had
        line = remote and isinstance(error, ConnectionError) and hub.unavailable(name, "dataset")
        raise UserError(line or f"{name}: cannot load as a dataset ({type(error).__name__}: {_first_line(error)})") from None
    if remote:
        hub.loaded(name, "dataset")
    return DatasetInput(table, name, split, subset)


def _read_whole(name: str, why: str) -> None:
    """--split / --subset are for the command's inputs that have splits: one without is read whole
    (said once, as a command may read an input twice)."""
    if not _warned.get(name):
        _warned[name] = True
        warn(f"{name}: {why}; --split / --subset apply to the dataset inputs that have them, and this one is read whole")


def _open_saved(name: str, split: str | None, subset: str | None) -> DatasetInput:
    import datasets

    try:
        saved = datasets.load_from_disk(name)
    except Exception as error:  # a damaged directory: datasets' many error types
        raise UserError(f"{name}: cannot read as a save_to_disk dataset ({type(error).__name__}: {_first_line(error)})") from None
    if subset:
        _read_whole(name, "a save_to_disk directory has no subsets")
    if isinstance(saved, datasets.DatasetDict):
        chosen = _one_split(name, list(saved)) if split is None else split
        if chosen not in saved:
            raise UserError(f"{name}: --split {chosen}: no such split; it holds {', '.join(saved)}")
        return DatasetInput(saved[chosen], name, chosen, None)
    if split:
        _read_whole(name, "this save_to_disk directory holds one dataset, not a dict of splits")
    return DatasetInput(saved, name, None, None)


def _split_names(name: str, subset: str | None) -> list[str]:
    import datasets

    return list(datasets.get_dataset_split_names(name, subset))


def _one_split(name: str, names: list[str]) -> str:
    if len(names) != 1:
        raise UserError(f"{name}: holds the splits {', '.join(names)}; choose one with --split")
    return names[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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
    """Which training record this is: 'messages', 'prompt_completion' or 'text'. A prompt and a
    completion are each a string or chat messages (TRL's conversational prompt-completion records:
    the prompt's turns, then the completion's, which holds the assistant turn to train on)."""
    if "messages" in record:
        messages = check_messages(record)
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{record.where}: 'messages' has no assistant turn to train on")
        return "messages"
    if "prompt" in record and "completion" in record:
        prompt = require(record, "prompt", (str, list))
        if isinstance(prompt, list):
            check_messages(record, "prompt")
        if isinstance(require(record, "completion", (str, list)), list):
            if not any(m["role"] == "assistant" for m in check_messages(record, "completion")):
                raise UserError(f"{record.where}: 'completion' has no assistant turn to train on")
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
