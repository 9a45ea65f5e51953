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

import dataclasses
import json
import logging
import os
import time
from typing import Any

from ift import atomic, rundir
from ift.config import Config, EvalConfig
from ift.data import templates
from ift.data.heldout import EVAL_SEED_OFFSET
from ift.errors import UserError
from ift.eval import metrics
from ift.eval.generate import context_limit, eos_ids, generate_sharded, generate_vllm, load_model, locate
from ift.eval.results import SCORES, log_to_wandb, markdown
from ift.eval.tasks import eval_section, render_prompts, resolve_tasks

log = logging.getLogger(__name__)


def exact_match_cased(prediction: str, references) -> float:
    return metrics.exact_match(prediction, references, lower=False)


# --------------------------------------------------------------------------- evaluate


def evaluate(
    source: str,
    tasks=None,
    shots: int | None = None,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    out: str | None = None,
    name: str | None = None,
    wandb: bool = True,
    backend: str | None = None,
    bucket: bool = True,
) -> dict:
    """Evaluate a run directory, checkpoint or local HF model folder; write `<out>/<name>.json` and
    `.md` (out defaults to `<run dir>/eval`) and return the result (plus "files").

    Started by a launcher with several ranks (`ift eval --nproc-per-node N`, or srun), every rank
    generates its share of the batches and rank 0 scores and writes (ift.eval.generate.generate_sharded).
    bucket=False keeps the prompts in task order instead of batching them by length (the benchmark's
    baseline)."""
    from tqdm.auto import tqdm

    from ift.data.sources import load_tasks
    from ift.distributed import barrier, rank

    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise UserError(f"no such run directory, checkpoint or model folder: {source}")
    plain = not rundir.is_run_or_checkpoint(path)
    if plain and tasks is None:
        raise UserError(
            f"{source} is a model folder, not a run: --tasks is required "
            "(e.g. --tasks builtin:heldout or --tasks 'data/sni/eval/*.jsonl')"
        )
    if plain and out is None:
        raise UserError(f"{source} is a model folder, not a run: --out DIR is required (where to write the results)")

    info = locate(source)
    cfg: Config | None = info["cfg"]
    sources, data_cfg, base, tasks_setting = resolve_tasks(tasks, cfg)
    defaults = cfg.eval if cfg is not None else eval_section(tasks) or EvalConfig()
    flags: dict[str, Any] = {
        "shots": shots,
        "max_new_tokens": max_new_tokens,
        "limit": limit,
        "batch_size": batch_size,
        "backend": backend,
    }
    settings = dataclasses.replace(defaults, **{k: v for k, v in flags.items() if v is not None})
    settings.check("eval")  # the flags are eval.* settings: the same checks, the same messages
    shots, max_new_tokens, limit = settings.shots, settings.max_new_tokens, settings.limit
    batch_size, backend = settings.batch_size, settings.backend
    name = name or f"{base}_{shots}shot"
    if "/" in name or name in (".", ".."):
        raise UserError(f"--name must be a plain file name, got {name!r}")
    out_dir = os.path.abspath(os.path.expanduser(out)) if out else rundir.RunDir(info["run_dir"]).eval

    seed = (cfg.run.seed if cfg is not None else 0) + EVAL_SEED_OFFSET
    task_list = load_tasks(data_cfg, seed, sources=sources, section="eval.tasks" if tasks is None else "--tasks")
    for t in task_list:
        if not len(t):
            log.warning("task %s has no examples; skipped", t.name)
    task_list = [t for t in task_list if len(t)]
    if not task_list:
        raise UserError(f"no evaluation tasks matched {tasks_setting}")
    world = start_world()
    if backend == "vllm" and world > 1:
        raise UserError(
            "eval.backend vllm runs in one process (vLLM schedules the whole set itself): leave out --nproc-per-node"
        )
    if backend == "vllm" or world > 1:  # from a Hugging Face folder: one export for every rank (or vLLM)
        info = {**info, "kind": "hf", "path": exported_model(info)}
    # after the tasks: a typo must not cost a model load
    model, tokenizer, info = (load_tokenizer_only if backend == "vllm" else load_model)(source, info)
    chat = templates.uses_chat_template(tokenizer, cfg.data.chat_template if cfg is not None else "auto")
    items, truncated = build_prompts(
        task_list, tokenizer, chat, shots, seed, limit, budget=prompt_budget(model, cfg, max_new_tokens)
    )

    main = rank() == 0
    ids = [it["prompt_ids"] for it in items]
    barrier()  # the clock starts when every rank has its model
    began = time.perf_counter()
    with tqdm(total=len(items), desc=f"eval {name}", unit="ex", dynamic_ncols=True, disable=not main) as bar:
        if backend == "vllm":
            preds, counts = generate_vllm(info["path"], ids, max_new_tokens, eos_ids(model, tokenizer))
        else:
            preds, counts = generate_sharded(model, tokenizer, ids, max_new_tokens, batch_size, bar, bucket=bucket)
    seconds = max(time.perf_counter() - began, 1e-9)
    result_tasks, examples = score(task_list, items, preds, truncated)
    k = len(result_tasks)
    mean = {m: sum(s[m] for s in result_tasks.values()) / k for m in SCORES}
    mean.update(tasks=k, n=sum(s["n"] for s in result_tasks.values()))
    result = {
        "name": name,
        "model": path,
        "checkpoint": info["checkpoint"],
        "step": info["step"],
        "chat": chat,
        "settings": {
            "shots": shots,
            "max_new_tokens": max_new_tokens,
            "limit": limit,
            "batch_size": batch_size,
            "tasks": tasks_setting,
        },
        "tasks": result_tasks,
        "mean": mean,
        "speed": {
            "backend": backend,
            "processes": world,
            "seconds": seconds,
            "examples_per_s": counts["examples"] / seconds,
            "tokens_per_s": counts["generated_tokens"] / seconds,
            "generated_tokens": counts["generated_tokens"],
            "padding_frac": counts["padding_frac"],
            "decode_waste": 1 - counts["generated_tokens"] / max(counts["decode_slots"], 1),
        },
        "examples": examples,
    }
    if not main:
        return {**result, "files": None, "wandb": False}
    json_path = os.path.join(out_dir, f"{name}.json")
    md_path = os.path.join(out_dir, f"{name}.md")
    atomic.write_text(json_path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    atomic.write_text(md_path, markdown(result))
    logged = log_to_wandb(info, result) if wandb else False
    return {**result, "files": {"json": json_path, "markdown": md_path}, "wandb": logged}


def start_world() -> int:
    """The world of a launcher (torchrun's or Slurm's environment): its process group, started; 1 without one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1
    from ift.distributed import init_distributed, setup_environment

    setup_environment()
    return init_distributed()[1]


def exported_model(info: dict) -> str:
    """A Hugging Face folder of the model `info` names: a model folder itself, or for a checkpoint
    `<run>/eval/model` (exported once by rank 0, in the precision `ift eval` loads it in; replaced
    when another checkpoint is evaluated)."""
    if info["kind"] == "hf":
        return info["path"]
    from ift import export
    from ift.distributed import accelerator_available, main_process_first, rank

    folder = os.path.join(rundir.RunDir(info["run_dir"]).eval, "model")
    marker = os.path.join(folder, "ift_checkpoint.txt")
    with main_process_first():
        if rank() == 0:
            try:
                with open(marker) as f:
                    current = f.read().strip() == info["checkpoint"]
            except OSError:
                current = False
            if not current:
                export.write_hf_folder(info["checkpoint"], folder, "auto" if accelerator_available() else "fp32")
                atomic.write_text(marker, info["checkpoint"] + "\n")
    return folder


def load_tokenizer_only(source: str, info: dict):
    """(model config, tokenizer, info) for vLLM, which loads the weights itself."""
    from transformers import AutoConfig, GenerationConfig

    from ift.model import open_tokenizer

    config = AutoConfig.from_pretrained(info["path"], trust_remote_code=False)
    try:
        config.generation_config = GenerationConfig.from_pretrained(info["path"])
    except OSError:
        config.generation_config = None
    tokenizer = open_tokenizer(info["path"])
    return config, tokenizer, info


def prompt_budget(model, cfg: Config | None, max_new_tokens: int) -> int | None:
    """Prompt tokens that leave room for the answer in the model's (and the run's) context."""
    ctx = context_limit(model, cfg)
    budget = None if ctx is None else ctx - max_new_tokens
    if budget is not None and budget < 1:
        raise UserError(
            f"--max-new-tokens {max_new_tokens} leaves no room for the prompt in a context of {ctx} tokens"
        )
    return budget


def build_prompts(
    task_list, tokenizer, chat: bool, shots: int, seed: int, limit: int | None, budget: int | None
) -> tuple[list[dict], dict[str, int]]:
    """Every task's prompts, rendered and tokenized as in training: [{task, index, prompt, prompt_ids,
    references}], and per task how many were cut to `budget` (keeping their end, as in training)."""
    items, truncated = [], {}
    for task in task_list:
        rendered = render_prompts(task, shots, seed, tokenizer, chat, limit)
        ids = tokenizer([r["prompt"] for r in rendered], add_special_tokens=not chat)["input_ids"] if rendered else []
        ids = [r.get("prompt_ids") or p for r, p in zip(rendered, ids)]
        truncated[task.name] = 0 if budget is None else sum(len(p) > budget for p in ids)
        for r, p in zip(rendered, ids):
            items.append({**r, "task": task.name, "prompt_ids": p if budget is None else p[-budget:]})
    return items, truncated


def score(task_list, items: list[dict], preds: list[str], truncated: dict[str, int]) -> tuple[dict, list[dict]]:
    """(per-task scores, per-example records) of the predictions for `items`."""
    result_tasks, examples = {}, []
    by_task: dict[str, list[tuple[dict, str]]] = {}
    for it, p in zip(items, preds):
        by_task.setdefault(it["task"], []).append((it, p))
    for task in task_list:
        mine = by_task.get(task.name)
        if not mine:
            continue
        refs = [it["references"] for it, _ in mine]
        scores = metrics.score_predictions([p for _, p in mine], refs)
        cased = [exact_match_cased(p, r) for (_, p), r in zip(mine, refs)]
        n = len(mine)
        result_tasks[task.name] = {
            "exact_match": scores["exact_match"],
            "rougeL": scores["rougeL"],
            "exact_match_cased": 100.0 * sum(cased) / n,
            "n": n,
            "truncated": truncated.get(task.name, 0),
        }
        for (it, p), em, rl, ec in zip(
            mine, scores["per_example"]["exact_match"], scores["per_example"]["rougeL"], cased
        ):
            examples.append(
                {
                    "task": task.name,
                    "index": it["index"],
                    "prompt": it["prompt"],
                    "prediction": p,
                    "references": it["references"],
                    "exact_match": 100.0 * em,
                    "rougeL": 100.0 * rl,
                    "exact_match_cased": 100.0 * ec,
                }
            )
    return result_tasks, examples


def generation_prompts(cfg: Config, tokenizer, model) -> tuple[list, list[dict]]:
    """(tasks, prompts) of eval.tasks for the held-out generation during training (eval.generate_every)."""
    from ift.data.sources import load_tasks

    seed = cfg.run.seed + EVAL_SEED_OFFSET
    e = cfg.eval
    task_list = [t for t in load_tasks(cfg.data, seed, sources=e.tasks, section="eval.tasks") if len(t)]
    chat = templates.uses_chat_template(tokenizer, cfg.data.chat_template)
    items, _ = build_prompts(
        task_list, tokenizer, chat, e.shots, seed, e.limit, prompt_budget(model, cfg, e.max_new_tokens)
    )
    return task_list, items


def generation_scores(model, tokenizer, task_list, items: list[dict], e: EvalConfig, synced: bool, device) -> dict:
    """`eval/rougeL/<task>`, `eval/exact_match/<task>` and their means over tasks, generated on every rank."""
    was_training = model.training
    model.eval()
    preds, _ = generate_sharded(
        model,
        tokenizer,
        [it["prompt_ids"] for it in items],
        e.max_new_tokens,
        e.batch_size,
        synced=synced,
        device=device,
    )
    model.train(was_training)
    per_task, _ = score(task_list, items, preds, {})
    out = {}
    for m in ("rougeL", "exact_match"):
        out[f"eval/{m}"] = sum(s[m] for s in per_task.values()) / max(len(per_task), 1)
        out.update({f"eval/{m}/{t}": s[m] for t, s in per_task.items()})
    return out
