"""Task collections: load instruction data from files, globs, the hub or the built-in suite into
per-task `datasets.Dataset`s with one canonical schema.

Canonical columns: task, instruction, input, output, references, rationale, category, messages.
`messages` holds a conversation's turns ([{role, content}], ending with an assistant turn) for
the chat schemas and is empty otherwise; instruction/output then summarize it (the turns before
the last reply, and the last reply) for listings and evaluation.
"""

from __future__ import annotations

import collections
import json
import os
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa

from ift.atomic import replacing, write_text
from ift.config import DataConfig, TaskSource
from ift.data import builtin
from ift.data.files import locate, read_columns, resolve_paths
from ift.data.schemas import CANONICAL, REQUIRED, detect_schema, to_canonical
from ift.errors import UserError
from ift.hashing import fingerprint

CANONICAL_FEATURES = datasets.Features(
    {
        **{c: datasets.Value("string") for c in CANONICAL},
        "references": datasets.List(datasets.Value("string")),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "_bad": datasets.Value("string"),
    }
)
ARROW_SCHEMA = datasets.Features({k: v for k, v in CANONICAL_FEATURES.items() if k != "_bad"}).arrow_schema
SOURCE_CACHE_VERSION = "1"  # bump when reading or normalization changes


@dataclass
class Task:
    name: str
    schema: str
    source: str  # file, hub id or "builtin"
    rows: datasets.Dataset | None  # canonical columns; None: a range of `parent`, sliced when first read
    skipped: collections.Counter = field(default_factory=collections.Counter)  # reason -> count
    # The table this task's rows are a range of, shared with the other tasks of its source, and
    # every task's (first row, rows) in it: tokenization runs once over the table.
    parent: datasets.Dataset | None = None
    parent_spans: dict | None = None

    @property
    def dataset(self) -> datasets.Dataset:
        if self.rows is None:  # a Dataset costs milliseconds to make: thousands of tasks, only when read
            assert self.parent is not None and self.parent_spans is not None  # a range of `parent`
            start, n = self.parent_spans[self.name]
            self.rows = datasets.Dataset(
                self.parent.data.slice(start, n), fingerprint=f"{self.parent._fingerprint}-{start}"
            )
        return self.rows

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else (self.parent_spans or {})[self.name][1]


def _columns_plan(
    columns: list[str], schema: str | None, fields: dict, task_field: str | None, where: str
) -> tuple[dict, str]:
    """The column renames a source's `fields:` asks for, and its schema (given or detected)."""
    if task_field is not None and task_field not in columns:
        raise UserError(f"{where}: task_field '{task_field}' is not a column of the data (columns: {columns})")
    rename = {src: dst for dst, src in fields.items() if src != dst}
    missing = [src for src in rename if src not in columns]
    if missing:
        raise UserError(
            f"{where}: fields maps to column(s) {missing} that the data does not have (columns: {columns})"
        )
    renamed = [rename.get(c, c) for c in columns if c not in rename.values() or c in rename]
    schema = schema or detect_schema(renamed, where)
    for col in REQUIRED[schema]:
        if col not in renamed:
            raise UserError(
                f"{where}: schema '{schema}' needs field '{col}', which no record has (columns: {renamed})"
            )
    return rename, schema


def _bad_records(bad: list[str], where: str, on_bad_record: str) -> collections.Counter:
    """Count the bad records; with on_bad_record=error, the first one is an error naming its line."""
    skipped = collections.Counter(reason for reason in bad if reason)
    if skipped and on_bad_record == "error":
        first = next(i for i, reason in enumerate(bad) if reason)
        raise UserError(
            f"{locate(where, first)}: {bad[first]} ({sum(skipped.values())} bad record(s) in this task; "
            "set data.on_bad_record=skip to skip and count them)"
        )
    return skipped


def normalize(
    ds: datasets.Dataset,
    schema: str | None,
    fields: dict,
    task: str,
    where: str,
    on_bad_record: str,
    task_field: str | None = None,
) -> tuple[datasets.Dataset, str, collections.Counter]:
    """A `datasets.Dataset` (a hub dataset: streamed through a cached map) in canonical columns."""
    rename, schema = _columns_plan(ds.column_names, schema, fields, task_field, where)
    if rename:
        ds = ds.remove_columns(
            [c for c in rename.values() if c in ds.column_names and c not in rename]
        ).rename_columns(rename)
    ds = ds.map(
        to_canonical,
        batched=True,
        fn_kwargs={"schema": schema, "task": task, "task_field": task_field},
        remove_columns=ds.column_names,
        desc=f"normalize {task}",
        features=CANONICAL_FEATURES,
    )
    skipped = _bad_records(ds.with_format("arrow", columns=["_bad"])[:]["_bad"].to_pylist(), where, on_bad_record)
    if skipped:
        ds = ds.filter(lambda b: [not r for r in b], input_columns="_bad", batched=True)
    return ds.remove_columns("_bad"), schema, skipped


def normalize_columns(
    columns: dict[str, list],
    schema: str | None,
    fields: dict,
    task: str,
    where: str,
    on_bad_record: str,
    task_field: str | None = None,
) -> tuple[pa.Table, str, collections.Counter]:
    """One file's records in canonical columns, as an Arrow table: no `datasets` machinery per file."""
    rename, schema = _columns_plan(list(columns), schema, fields, task_field, where)
    batch = {rename.get(c, c): values for c, values in columns.items() if c not in rename.values() or c in rename}
    rows = len(next(iter(batch.values()), []))
    out = to_canonical(batch, schema, task, task_field) if rows else {k: [] for k in (*CANONICAL, "_bad")}
    bad = out.pop("_bad")
    skipped = _bad_records(bad, where, on_bad_record)
    canonical = pa.Table.from_pydict(out, schema=ARROW_SCHEMA)
    if skipped:
        canonical = canonical.filter(pa.array([not reason for reason in bad]))
    return canonical, schema, skipped


# --------------------------------------------------------------------------- loading


def _slice_tasks(table: datasets.Dataset | pa.Table, spans: list[dict], key: str) -> list[Task]:
    """Tasks as row ranges of one table: each a zero-copy slice, not a `datasets` operation per task."""
    if not isinstance(table, datasets.Dataset):
        table = datasets.Dataset(datasets.table.InMemoryTable(table), fingerprint=key)
    shared = {s["name"]: (s["start"], s["stop"] - s["start"]) for s in spans}
    return [
        Task(
            s["name"],
            s["schema"],
            s["source"],
            None,
            collections.Counter(s["skipped"]),
            parent=table,
            parent_spans=shared,
        )
        for s in spans
    ]


def _file_source_key(source: TaskSource, files: list[str], on_bad_record: str) -> str:
    """What a file source's canonical table depends on: the files (path, size, mtime) and settings."""
    stats = [(p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files]
    settings = {
        "v": SOURCE_CACHE_VERSION,
        "files": stats,
        "schema": source.schema,
        "fields": source.fields,
        "task_field": source.task_field,
        "name": source.name,
        "on_bad_record": on_bad_record,
    }
    return fingerprint(settings)


def _read_file_source(
    source: TaskSource, files: list[str], on_bad_record: str, where: str
) -> tuple[pa.Table, list[dict]]:
    """Every file of a source, normalized, in one table; spans say which rows are which task."""
    if source.name and len(files) > 1 and not source.task_field:
        raise UserError(f"{where}.name: '{source.name}' names one task but the path matches {len(files)} files")
    tables, spans, at = [], [], 0
    for path in files:
        name = _prefix(source) if source.task_field else source.name or os.path.splitext(os.path.basename(path))[0]
        table, schema, skipped = normalize_columns(
            read_columns(path), source.schema, source.fields, name, path, on_bad_record, source.task_field
        )
        tables.append(table)
        spans.append(
            {
                "name": name,
                "schema": schema,
                "source": path,
                "start": at,
                "stop": at + table.num_rows,
                "skipped": dict(skipped),
            }
        )
        at += table.num_rows
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if source.task_field:  # regroup the rows so that each task is one contiguous range
        table, spans = _group_by_task(table, spans, str(source.path))
    return table, spans


def _group_by_task(table: pa.Table, file_spans: list[dict], origin: str) -> tuple[pa.Table, list[dict]]:
    """Rows reordered by task (tasks in order of first appearance, rows in file order)."""
    names = table.column("task").to_pylist()
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    schemas = "+".join(sorted({s["schema"] for s in file_spans}))
    skipped = sum((collections.Counter(s["skipped"]) for s in file_spans), collections.Counter())
    spans, at = [], 0
    for name, rows in groups.items():
        spans.append(
            {"name": name, "schema": schemas, "source": origin, "start": at, "stop": at + len(rows), "skipped": {}}
        )
        at += len(rows)
    if spans:
        spans[0]["skipped"] = dict(skipped)  # a bad record belongs to no task: counted once, on the first
    order = np.fromiter((i for rows in groups.values() for i in rows), dtype=np.int64, count=len(names))
    return table.take(order), spans


def _cached_file_source(
    source: TaskSource, files: list[str], on_bad_record: str, cache: str | None, where: str
) -> list[Task]:
    """A file source through its cache: the canonical table is written once (Arrow, memory-mapped
    by every later run and by the other ranks of a node) and read back in milliseconds."""
    key = _file_source_key(source, files, on_bad_record)
    if cache is None:
        table, spans = _read_file_source(source, files, on_bad_record, where)
        return _slice_tasks(table, spans, key)
    folder = os.path.join(cache, "sources")
    arrow, meta = os.path.join(folder, f"{key}.arrow"), os.path.join(folder, f"{key}.json")
    if not os.path.isfile(meta):
        table, spans = _read_file_source(source, files, on_bad_record, where)
        # (local rank 0 of several nodes may race here: each writes its own temporary file)
        with replacing(arrow) as tmp, pa.OSFile(tmp, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        write_text(meta, json.dumps(spans))  # written last: a meta file means a complete table
    with open(meta) as f:
        spans = json.load(f)
    return _slice_tasks(
        datasets.Dataset(datasets.table.MemoryMappedTable.from_file(arrow), fingerprint=key), spans, key
    )


def load_source(
    source: TaskSource, root: str | None, on_bad_record: str, seed: int, where: str, cache: str | None = None
) -> list[Task]:
    """Load one `data.tasks` entry: one task per file, per hub dataset, per built-in task, or per
    value of the source's task_field."""
    if source.builtin:
        try:
            names = builtin.task_names(source.builtin)
        except ValueError as e:
            raise UserError(f"{where}.builtin: {e}") from None
        rows: list = []
        spans: list = []
        for name in names:
            examples = builtin.examples(name, source.n, seed)
            spans.append(
                {
                    "name": name,
                    "schema": "builtin",
                    "source": "builtin",
                    "start": len(rows),
                    "stop": len(rows) + len(examples),
                    "skipped": {},
                }
            )
            rows += [{**r, "messages": []} for r in examples]
        # keyed by the content, so a change to the generators is a new key
        key = fingerprint(rows)
        return _slice_tasks(pa.Table.from_pylist(rows, schema=ARROW_SCHEMA), spans, key)
    if source.hub:
        name = source.name or source.hub.rstrip("/").split("/")[-1]
        try:
            ds = datasets.load_dataset(source.hub, source.subset, split=source.split)
        except Exception as e:  # noqa: BLE001 - any failure here is the user's dataset id or network
            raise UserError(f"{where}.hub: cannot load '{source.hub}' (split {source.split}): {e}") from None
        ds, schema, skipped = normalize(
            ds,
            source.schema,
            source.fields,
            _prefix(source) if source.task_field else name,
            source.hub,
            on_bad_record,
            source.task_field,
        )
        if not source.task_field:
            return [Task(name, schema, source.hub, ds, skipped)]
        rows = ds.with_format("arrow")[:]  # honours the filter's indices
        table, spans = _group_by_task(rows, [{"schema": schema, "skipped": dict(skipped)}], source.hub)
        return _slice_tasks(table, spans, ds._fingerprint)
    return _cached_file_source(source, resolve_paths(source, root, where), on_bad_record, cache, where)


def cache_dir(data: DataConfig) -> str:
    """Where the source tables and the tokenized tasks are cached (data.cache_dir, $IFT_CACHE)."""
    return os.path.expanduser(data.cache_dir or os.environ.get("IFT_CACHE", "~/.cache/ift"))


def _prefix(source: TaskSource) -> str:
    return f"{source.name}/" if source.name else ""


def load_tasks(
    data: DataConfig, seed: int = 0, sources: list[TaskSource] | None = None, section: str = "data.tasks"
) -> list[Task]:
    """Every task of `data.tasks` (or of `sources`), in config order; task names must be unique."""
    tasks: list[Task] = []
    for i, source in enumerate(data.tasks if sources is None else sources):
        tasks.extend(load_source(source, data.root, data.on_bad_record, seed, f"{section}[{i}]", cache_dir(data)))
    seen: dict[str, str] = {}
    for t in tasks:
        if t.name in seen:
            raise UserError(
                f"{section}: task name '{t.name}' comes from both {seen[t.name]} and {t.source}; give one a `name:`"
            )
        seen[t.name] = t.source
    return tasks
