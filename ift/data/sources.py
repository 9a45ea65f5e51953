"""Task collections: load instruction data from files, globs, the hub or the built-in suite into
per-task `datasets.Dataset`s with one canonical schema.

Canonical columns: task, instruction, input, output, references, rationale, category, messages.
`messages` holds a conversation's turns ([{role, content}], ending with an assistant turn) for
the chat schemas and is empty otherwise; instruction/output then summarize it (the turns before
the last reply, and the last reply) for listings and evaluation.
"""
from __future__ import annotations

import collections
import glob
import json
import math
import os
from dataclasses import dataclass, field

import datasets

from ift.config import DataConfig, TaskSource, UserError
from ift.data import builtin, chat

CANONICAL = ("task", "instruction", "input", "output", "references", "rationale", "category", "messages")
CANONICAL_FEATURES = datasets.Features({
    **{c: datasets.Value("string") for c in CANONICAL}, "references": datasets.List(datasets.Value("string")),
    "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
    "_bad": datasets.Value("string"),
})
FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Task:
    name: str
    schema: str
    source: str  # file, hub id or "builtin"
    dataset: datasets.Dataset  # canonical columns
    skipped: collections.Counter = field(default_factory=collections.Counter)  # reason -> count

    def __len__(self) -> int:
        return len(self.dataset)


# --------------------------------------------------------------------------- schemas


def detect_schema(columns, where: str) -> str:
    cols = set(columns)
    if "messages" in cols:
        return "messages"
    if "conversations" in cols:
        return "sharegpt"
    if {"prompt", "completion"} <= cols:
        return "prompt_completion"
    if "definition" in cols and "output" in cols:
        return "sni"
    if "instruction" in cols and "output" in cols:
        return "alpaca"
    raise UserError(
        f"{where}: cannot detect the schema from columns {sorted(cols)}; set `schema:` "
        "(alpaca, sni, messages, sharegpt, prompt_completion) or map columns with `fields:`"
    )


REQUIRED = {
    "alpaca": ("instruction", "output"),
    "sni": ("definition", "output"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
}


def _not_text(value) -> str:
    """Why a field value cannot be used as text ('' when it can). Numbers and booleans become
    their text (an answer "42" stored as a number); NaN/inf (a missing value in a parquet or
    pandas column) and lists/objects are errors, never the strings "nan" or "[...]"."""
    if isinstance(value, (str, bool, int)):
        return ""
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"is not a text value ({value})"
    return f"is not text (a {type(value).__name__})"


def _to_canonical(batch: dict, schema: str, task: str, task_field: str | None = None) -> dict:
    """Batched map from one schema to canonical columns; a `_bad` column names what is wrong. With
    `task_field`, each record's task is that column's value."""
    n = len(next(iter(batch.values())))
    out = {k: [] for k in CANONICAL}
    out["_bad"] = []

    def get(col, i, default=""):
        values = batch.get(col)
        return default if values is None else values[i]

    for i in range(n):
        bad, turns = "", []
        if schema in ("messages", "sharegpt"):
            turns, bad = chat.conversation(get(schema if schema == "messages" else "conversations", i, None),
                                           sharegpt=schema == "sharegpt")
            # For listings and evaluation: the turns before the last reply, and the last reply.
            prior = turns[:-1]
            instruction = prior[-1]["content"] if len(prior) == 1 else "\n".join(f"{t['role']}: {t['content']}" for t in prior)
            output = turns[-1]["content"] if turns else ""
            inp = ""
        elif schema == "prompt_completion":
            instruction, inp, output = get("prompt", i, None), "", get("completion", i, None)
        else:
            instruction = get("definition" if schema == "sni" else "instruction", i, None)
            inp, output = get("input", i, "") or "", get("output", i, None)
        for col, value in (("instruction", instruction), ("output", output), ("input", inp)):
            name = col if schema != "sni" or col != "instruction" else "definition"
            if value is None and col != "input" and not bad:
                bad = f"missing field '{name}'"
            elif value is not None and not bad and (why := _not_text(value)):
                bad = f"field '{name}' {why}"
        instruction, output = instruction or "", output or ""
        refs = get("references", i, None) or ([output] if output else [])
        if not bad and not str(output).strip():
            bad = "empty output"
        if not bad and not str(instruction).strip() and not str(inp).strip():
            bad = "empty prompt (no instruction and no input)"
        if task_field is not None:
            value = get(task_field, i, None)
            why = "is missing" if value is None else _not_text(value) or ("is empty" if not str(value).strip() else "")
            bad = bad or (f"task_field '{task_field}' {why}" if why else "")
            out["task"].append(task + str(value).strip() if not why else "")  # `task`: the name prefix
        else:
            out["task"].append(task)
        out["instruction"].append(str(instruction))
        out["input"].append(str(inp))
        out["output"].append(str(output))
        out["references"].append([str(r) for r in refs])
        out["rationale"].append(str(get("rationale", i, "") or ""))
        out["category"].append(str(get("category", i, "") or ""))
        out["messages"].append(turns)
        out["_bad"].append(bad)
    return out


def normalize(ds: datasets.Dataset, schema: str | None, fields: dict, task: str, where: str,
              on_bad_record: str, task_field: str | None = None) -> tuple[datasets.Dataset, str, collections.Counter]:
    """Rename mapped columns, detect the schema, convert to canonical columns, handle bad records."""
    if task_field is not None and task_field not in ds.column_names:
        raise UserError(f"{where}: task_field '{task_field}' is not a column of the data (columns: {ds.column_names})")
    rename = {src: dst for dst, src in fields.items() if src != dst}
    missing = [src for src in rename if src not in ds.column_names]
    if missing:
        raise UserError(f"{where}: fields maps to column(s) {missing} that the data does not have (columns: {ds.column_names})")
    if rename:
        ds = ds.remove_columns([c for c in rename.values() if c in ds.column_names]).rename_columns(rename)
    schema = schema or detect_schema(ds.column_names, where)
    for col in REQUIRED[schema]:
        if col not in ds.column_names:
            raise UserError(f"{where}: schema '{schema}' needs field '{col}', which no record has (columns: {ds.column_names})")
    ds = ds.map(_to_canonical, batched=True, fn_kwargs={"schema": schema, "task": task, "task_field": task_field},
                remove_columns=ds.column_names, desc=f"normalize {task}", features=CANONICAL_FEATURES)
    bad = ds.with_format("arrow", columns=["_bad"])[:]["_bad"].to_pylist()  # whole column, not row by row
    skipped = collections.Counter(reason for reason in bad if reason)
    if skipped:
        first = next(i for i, reason in enumerate(bad) if reason)
        if on_bad_record == "error":
            raise UserError(
                f"{_locate(where, first)}: {bad[first]} ({sum(skipped.values())} bad record(s) in this task; "
                "set data.on_bad_record=skip to skip and count them)"
            )
        ds = ds.filter(lambda b: [not r for r in b], input_columns="_bad", batched=True)
    return ds.remove_columns("_bad"), schema, skipped


def _locate(where: str, row: int) -> str:
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


# --------------------------------------------------------------------------- loading


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
                    raise UserError(f"{path}:{line}: not valid UTF-8 (byte 0x{block[at]:02x} at {where}); "
                                    "re-encode the file as UTF-8") from None
                line += block.count(b"\n")
                consumed += len(block)
            decoder.decode(b"", final=True)
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}:{line}: not valid UTF-8 (the file ends inside a character)") from None


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise ValueError(f"duplicate key '{dup}'")
    return dict(pairs)


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


def _read_sni_task_file(path: str) -> datasets.Dataset:
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
    for i, inst in enumerate(task["Instances"]):
        outputs = inst.get("output")
        outputs = [outputs] if isinstance(outputs, str) else list(outputs or [])
        rows.append({"definition": definition, "input": inst.get("input"), "output": outputs[0] if outputs else None,
                     "references": outputs, "category": category})
    return datasets.Dataset.from_list(rows)


def _reader_kwargs(kind: str, path: str) -> dict:
    """CSV cells are text: no type guessing (007 stays 007) and empty cells stay empty strings."""
    if kind != "csv":
        return {}
    import csv

    with open(path, newline="", encoding="utf-8-sig") as f:  # a byte-order mark is not part of the first name
        header = next(csv.reader(f), [])
    return {"features": datasets.Features({c: datasets.Value("string") for c in header}), "keep_default_na": False}


def _load_files(paths: list[str]) -> list[datasets.Dataset]:
    """Load files through `datasets` (Arrow, memory-mapped cache); one builder call per file kind."""
    out: dict[str, datasets.Dataset] = {}
    by_kind = collections.defaultdict(list)
    for p in paths:
        if FILE_KINDS[os.path.splitext(p)[1]] in ("json", "csv"):
            check_text_file(p)
        if _is_sni_task_file(p):
            out[p] = _read_sni_task_file(p)
        else:
            by_kind[FILE_KINDS[os.path.splitext(p)[1]]].append(p)
    for kind, files in by_kind.items():
        if kind == "csv":  # headers differ per file, so one builder call each
            for p in files:
                try:
                    out[p] = datasets.load_dataset(kind, data_files=p, split="train", **_reader_kwargs(kind, p))
                except Exception as e:  # noqa: BLE001 - pandas' message names the line
                    cause = e.__cause__ or e
                    raise UserError(f"{p}: cannot read as CSV: {str(cause).strip().splitlines()[-1]}") from None
            continue
        try:
            # Split names must be identifiers, so files become splits f0, f1, ...
            dd = datasets.load_dataset(kind, data_files={f"f{i}": p for i, p in enumerate(files)})
            out.update({p: dd[f"f{i}"] for i, p in enumerate(files)})
        except Exception:  # noqa: BLE001 - one file at a time finds the one at fault (or mixed columns)
            for p in files:
                try:
                    out[p] = datasets.load_dataset(kind, data_files=p, split="train")
                except Exception as e:  # noqa: BLE001
                    located = _find_bad_json_line(p) if kind == "json" else None
                    raise UserError(located or f"{p}: cannot read as {kind}: {e}") from None
    return [out[p] for p in paths]


def _resolve_paths(source: TaskSource, root: str | None, where: str) -> list[str]:
    path = os.path.expanduser(source.path)
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


def load_source(source: TaskSource, root: str | None, on_bad_record: str, seed: int, where: str) -> list[Task]:
    """Load one `data.tasks` entry: one task per file, per hub dataset, or per built-in task."""
    if source.builtin:
        try:
            names = builtin.task_names(source.builtin)
        except ValueError as e:
            raise UserError(f"{where}.builtin: {e}") from None
        features = datasets.Features({k: v for k, v in CANONICAL_FEATURES.items() if k != "_bad"})
        return [Task(name, "builtin", "builtin", datasets.Dataset.from_list(
            [{**r, "messages": []} for r in builtin.examples(name, source.n, seed)], features=features)) for name in names]
    if source.hub:
        name = source.name or source.hub.rstrip("/").split("/")[-1]
        try:
            ds = datasets.load_dataset(source.hub, source.subset, split=source.split)
        except Exception as e:  # noqa: BLE001 - any failure here is the user's dataset id or network
            raise UserError(f"{where}.hub: cannot load '{source.hub}' (split {source.split}): {e}") from None
        ds, schema, skipped = normalize(ds, source.schema, source.fields, _prefix(source) if source.task_field else name,
                                        source.hub, on_bad_record, source.task_field)
        if source.task_field:
            return split_by_task_field([(ds, schema, skipped)], source, source.hub)
        return [Task(name, schema, source.hub, ds, skipped)]
    files = _resolve_paths(source, root, where)
    if source.task_field:
        parts = [normalize(ds, source.schema, source.fields, _prefix(source), path, on_bad_record, source.task_field)
                 for path, ds in zip(files, _load_files(files))]
        return split_by_task_field(parts, source, source.path)
    if source.name and len(files) > 1:
        raise UserError(f"{where}.name: '{source.name}' names one task but the path matches {len(files)} files")
    tasks = []
    for path, ds in zip(files, _load_files(files)):
        name = source.name or os.path.splitext(os.path.basename(path))[0]
        ds, schema, skipped = normalize(ds, source.schema, source.fields, name, path, on_bad_record)
        tasks.append(Task(name, schema, path, ds, skipped))
    return tasks


def _prefix(source: TaskSource) -> str:
    return f"{source.name}/" if source.name else ""


def split_by_task_field(parts: list[tuple], source: TaskSource, origin: str) -> list[Task]:
    """One task per distinct value of the source's task_field (over all its files), named after the
    value, prefixed `<name>/` when the source has a `name:`; tasks in order of first appearance."""
    ds = parts[0][0] if len(parts) == 1 else datasets.concatenate_datasets([p[0] for p in parts])
    schemas = sorted({p[1] for p in parts})
    skipped = sum((p[2] for p in parts), collections.Counter())
    values = ds.with_format("arrow", columns=["task"])[:]["task"]
    groups: dict[str, list[int]] = {}
    for i, value in enumerate(values.to_pylist()):
        groups.setdefault(value, []).append(i)
    tasks = [Task(name, "+".join(schemas), origin, ds.select(rows)) for name, rows in groups.items()]
    if tasks:
        tasks[0].skipped = skipped  # a bad record belongs to no task: counted once, on the first
    return tasks


def load_tasks(data: DataConfig, seed: int = 0, sources: list[TaskSource] | None = None,
               section: str = "data.tasks") -> list[Task]:
    """Every task of `data.tasks` (or of `sources`), in config order; task names must be unique."""
    datasets.disable_progress_bars()
    tasks: list[Task] = []
    for i, source in enumerate(data.tasks if sources is None else sources):
        tasks.extend(load_source(source, data.root, data.on_bad_record, seed, f"{section}[{i}]"))
    seen: dict[str, str] = {}
    for t in tasks:
        if t.name in seen:
            raise UserError(f"{section}: task name '{t.name}' comes from both {seen[t.name]} and {t.source}; give one a `name:`")
        seen[t.name] = t.source
    return tasks
