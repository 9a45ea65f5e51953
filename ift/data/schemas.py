"""The record schemas a task file can have (alpaca's instruction/input/output, Super-NaturalInstructions,
chat `messages`, ShareGPT `conversations`, prompt/completion): how one is detected from the columns,
which fields it needs, and a table `{schema: normalizer}` of small pure functions that read one
record into the canonical columns; the checks every schema shares come after (`record_problem`).
Canonical columns: task, instruction, input, output, references, rationale, category, messages."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ift.data import chat
from ift.errors import UserError

CANONICAL = ("task", "instruction", "input", "output", "references", "rationale", "category", "messages")


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


@dataclass
class Record:
    """What one record of a schema says, before the checks every schema shares (None: missing)."""

    instruction: object
    input: object
    output: object
    messages: list = field(default_factory=list)
    bad: str = ""  # what the schema's own reading found wrong
    instruction_field: str = "instruction"  # the record's own names, for the error messages
    output_field: str = "output"


# One normalizer per schema: a record's reader `get(column, default)` -> Record.


def alpaca(get) -> Record:
    return Record(get("instruction", None), get("input", "") or "", get("output", None))


def sni(get) -> Record:
    return Record(get("definition", None), get("input", "") or "", get("output", None), instruction_field="definition")


def prompt_completion(get) -> Record:
    return Record(
        get("prompt", None), "", get("completion", None), instruction_field="prompt", output_field="completion"
    )


def _conversation(turns: list, bad: str) -> Record:
    """For listings and evaluation: the turns before the last reply, and the last reply."""
    prior = turns[:-1]
    instruction = prior[-1]["content"] if len(prior) == 1 else "\n".join(f"{t['role']}: {t['content']}" for t in prior)
    return Record(instruction, "", turns[-1]["content"] if turns else "", turns, bad)


def messages(get) -> Record:
    return _conversation(*chat.conversation(get("messages", None), sharegpt=False))


def sharegpt(get) -> Record:
    return _conversation(*chat.conversation(get("conversations", None), sharegpt=True))


NORMALIZERS = {
    "alpaca": alpaca,
    "sni": sni,
    "messages": messages,
    "sharegpt": sharegpt,
    "prompt_completion": prompt_completion,
}


def record_problem(r: Record) -> str:
    """What is wrong with a record's text fields ('' when nothing), the first problem found."""
    if r.bad:
        return r.bad
    for name, value in ((r.instruction_field, r.instruction), (r.output_field, r.output), ("input", r.input)):
        if value is None and name != "input":
            return f"missing field '{name}'"
        if value is not None and (why := _not_text(value)):
            return f"field '{name}' {why}"
    if not str(r.output or "").strip():
        return "empty output"
    if not str(r.instruction or "").strip() and not str(r.input).strip():
        return "empty prompt (no instruction and no input)"
    return ""


def _reader(batch: dict, i: int):
    """`get(column, default)` of a batch's i-th record."""

    def get(col, default=""):
        values = batch.get(col)
        return default if values is None else values[i]

    return get


def to_canonical(batch: dict, schema: str, task: str, task_field: str | None = None) -> dict:
    """Batched map from one schema to canonical columns (NORMALIZERS[schema], then the shared
    checks); a `_bad` column names what is wrong. With `task_field`, each record's task is that
    column's value."""
    n = len(next(iter(batch.values())))
    normalize = NORMALIZERS[schema]
    out: dict = {k: [] for k in (*CANONICAL, "_bad")}
    for i in range(n):
        get = _reader(batch, i)
        r = normalize(get)
        bad = record_problem(r)
        instruction, output = r.instruction or "", r.output or ""
        refs = get("references", None) or ([output] if output else [])
        if task_field is not None:
            value = get(task_field, None)
            why = "is missing" if value is None else _not_text(value) or ("is empty" if not str(value).strip() else "")
            bad = bad or (f"task_field '{task_field}' {why}" if why else "")
            out["task"].append(task + str(value).strip() if not why else "")  # `task`: the name prefix
        else:
            out["task"].append(task)
        out["instruction"].append(str(instruction))
        out["input"].append(str(r.input))
        out["output"].append(str(output))
        out["references"].append([str(ref) for ref in refs])
        out["rationale"].append(str(get("rationale", "") or ""))
        out["category"].append(str(get("category", "") or ""))
        out["messages"].append(r.messages)
        out["_bad"].append(bad)
    return out
