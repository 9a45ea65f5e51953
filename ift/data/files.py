"""Data files: finding a source's files and reading one file's records into columns, with
`file:line` errors for anything unreadable (bad UTF-8, invalid JSON, duplicate keys)."""

from __future__ import annotations

import glob
import json
import os

import datasets
import pyarrow as pa

from ift.config import TaskSource
from ift.errors import UserError

FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def locate(where: str, row: int) -> str:
    """`file:line` for a JSONL row (counting non-blank lines, as the loader does), else `file record N`."""
    if where.endswith(".jsonl") and os.path.isfile(where):
        seen = -1
        with open(where, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    seen += 1
                    if seen == row:
                        return f"{where}:{lineno}"
    return f"{where} record {row + 1}"


def check_text_file(path: str) -> None:
    """A file a task reads as text must be a readable file of valid UTF-8 (a byte-order mark is
    fine): pyarrow's JSON reader would otherwise replace invalid bytes without a word. Streamed,
    so a file of any size costs one read; the error names the line and column."""
    import codecs

    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a data file")
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, consumed = 1, 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 24):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as e:
                    at = e.start
                    col = at - (block.rfind(b"\n", 0, at) + 1) + 1 if b"\n" in block[:at] else None
                    line += block.count(b"\n", 0, at)
                    where = f"column {col}" if col is not None else f"byte {consumed + at}"
                    raise UserError(
                        f"{path}:{line}: not valid UTF-8 (byte 0x{block[at]:02x} at {where}); "
                        "re-encode the file as UTF-8"
                    ) from None
                line += block.count(b"\n")
                consumed += len(block)
            decoder.decode(b"", final=True)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}:{line}: not valid UTF-8 (the file ends inside a character)") from None


def _no_duplicate_keys(pairs):
    record = dict(pairs)
    if len(record) != len(pairs):
        keys = [k for k, _ in pairs]
        raise ValueError(f"duplicate key '{next(k for k in keys if keys.count(k) > 1)}'")
    return record


def _find_bad_json_line(path: str) -> str | None:
    """The first line that is not one JSON object (with unique keys), as `file:line: what`."""
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
                except json.JSONDecodeError as e:
                    return f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})"
                except ValueError as e:
                    return f"{path}:{lineno}: {e} in the record (which value is meant is ambiguous)"
                if not isinstance(record, dict):
                    return f"{path}:{lineno}: the record is not a JSON object (a {type(record).__name__})"
    return None


def _is_sni_task_file(path: str) -> bool:
    """An original Super-NaturalInstructions task file: one JSON object with Definition and Instances."""
    if not path.endswith(".json"):
        return False
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = f.read(4096).lstrip()
    return head.startswith("{") and ('"Definition"' in head or '"Instances"' in head)


def _read_sni_task_file(path: str) -> pa.Table:
    try:
        with open(path, encoding="utf-8-sig") as f:
            task = json.load(f, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    except ValueError as e:
        raise UserError(f"{path}: {e} (which value is meant is ambiguous)") from None
    for key in ("Definition", "Instances"):
        if key not in task:
            raise UserError(f"{path}: Super-NaturalInstructions task file has no '{key}'")
    definition = task["Definition"][0] if isinstance(task["Definition"], list) else task["Definition"]
    category = (task.get("Categories") or [""])[0]
    rows = []
    for inst in task["Instances"]:
        outputs = inst.get("output")
        outputs = [outputs] if isinstance(outputs, str) else list(outputs or [])
        rows.append(
            {
                "definition": definition,
                "input": inst.get("input"),
                "output": outputs[0] if outputs else None,
                "references": outputs,
                "category": category,
            }
        )
    return pa.Table.from_pylist(rows) if rows else pa.table({"definition": [], "input": [], "output": []})


def _reader_kwargs(kind: str, path: str) -> dict:
    """CSV cells are text: no type guessing (007 stays 007) and empty cells stay empty strings."""
    if kind != "csv":
        return {}
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first name
        header = next(csv.reader(f), [])
    return {"features": datasets.Features({c: datasets.Value("string") for c in header}), "keep_default_na": False}


def read_columns(path: str) -> dict[str, list]:
    """One data file's records as columns ({column: values}, None where a record lacks the column).
    JSON Lines are parsed here, line by line (a few microseconds a line, no per-file `datasets`
    bookkeeping, which made loading thousands of files quadratic, and a file:line for every error);
    other kinds go through pyarrow or `datasets`' builders."""
    kind = FILE_KINDS[os.path.splitext(path)[1]]
    if kind in ("json", "csv"):
        check_text_file(path)
    if _is_sni_task_file(path):
        return _read_sni_task_file(path).to_pydict()
    if path.endswith(".jsonl"):
        return _columns(_read_json_lines(path))
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pydict()
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot read as parquet: {e}") from None
    return _read_with_datasets(path, kind).to_pydict()


def _read_json_lines(path: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_no_duplicate_keys)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: {e} in the record (which value is meant is ambiguous)") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{lineno}: the record is not a JSON object (a {type(record).__name__})")
            records.append(record)
    return records


def _columns(records: list[dict]) -> dict[str, list]:
    names = list(dict.fromkeys(k for r in records for k in r))
    return {k: [r.get(k) for r in records] for k in names}


def _read_with_datasets(path: str, kind: str) -> pa.Table:
    if kind == "csv":  # cells are text (see _reader_kwargs)
        try:
            ds = datasets.load_dataset(kind, data_files=path, split="train", **_reader_kwargs(kind, path))
        except Exception as e:  # noqa: BLE001 - pandas' message names the line
            cause = e.__cause__ or e
            raise UserError(f"{path}: cannot read as CSV: {str(cause).strip().splitlines()[-1]}") from None
        return ds.data.table
    try:  # a JSON array (.json) or anything else datasets reads
        return datasets.load_dataset(kind, data_files=path, split="train").data.table
    except Exception as e:  # noqa: BLE001
        located = _find_bad_json_line(path) if kind == "json" else None
        raise UserError(located or f"{path}: cannot read as {kind}: {e}") from None


def resolve_paths(source: TaskSource, root: str | None, where: str) -> list[str]:
    path = os.path.expanduser(str(source.path))  # a path source: TaskSource.check
    if root and not os.path.isabs(path):
        path = os.path.join(os.path.expanduser(root), path)
    if os.path.isdir(path):
        pattern = os.path.join(path, "*")
    else:
        pattern = path
    matches = sorted(p for p in glob.glob(pattern) if os.path.splitext(p)[1] in FILE_KINDS)
    for p in matches:
        if os.path.isdir(p):  # named like a task file: the user expects one
            raise UserError(f"{p}: is a directory, expected a data file")
    files = [p for p in matches if os.path.isfile(p) and not p.endswith(".examples.json")]
    if not files:
        if not glob.has_magic(path) and not os.path.exists(path):
            raise UserError(f"{where}.path: no such file or directory: {path}")
        raise UserError(f"{where}.path: no .jsonl/.json/.parquet/.csv files match {pattern}")
    return files
