"""What `ift eval` evaluates on: the `--tasks` mini-language and the prompts of each task.

A `--tasks` spec is `builtin:<split|task>`, a YAML config file (its eval.tasks, with its data.root),
or a file / directory / glob (one task per file); comma-separated specs combine several of these.
Prompts are rendered with the training templates (few-shot: SNI's positive examples of the task,
else exemplars drawn from the task itself).

Cheap to import (no torch, no transformers).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

from ift.config import Config, DataConfig, EvalConfig, TaskSource, load_config, read_yaml
from ift.data import chat as chat_format
from ift.data import templates
from ift.errors import UserError

# --------------------------------------------------------------------------- the --tasks mini-language


def _sanitize(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "eval"


def resolve_tasks(spec, cfg: Config | None) -> tuple[list[TaskSource], DataConfig, str, object]:
    """(sources, data config for loading them, base of the default result name, spec for `settings`).

    spec: None (the run config's eval.tasks), a list of TaskSource, or a string: `builtin:<split|task>`,
    a YAML config file (its eval.tasks, with its data.root), or a file / directory / glob (one task per
    file). Comma-separated strings combine several of these.
    """
    on_bad = cfg.data.on_bad_record if cfg is not None else "error"
    if spec is None:
        if cfg is None:
            raise UserError(
                "--tasks is required for a model folder (it has no run config with eval.tasks); "
                "e.g. --tasks builtin:heldout or --tasks 'data/sni/eval/*.jsonl'"
            )
        return (
            list(cfg.eval.tasks),
            DataConfig(root=cfg.data.root, on_bad_record=on_bad),
            "eval",
            [_describe(s) for s in cfg.eval.tasks],
        )
    if isinstance(spec, (list, tuple)):
        return list(spec), DataConfig(on_bad_record=on_bad), "eval", [_describe(s) for s in spec]
    spec = str(spec).strip()
    if not spec:
        raise UserError("--tasks is empty")
    if "," in spec and not os.path.exists(os.path.expanduser(spec)):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        sources = []
        data = DataConfig(on_bad_record=on_bad)
        for part in parts:
            s, d, _, _ = resolve_tasks(part, cfg)
            if d.root is not None:  # a config file's tasks, relative to its data.root: make them absolute
                s = [_absolute(x, d.root) for x in s]
            sources.extend(s)
        return sources, data, "_".join(_spec_base(p) for p in parts), spec
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1].strip()
        if not name:
            raise UserError("--tasks builtin: needs a split or task name, e.g. builtin:heldout")
        return [TaskSource(builtin=name)], DataConfig(on_bad_record=on_bad), _spec_base(spec), spec
    path = os.path.expanduser(spec)
    if path.endswith((".yaml", ".yml")) and os.path.isfile(path):
        raw = read_yaml(path)
        if not (raw.get("eval") or {}).get("tasks"):
            raise UserError(f"--tasks {spec}: the config file has no eval.tasks")
        other = load_config(path)
        root = other.data.root
        return list(other.eval.tasks), DataConfig(root=root, on_bad_record=on_bad), _spec_base(spec), spec
    return [TaskSource(path=path)], DataConfig(on_bad_record=on_bad), _spec_base(spec), spec


def eval_section(tasks) -> EvalConfig | None:
    """A YAML tasks config's eval section: the defaults for a model folder (which has no run config)."""
    if isinstance(tasks, str):
        path = os.path.expanduser(tasks.strip())
        if path.endswith((".yaml", ".yml")) and os.path.isfile(path):
            return load_config(path).eval
    return None


def _absolute(source: TaskSource, root: str) -> TaskSource:
    if source.path and not os.path.isabs(os.path.expanduser(source.path)):
        return dataclasses.replace(source, path=os.path.join(os.path.expanduser(root), source.path))
    return source


def _describe(s: TaskSource) -> str:
    if s.builtin:
        return f"builtin:{s.builtin}"
    return s.path or f"hub:{s.hub}"


def _spec_base(spec: str) -> str:
    if spec.startswith("builtin:"):
        return _sanitize(spec.split(":", 1)[1])
    path = os.path.expanduser(spec.rstrip("/"))
    if path.endswith((".yaml", ".yml")) or (os.path.isfile(path) and not glob.has_magic(path)):
        name = os.path.basename(path)
        stem = name[: -len(".examples.json")] if name.endswith(".examples.json") else os.path.splitext(name)[0]
        return _sanitize(stem)
    if glob.has_magic(path):
        parts = path.split(os.sep)
        path = os.sep.join(parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))])
    names = [p for p in os.path.abspath(path or ".").split(os.sep) if p][-2:]
    return _sanitize("_".join(names))


# --------------------------------------------------------------------------- prompts


def positive_examples(task) -> list[dict] | None:
    """SNI's positive examples of a task file (`<task>.examples.json` beside `<task>.jsonl`), else None."""
    source = getattr(task, "source", "") or ""
    if not os.path.isfile(source):
        return None
    path = os.path.splitext(source)[0] + ".examples.json"
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    positives = data.get("positive_examples") if isinstance(data, dict) else None
    if not isinstance(positives, list):
        raise UserError(f"{path}: expected a 'positive_examples' list")
    out = []
    for i, ex in enumerate(positives):
        if not isinstance(ex, dict) or "output" not in ex:
            raise UserError(f"{path}: positive_examples[{i}] needs 'input' and 'output'")
        out.append({"input": str(ex.get("input") or ""), "output": str(ex["output"])})
    return out


def render_prompts(task, shots: int, seed: int, tokenizer, chat: bool, limit: int | None) -> list[dict]:
    """[{index, prompt, references}] for the first `limit` examples of a task, rendered as in training."""
    ds = task.dataset
    n = len(ds) if limit is None else min(limit, len(ds))
    rows = ds.select(range(n)).to_list()
    positives = positive_examples(task) if shots > 0 else None
    out = []
    for i, row in enumerate(rows):
        if row.get("messages"):  # a conversation: its turns before the last reply, rendered as in training
            ids = chat_format.prompt_ids(tokenizer, row["messages"][:-1], chat=chat)
            out.append(
                {
                    "index": i,
                    "prompt": tokenizer.decode(ids),
                    "prompt_ids": ids,
                    "references": list(row["references"]) or [row["output"]],
                }
            )
            continue
        exemplars = []
        if shots > 0:
            if positives is not None:  # Tk-Instruct: definition + the task's first k positive examples
                exemplars = positives[:shots]
            else:
                exemplars = [ds[j] for j in templates.choose_exemplars(len(ds), i, shots, seed, task.name)]
        prompt, target = templates.render(row, "few_shot" if exemplars else "zero_shot", exemplars)
        if chat:
            prompt, target = templates.render_chat(tokenizer, prompt, target)
        out.append({"index": i, "prompt": prompt, "references": list(row["references"]) or [row["output"]]})
    return out
