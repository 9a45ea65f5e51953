"""`ift eval`: greedy generation on (held-out) tasks, scored with the Super-NaturalInstructions metrics.

The model is a run directory (its newest complete checkpoint), a checkpoint folder, or any local
Hugging Face causal-LM folder. Prompts are rendered with the training templates and tokenized exactly
as in training; generation is greedy, batched with left padding, and stops at EOS. Results go to
`<run dir>/eval/<name>.json` (read by `ift compare`) and `<name>.md`, and to the run's W&B run.

Scores are x100 everywhere in the output, per task and per example: `exact_match` and `rougeL` are the
headline SNI metrics (max over references; SNI normalization lower-cases); `exact_match_cased` is the
same exact match without lower-casing, for case-sensitive tasks (uppercase_word, lowercase_word) where
copying the input would otherwise score 100. `mean` is the mean over tasks.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re

from ift.config import Config, DataConfig, EvalConfig, TaskSource, UserError, load_config, read_yaml
from ift.data import chat as chat_format
from ift.data import templates
from ift.eval import metrics

log = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 1  # built-in tasks are generated from the seed: eval instances differ from training's


# --------------------------------------------------------------------------- metrics


def exact_match_cased(prediction: str, references) -> float:
    return metrics.exact_match(prediction, references, lower=False)


# --------------------------------------------------------------------------- loading the model


def _is_run_or_checkpoint(path: str) -> bool:
    from ift.checkpoint import DONE_FILE

    return os.path.isdir(os.path.join(path, "checkpoints")) or os.path.exists(os.path.join(path, DONE_FILE))


def _checkpoint_step(ckpt: str) -> int | None:
    from ift.checkpoint import DONE_FILE, STEP_DIR

    m = STEP_DIR.match(os.path.basename(ckpt.rstrip("/")))
    if m:
        return int(m.group(1))
    try:
        with open(os.path.join(ckpt, DONE_FILE)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def locate(source: str) -> dict:
    """What `source` is, without loading weights: {"kind": "run" | "hf", "path", "run_dir", "checkpoint",
    "step", "cfg" (the run's Config, or None for a model folder)}."""
    from ift import export

    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise UserError(f"no such run directory, checkpoint or model folder: {source}")
    if not os.path.isdir(path):
        raise UserError(f"{source}: not a directory (expected a run directory, a checkpoint or a model folder)")
    if _is_run_or_checkpoint(path):
        ckpt = export.resolve_checkpoint(path)
        run_dir = path if os.path.isdir(os.path.join(path, "checkpoints")) else export.run_dir_of(ckpt)
        cfg_path = os.path.join(run_dir, "config.yaml")
        if not os.path.isfile(cfg_path):
            raise UserError(f"{run_dir}: run directory without config.yaml (needed to rebuild the model)")
        return {"kind": "run", "path": path, "run_dir": run_dir, "checkpoint": ckpt, "step": _checkpoint_step(ckpt),
                "cfg": load_config(cfg_path)}
    if os.path.isfile(os.path.join(path, "config.json")):
        return {"kind": "hf", "path": path, "run_dir": None, "checkpoint": None, "step": None, "cfg": None}
    raise UserError(f"{source}: not a run directory (no checkpoints/), a checkpoint (no COMPLETE marker) "
                    "or a Hugging Face model folder (no config.json)")


def load_model(source: str, info: dict | None = None):
    """(model, tokenizer, info) for a run directory, a checkpoint folder or a local HF folder (see `locate`)."""
    import torch

    from ift import export
    from ift.engine import accelerator_available

    info = info or locate(source)
    if info["kind"] == "run":
        model, tokenizer = export.load_consolidated(info["checkpoint"])
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(info["path"], trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{source}: cannot load a tokenizer from the model folder: {e}") from None
        dtype = "auto" if accelerator_available() else torch.float32
        # several visible GPUs share a model too large for one (accelerate's device map)
        device_map = "auto" if accelerator_available() and torch.cuda.device_count() > 1 else None
        try:
            model = AutoModelForCausalLM.from_pretrained(info["path"], dtype=dtype, device_map=device_map,
                                                         trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{source}: cannot load a causal LM from the model folder: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise UserError(f"{source}: the tokenizer has no EOS token, so generation cannot stop")
    if accelerator_available() and getattr(model, "hf_device_map", None) is None:
        from ift.model import DTYPES, resolve_dtype

        if info["cfg"] is not None:  # a run's checkpoint (consolidated in fp32): the precision it trained in
            model = model.to(DTYPES[resolve_dtype(info["cfg"].model.dtype)])
        if torch.cuda.device_count() > 1:
            from accelerate import dispatch_model, infer_auto_device_map

            model = dispatch_model(model, infer_auto_device_map(model, no_split_module_classes=model._no_split_modules))
        else:
            model = model.to("cuda")
    model.eval()
    return model, tokenizer, info


# --------------------------------------------------------------------------- tasks


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
            raise UserError("--tasks is required for a model folder (it has no run config with eval.tasks); "
                            "e.g. --tasks builtin:heldout or --tasks 'data/sni/eval/*.jsonl'")
        return list(cfg.eval.tasks), DataConfig(root=cfg.data.root, on_bad_record=on_bad), "eval", \
            [_describe(s) for s in cfg.eval.tasks]
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


def _absolute(source: TaskSource, root: str) -> TaskSource:
    import dataclasses

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
        return _sanitize(name[:-len(".examples.json")] if name.endswith(".examples.json") else os.path.splitext(name)[0])
    if glob.has_magic(path):
        parts = path.split(os.sep)
        path = os.sep.join(parts[:next(i for i, p in enumerate(parts) if glob.has_magic(p))])
    names = [p for p in os.path.abspath(path or ".").split(os.sep) if p][-2:]
    return _sanitize("_".join(names))


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
            out.append({"index": i, "prompt": tokenizer.decode(ids), "prompt_ids": ids,
                        "references": list(row["references"]) or [row["output"]]})
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


# --------------------------------------------------------------------------- generation


def _eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]:
        if e is not None and e not in ids:
            ids.append(int(e))
    return ids


def context_limit(model, cfg: Config | None) -> int | None:
    """Tokens the model may see: its position limit, and the run's data.max_seq_len (as in training)."""
    limits = [getattr(model.config, k, None) for k in ("max_position_embeddings", "n_positions", "max_sequence_length")]
    limits = [x for x in limits if isinstance(x, int) and x > 0]
    if cfg is not None:
        limits.append(cfg.data.max_seq_len)
    return min(limits) if limits else None


def generate(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int,
             progress=None) -> list[str]:
    """Greedy continuations of token-id prompts, batched with left padding; returns stripped texts
    in the order of `prompt_ids` (batches are formed from prompts sorted by length)."""
    import torch
    from transformers import GenerationConfig

    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=pad, eos_token_id=eos if len(eos) > 1 else eos[0],
                               bos_token_id=tokenizer.bos_token_id)
    order = sorted(range(len(prompt_ids)), key=lambda i: (-len(prompt_ids[i]), i))
    out: list[str | None] = [None] * len(prompt_ids)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(prompt_ids[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            p = prompt_ids[i]
            if p:
                ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[row, width - len(p):] = 1
        with torch.inference_mode():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
        for row, i in enumerate(idx):
            new = gen[row, width:].tolist()
            cut = next((j for j, t in enumerate(new) if t in eos), len(new))
            out[i] = tokenizer.decode(new[:cut], skip_special_tokens=True).strip()
        if progress is not None:
            progress.update(len(idx))
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------- outputs


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def markdown(result: dict) -> str:
    s = result["settings"]
    tasks = s["tasks"] if isinstance(s["tasks"], str) else ", ".join(map(str, s["tasks"]))
    lines = [f"# Evaluation `{result['name']}`", "",
             f"- model: `{result['model']}`" + (f" (checkpoint `{result['checkpoint']}`)" if result.get("checkpoint") else ""),
             f"- tasks: {tasks}",
             f"- shots: {s['shots']}, max_new_tokens: {s['max_new_tokens']}, limit: {s['limit']}, "
             f"batch_size: {s['batch_size']}, chat template: {'yes' if result.get('chat') else 'no'}",
             "", "Scores x100. Exact match and ROUGE-L follow Super-NaturalInstructions (lower-cased, max over "
             "references); EM (cased) keeps case. Mean = mean over tasks.", "",
             "| task | n | exact match | ROUGE-L | EM (cased) |", "|---|---:|---:|---:|---:|"]
    for t, sc in result["tasks"].items():
        lines.append(f"| {t} | {sc['n']} | {sc['exact_match']:.1f} | {sc['rougeL']:.1f} | {sc['exact_match_cased']:.1f} |")
    m = result["mean"]
    lines.append(f"| **mean** ({m['tasks']} tasks) | {m['n']} | **{m['exact_match']:.1f}** | **{m['rougeL']:.1f}** | "
                 f"{m['exact_match_cased']:.1f} |")
    cut = sum(sc.get("truncated", 0) for sc in result["tasks"].values())
    if cut:
        lines += ["", f"{cut} prompt(s) were longer than the context allows and kept only their end "
                  "(left truncation, as in training); see `truncated` per task in the JSON."]
    return "\n".join(lines) + "\n"


def log_to_wandb(info: dict, result: dict) -> bool:
    """Log mean and per-task scores into the run's own W&B run (same id, resumed); True if logged."""
    from ift.tracking import wandb_id_path

    cfg, run_dir = info.get("cfg"), info.get("run_dir")
    if cfg is None or run_dir is None or cfg.tracking.wandb.mode == "disabled":
        return False
    id_path = wandb_id_path(run_dir)
    if not os.path.isfile(id_path):
        return False
    with open(id_path) as f:
        run_id = f.read().strip()
    if not run_id:
        return False
    w = cfg.tracking.wandb
    name = result["name"]
    metrics_ = {f"eval/{name}/mean/{k}": result["mean"][k] for k in ("exact_match", "rougeL", "exact_match_cased")}
    for t, sc in result["tasks"].items():
        metrics_.update({f"eval/{name}/{t}/{k}": sc[k] for k in ("exact_match", "rougeL", "exact_match_cased")})
    try:
        import wandb

        run = wandb.init(id=run_id, resume="allow", mode=w.mode, dir=run_dir, project=w.project, entity=w.entity)
        try:
            # Its own step axis: the run's step counter is already past the checkpoint's step.
            run.define_metric("eval/step")
            run.define_metric(f"eval/{name}/*", step_metric="eval/step")
            run.log({"eval/step": info.get("step") or 0, **metrics_})
        finally:
            run.finish()
    except Exception as e:  # noqa: BLE001 - the results are on disk; W&B trouble must not lose them
        log.warning("could not log the evaluation to W&B run %s: %s", run_id, e)
        return False
    return True


# --------------------------------------------------------------------------- evaluate


def evaluate(source: str, tasks=None, shots: int | None = None, max_new_tokens: int | None = None,
             limit: int | None = None, batch_size: int | None = None, out: str | None = None,
             name: str | None = None, wandb: bool = True) -> dict:
    """Evaluate a run directory, checkpoint or local HF model folder; write `<out>/<name>.json` and
    `.md` (out defaults to `<run dir>/eval`) and return the result (plus "files")."""
    import torch
    from tqdm.auto import tqdm

    from ift.data.sources import load_tasks

    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise UserError(f"no such run directory, checkpoint or model folder: {source}")
    plain = not _is_run_or_checkpoint(path)
    if plain and tasks is None:
        raise UserError(f"{source} is a model folder, not a run: --tasks is required "
                        "(e.g. --tasks builtin:heldout or --tasks 'data/sni/eval/*.jsonl')")
    if plain and out is None:
        raise UserError(f"{source} is a model folder, not a run: --out DIR is required (where to write the results)")

    info = locate(source)
    cfg: Config | None = info["cfg"]
    sources, data_cfg, base, tasks_setting = resolve_tasks(tasks, cfg)
    defaults = cfg.eval if cfg is not None else _eval_section(tasks) or EvalConfig()
    shots = defaults.shots if shots is None else shots
    max_new_tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
    limit = defaults.limit if limit is None else limit
    batch_size = defaults.batch_size if batch_size is None else batch_size
    for flag, value, ok in (("--shots", shots, shots >= 0), ("--max-new-tokens", max_new_tokens, max_new_tokens > 0),
                            ("--limit", limit, limit is None or limit > 0), ("--batch-size", batch_size, batch_size > 0)):
        if not ok:
            raise UserError(f"{flag} must be {'>= 0' if flag == '--shots' else '> 0'}, got {value}")
    name = name or f"{base}_{shots}shot"
    if "/" in name or name in (".", ".."):
        raise UserError(f"--name must be a plain file name, got {name!r}")
    out_dir = os.path.abspath(os.path.expanduser(out)) if out else os.path.join(info["run_dir"], "eval")

    seed = (cfg.run.seed if cfg is not None else 0) + EVAL_SEED_OFFSET
    task_list = load_tasks(data_cfg, seed, sources=sources, section="eval.tasks" if tasks is None else "--tasks")
    task_list = [t for t in task_list if len(t) or log.warning("task %s has no examples; skipped", t.name)]
    if not task_list:
        raise UserError(f"no evaluation tasks matched {tasks_setting}")
    model, tokenizer, info = load_model(source, info)  # after the tasks: a typo must not cost a model load
    chat = templates.uses_chat_template(tokenizer, cfg.data.chat_template if cfg is not None else "auto")
    ctx = context_limit(model, cfg)
    budget = None if ctx is None else ctx - max_new_tokens
    if budget is not None and budget < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for the prompt in a context of {ctx} tokens")

    rendered = {t.name: render_prompts(t, shots, seed, tokenizer, chat, limit) for t in task_list}
    torch.manual_seed(seed)
    result_tasks, examples = {}, []
    total = sum(len(r) for r in rendered.values())
    with tqdm(total=total, desc=f"eval {name}", unit="ex", dynamic_ncols=True) as bar:
        for task in task_list:
            items = rendered[task.name]
            bar.set_postfix_str(task.name)
            ids = tokenizer([it["prompt"] for it in items], add_special_tokens=not chat)["input_ids"] if items else []
            ids = [it.get("prompt_ids") or p for it, p in zip(items, ids)]
            truncated = 0
            if budget is not None:  # as in training (truncate_prompt_left): keep the end of the prompt
                truncated = sum(len(p) > budget for p in ids)
                ids = [p[-budget:] for p in ids]
            preds = generate(model, tokenizer, ids, max_new_tokens, batch_size, progress=bar)
            refs = [it["references"] for it in items]
            scores = metrics.score_predictions(preds, refs)
            cased = [exact_match_cased(p, r) for p, r in zip(preds, refs)]
            n = len(preds)
            result_tasks[task.name] = {
                "exact_match": scores["exact_match"], "rougeL": scores["rougeL"],
                "exact_match_cased": 100.0 * sum(cased) / n, "n": n, "truncated": truncated,
            }
            for it, p, em, rl, ec in zip(items, preds, scores["per_example"]["exact_match"],
                                         scores["per_example"]["rougeL"], cased):
                examples.append({"task": task.name, "index": it["index"], "prompt": it["prompt"], "prediction": p,
                                 "references": it["references"], "exact_match": 100.0 * em, "rougeL": 100.0 * rl,
                                 "exact_match_cased": 100.0 * ec})

    k = len(result_tasks)
    mean = {m: sum(s[m] for s in result_tasks.values()) / k for m in ("exact_match", "rougeL", "exact_match_cased")}
    mean.update(tasks=k, n=sum(s["n"] for s in result_tasks.values()))
    result = {
        "name": name,
        "model": info["path"],
        "checkpoint": info["checkpoint"],
        "step": info["step"],
        "chat": chat,
        "settings": {"shots": shots, "max_new_tokens": max_new_tokens, "limit": limit, "batch_size": batch_size,
                     "tasks": tasks_setting},
        "tasks": result_tasks,
        "mean": mean,
        "examples": examples,
    }
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")
    _atomic_write(json_path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    _atomic_write(md_path, markdown(result))
    logged = log_to_wandb(info, result) if wandb else False
    return {**result, "files": {"json": json_path, "markdown": md_path}, "wandb": logged}


def _eval_section(tasks) -> EvalConfig | None:
    """A YAML tasks config's eval section: the defaults for a model folder (which has no run config)."""
    if isinstance(tasks, str):
        path = os.path.expanduser(tasks.strip())
        if path.endswith((".yaml", ".yml")) and os.path.isfile(path):
            return load_config(path).eval
    return None


# --------------------------------------------------------------------------- CLI glue (wired up in ift/cli.py)


def add_eval_args(sp) -> None:
    sp.add_argument("source", metavar="RUN_DIR_OR_MODEL",
                    help="run directory (newest complete checkpoint), checkpoint folder, or local HF model folder")
    sp.add_argument("--tasks", help="task files (path, directory or glob; one task per file), builtin:heldout | "
                    "builtin:train | builtin:<task>, or a YAML config whose eval.tasks to use; comma-separated for "
                    "several (default: the run config's eval.tasks)")
    sp.add_argument("--shots", help="positive examples in the prompt (e.g. 0 or 2; default: the run's eval.shots); "
                    "comma-separated for several evaluations in one process, e.g. 0,2")
    sp.add_argument("--max-new-tokens", type=int, help="tokens to generate per example (default: eval.max_new_tokens)")
    sp.add_argument("--limit", type=int, help="first N examples of each task (default: eval.limit, all)")
    sp.add_argument("--batch-size", type=int, help="prompts per generate call (default: eval.batch_size)")
    sp.add_argument("--out", help="folder for <name>.json and <name>.md (default: <run dir>/eval; "
                    "required for a model folder)")
    sp.add_argument("--name", help="result name (default: from --tasks and --shots, e.g. eval_0shot)")
    sp.add_argument("--no-wandb", action="store_true", help="do not log the scores to the run's W&B run")


def _shots_list(value: str | None) -> list[int | None]:
    if value is None:
        return [None]
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise UserError(f"--shots: expected a number or a comma-separated list like 0,2, got {value!r}") from None


def cmd_eval(args, extras=None) -> dict:
    if extras:
        raise UserError(f"unrecognized argument(s): {' '.join(extras)}")
    shots_list = _shots_list(args.shots)
    if len(shots_list) > 1 and args.name:
        raise UserError("--name names one evaluation: leave it out with several --shots values")
    for shots in shots_list:
        result = evaluate(args.source, tasks=args.tasks, shots=shots, max_new_tokens=args.max_new_tokens,
                          limit=args.limit, batch_size=args.batch_size, out=args.out, name=args.name,
                          wandb=not args.no_wandb)
        _print_result(result)
    return result


def _print_result(result: dict) -> None:
    width = max(12, *(len(t) for t in result["tasks"]))
    print(f"{'task':<{width}}  {'n':>5}  {'EM':>6}  {'ROUGE-L':>7}  {'EM(cased)':>9}")
    for t, s in result["tasks"].items():
        print(f"{t:<{width}}  {s['n']:>5}  {s['exact_match']:>6.1f}  {s['rougeL']:>7.1f}  {s['exact_match_cased']:>9.1f}")
    m = result["mean"]
    print(f"{'mean':<{width}}  {m['n']:>5}  {m['exact_match']:>6.1f}  {m['rougeL']:>7.1f}  {m['exact_match_cased']:>9.1f}"
          f"  ({m['tasks']} tasks)")
    print(f"wrote {result['files']['json']} and {result['files']['markdown']}"
          + (" (logged to W&B)" if result.get("wandb") else ""))
