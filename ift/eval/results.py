"""An evaluation's outputs besides its JSON: the markdown page, and the scores logged into the
run's own W&B run (same id, resumed, on its own step axis)."""

from __future__ import annotations

import logging

from ift import rundir

log = logging.getLogger(__name__)

SCORES = ("exact_match", "rougeL", "exact_match_cased")


def markdown(result: dict) -> str:
    s = result["settings"]
    tasks = s["tasks"] if isinstance(s["tasks"], str) else ", ".join(map(str, s["tasks"]))
    checkpoint = f" (checkpoint `{result['checkpoint']}`)" if result.get("checkpoint") else ""
    lines = [
        f"# Evaluation `{result['name']}`",
        "",
        f"- model: `{result['model']}`" + checkpoint,
        f"- tasks: {tasks}",
        f"- shots: {s['shots']}, max_new_tokens: {s['max_new_tokens']}, limit: {s['limit']}, "
        f"batch_size: {s['batch_size']}, chat template: {'yes' if result.get('chat') else 'no'}",
        "",
        "Scores x100. Exact match and ROUGE-L follow Super-NaturalInstructions (lower-cased, max over "
        "references); EM (cased) keeps case. Mean = mean over tasks.",
        "",
        "| task | n | exact match | ROUGE-L | EM (cased) |",
        "|---|---:|---:|---:|---:|",
    ]
    for t, sc in result["tasks"].items():
        lines.append(
            f"| {t} | {sc['n']} | {sc['exact_match']:.1f} | {sc['rougeL']:.1f} | {sc['exact_match_cased']:.1f} |"
        )
    m = result["mean"]
    lines.append(
        f"| **mean** ({m['tasks']} tasks) | {m['n']} | **{m['exact_match']:.1f}** | **{m['rougeL']:.1f}** | "
        f"{m['exact_match_cased']:.1f} |"
    )
    cut = sum(sc.get("truncated", 0) for sc in result["tasks"].values())
    if cut:
        lines += [
            "",
            f"{cut} prompt(s) were longer than the context allows and kept only their end "
            "(left truncation, as in training); see `truncated` per task in the JSON.",
        ]
    return "\n".join(lines) + "\n"


def log_to_wandb(info: dict, result: dict) -> bool:
    """Log mean and per-task scores into the run's own W&B run (same id, resumed); True if logged."""
    name = result["name"]
    metrics_ = {f"{name}/mean/{k}": result["mean"][k] for k in SCORES}
    for t, sc in result["tasks"].items():
        metrics_.update({f"{name}/{t}/{k}": sc[k] for k in SCORES})
    return log_metrics_to_run(info, "eval", metrics_)


def log_metrics_to_run(info: dict, prefix: str, metrics_: dict) -> bool:
    """`<prefix>/<key>` metrics into the run's W&B run at the checkpoint's step; False without one."""
    cfg, run_dir = info.get("cfg"), info.get("run_dir")
    if cfg is None or run_dir is None or cfg.tracking.wandb.mode == "disabled":
        return False
    run_id = rundir.RunDir(run_dir).read_wandb_id()
    if not run_id:
        return False
    w = cfg.tracking.wandb
    try:
        import wandb

        run = wandb.init(id=run_id, resume="allow", mode=w.mode, dir=run_dir, project=w.project, entity=w.entity)
        try:
            # Its own step axis: the run's step counter is already past the checkpoint's step.
            run.define_metric(f"{prefix}/step")
            run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
            run.log({f"{prefix}/step": info.get("step") or 0, **{f"{prefix}/{k}": v for k, v in metrics_.items()}})
        finally:
            run.finish()
    except Exception as e:  # noqa: BLE001 - the results are on disk; W&B trouble must not lose them
        log.warning("could not log the evaluation to W&B run %s: %s", run_id, e)
        return False
    return True
