"""`ift eval RUN --harness mmlu,arc_easy,...`: standard benchmarks through lm-evaluation-harness.

The model is the one `ift eval` generates with (a run's newest checkpoint consolidated, or a model
folder), handed to the harness's Hugging Face model class (`lm_eval.models.huggingface.HFLM`) in
memory. Results go to `<run dir>/eval/harness.json` (read by `ift compare`) and to the run's W&B run
as `harness/<task>/<metric>`. lm-eval is an optional extra: `pip install 'ift[harness]'`.
"""

from __future__ import annotations

import json
import logging
import os

from ift import atomic, rundir
from ift.errors import UserError

log = logging.getLogger(__name__)

HARNESS_FILE = "harness.json"


def run_harness(
    source: str,
    tasks: str,
    include: str | None = None,
    limit: int | None = None,
    shots: int | None = None,
    batch_size: int | None = None,
    out: str | None = None,
    wandb: bool = True,
) -> dict:
    """Run the harness `tasks` (comma-separated names; `include`: a folder of extra task YAMLs) and
    write `<out>/harness.json` (out defaults to `<run dir>/eval`); returns it plus "files"."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--harness needs lm-evaluation-harness: pip install 'ift[harness]' (or lm-eval)") from None
    from ift.eval.generate import load_model, locate

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UserError("--harness: no task names given (e.g. --harness mmlu,arc_easy)")
    if include is not None and not os.path.isdir(os.path.expanduser(include)):
        raise UserError(f"--harness-include {include}: not a folder")
    info = locate(source)
    if info["kind"] == "hf" and out is None:
        raise UserError(f"{source} is a model folder, not a run: --out DIR is required (where to write the results)")
    manager = TaskManager(include_path=os.path.expanduser(include) if include else None)
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"--harness: unknown lm-eval task(s) {', '.join(unknown)} "
            "(a local task: its YAML folder with --harness-include)"
        )
    model, tokenizer, info = load_model(source, info)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size or 8, device=str(model.device))
    raw = lm_eval.simple_evaluate(
        model=lm, tasks=names, task_manager=manager, num_fewshot=shots, limit=limit, log_samples=False
    )
    result = {
        "model": os.path.abspath(os.path.expanduser(source)),
        "checkpoint": info["checkpoint"],
        "step": info["step"],
        "tasks": scores_of(raw["results"]),
        "settings": {"tasks": names, "shots": shots, "limit": limit, "include": include},
        "n_samples": raw.get("n-samples", {}),
        "versions": raw.get("versions", {}),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }
    out_dir = os.path.abspath(os.path.expanduser(out)) if out else rundir.RunDir(info["run_dir"]).eval
    path = os.path.join(out_dir, HARNESS_FILE)
    atomic.write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    logged = log_to_wandb(info, result) if wandb else False
    return {**result, "files": {"json": path}, "wandb": logged}


def scores_of(results: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} of lm-eval's `results` ("acc,none" -> "acc"; stderrs and labels left out)."""
    out = {}
    for task, entry in results.items():
        scores = {}
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            scores[metric if filt == "none" else f"{metric}/{filt}"] = float(value)
        out[task] = scores
    return out


def log_to_wandb(info: dict, result: dict) -> bool:
    """`harness/<task>/<metric>` into the run's own W&B run (ift.eval.results.log_to_wandb's way)."""
    from ift.eval.results import log_metrics_to_run

    flat = {f"{task}/{metric}": v for task, scores in result["tasks"].items() for metric, v in scores.items()}
    return log_metrics_to_run(info, "harness", flat)
