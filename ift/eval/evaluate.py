"""`ift eval`: greedy generation on (held-out) tasks, scored with the Super-NaturalInstructions metrics.

The model is a run directory (its newest complete checkpoint), a checkpoint folder, or any local
Hugging Face causal-LM folder (ift.eval.generate). Prompts are rendered with the training templates
and tokenized exactly as in training (ift.eval.tasks); generation is greedy, batched with left padding,
and stops at EOS. Results go to `<run dir>/eval/<name>.json` (read by `ift compare`) and `<name>.md`,
and to the run's W&B run.

Scores are x100 everywhere in the output, per task and per example: `exact_match` and `rougeL` are the
headline SNI metrics (max over references; SNI normalization lower-cases); `exact_match_cased` is the
same exact match without lower-casing, for case-sensitive tasks (uppercase_word, lowercase_word) where
copying the input would otherwise score 100. `mean` is the mean over tasks.
"""
from __future__ import annotations

import json
import logging
import os

from ift import atomic, rundir
from ift.config import Config, EvalConfig
from ift.data import templates
from ift.errors import UserError
from ift.eval import metrics
from ift.eval.generate import context_limit, generate, load_model, locate
from ift.eval.tasks import EVAL_SEED_OFFSET, eval_section, render_prompts, resolve_tasks

log = logging.getLogger(__name__)

SCORES = ("exact_match", "rougeL", "exact_match_cased")


def exact_match_cased(prediction: str, references) -> float:
    return metrics.exact_match(prediction, references, lower=False)


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
    plain = not rundir.is_run_or_checkpoint(path)
    if plain and tasks is None:
        raise UserError(f"{source} is a model folder, not a run: --tasks is required "
                        "(e.g. --tasks builtin:heldout or --tasks 'data/sni/eval/*.jsonl')")
    if plain and out is None:
        raise UserError(f"{source} is a model folder, not a run: --out DIR is required (where to write the results)")

    info = locate(source)
    cfg: Config | None = info["cfg"]
    sources, data_cfg, base, tasks_setting = resolve_tasks(tasks, cfg)
    defaults = cfg.eval if cfg is not None else eval_section(tasks) or EvalConfig()
    shots = defaults.shots if shots is None else shots
    max_new_tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
    limit = defaults.limit if limit is None else limit
    batch_size = defaults.batch_size if batch_size is None else batch_size
    for flag, value, ok in (("--shots", shots, shots >= 0),
                            ("--max-new-tokens", max_new_tokens, max_new_tokens > 0),
                            ("--limit", limit, limit is None or limit > 0),
                            ("--batch-size", batch_size, batch_size > 0)):
        if not ok:
            raise UserError(f"{flag} must be {'>= 0' if flag == '--shots' else '> 0'}, got {value}")
    name = name or f"{base}_{shots}shot"
    if "/" in name or name in (".", ".."):
        raise UserError(f"--name must be a plain file name, got {name!r}")
    out_dir = os.path.abspath(os.path.expanduser(out)) if out else rundir.RunDir(info["run_dir"]).eval

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
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for the prompt in a context of "
                        f"{ctx} tokens")

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
    mean = {m: sum(s[m] for s in result_tasks.values()) / k for m in SCORES}
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
    atomic.write_text(json_path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    atomic.write_text(md_path, markdown(result))
    logged = log_to_wandb(info, result) if wandb else False
    return {**result, "files": {"json": json_path, "markdown": md_path}, "wandb": logged}


# --------------------------------------------------------------------------- outputs


def markdown(result: dict) -> str:
    s = result["settings"]
    tasks = s["tasks"] if isinstance(s["tasks"], str) else ", ".join(map(str, s["tasks"]))
    checkpoint = f" (checkpoint `{result['checkpoint']}`)" if result.get("checkpoint") else ""
    lines = [f"# Evaluation `{result['name']}`", "",
             f"- model: `{result['model']}`" + checkpoint,
             f"- tasks: {tasks}",
             f"- shots: {s['shots']}, max_new_tokens: {s['max_new_tokens']}, limit: {s['limit']}, "
             f"batch_size: {s['batch_size']}, chat template: {'yes' if result.get('chat') else 'no'}",
             "", "Scores x100. Exact match and ROUGE-L follow Super-NaturalInstructions (lower-cased, max over "
             "references); EM (cased) keeps case. Mean = mean over tasks.", "",
             "| task | n | exact match | ROUGE-L | EM (cased) |", "|---|---:|---:|---:|---:|"]
    for t, sc in result["tasks"].items():
        lines.append(f"| {t} | {sc['n']} | {sc['exact_match']:.1f} | {sc['rougeL']:.1f} | "
                     f"{sc['exact_match_cased']:.1f} |")
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
    cfg, run_dir = info.get("cfg"), info.get("run_dir")
    if cfg is None or run_dir is None or cfg.tracking.wandb.mode == "disabled":
        return False
    run_id = rundir.RunDir(run_dir).read_wandb_id()
    if not run_id:
        return False
    w = cfg.tracking.wandb
    name = result["name"]
    metrics_ = {f"eval/{name}/mean/{k}": result["mean"][k] for k in SCORES}
    for t, sc in result["tasks"].items():
        metrics_.update({f"eval/{name}/{t}/{k}": sc[k] for k in SCORES})
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
