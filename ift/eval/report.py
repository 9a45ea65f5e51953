"""`ift compare`: compare evaluation results of several runs (e.g. single-task FT vs multi-task IFT).

Per run dir it reads `mixture.json` (tasks trained on), `config.yaml` (run.name), one or more
`eval/<name>.json` (e.g. zero-shot and few-shot) and the held-out losses of `metrics.jsonl`, and writes
COMPARISON.md, comparison.json (every number of the report, for tools), comparison.png (group means per
evaluation), comparison_tasks.png, heldout_loss.png and, for an adaptive mixture, mixture.png (its task
rates over steps beside the tasks' losses; drawn by ift.eval.plots) into an output folder.
Unusable input raises UserError with a one-line message.
"""

from __future__ import annotations

import json
import os

import yaml

from ift.errors import UserError
from ift.eval import plots, report_markdown
from ift.eval.findings import HELD_OUT, OTHER, OWN, findings_for, group_means
from ift.eval.harness import HARNESS_FILE
from ift.rundir import RunDir

# ---------------------------------------------------------------- loading


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None


def _pick_eval_file(run_dir: str, eval_name: str | None) -> str:
    eval_dir = RunDir(run_dir).eval
    if eval_name is not None:
        path = os.path.join(eval_dir, eval_name if eval_name.endswith(".json") else eval_name + ".json")
        if not os.path.isfile(path):
            raise UserError(f"run {run_dir}: no evaluation named '{eval_name}' ({path} not found)")
        return path
    files = (
        sorted(os.path.join(eval_dir, f) for f in os.listdir(eval_dir) if f.endswith(".json") and f != HARNESS_FILE)
        if os.path.isdir(eval_dir)
        else []
    )
    if not files:
        raise UserError(f"run {run_dir} has no evaluation results (no {eval_dir}/*.json): run `ift eval` on it first")
    return max(files, key=lambda p: (os.path.getmtime(p), p))  # newest


def _trained_tasks(mixture: dict, path: str) -> list[str]:
    tasks = mixture.get("tasks")
    if not isinstance(tasks, dict):
        raise UserError(f"{path}: expected a 'tasks' mapping")
    # A task with sampling rate 0 is in the config but never trained on.
    return sorted(t for t, info in tasks.items() if not isinstance(info, dict) or info.get("rate", 1) > 0)


def load_run(run_dir: str, eval_name: str | None = None) -> dict:
    """One run's name, trained-on tasks and chosen evaluation results."""
    if not os.path.isdir(run_dir):
        raise UserError(f"run directory not found: {run_dir}")
    run = RunDir(run_dir)
    mix_path = run.mixture
    if not os.path.isfile(mix_path):
        raise UserError(f"run {run_dir} has no mixture.json: cannot tell which tasks it was trained on")
    trained = _trained_tasks(_read_json(mix_path), mix_path)

    name = os.path.basename(os.path.abspath(run_dir))
    if os.path.isfile(run.config):
        with open(run.config) as f:
            cfg = yaml.safe_load(f) or {}
        name = str(((cfg.get("run") or {}).get("name")) or name)

    eval_path = _pick_eval_file(run_dir, eval_name)
    ev = _read_json(eval_path)
    if not isinstance(ev.get("tasks"), dict) or not ev["tasks"]:
        raise UserError(f"{eval_path} has no per-task results ('tasks')")
    return {
        "name": name,
        "dir": run_dir,
        "trained": trained,
        "eval_file": eval_path,
        "eval_name": ev.get("name", os.path.basename(eval_path)[:-5]),
        "model": ev.get("model"),
        "settings": ev.get("settings") or {},
        "scores": ev["tasks"],
    }


def _unique_names(runs: list[dict]) -> None:
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']} ({r['dir'].rstrip('/')})"


def heldout_losses(run: dict, held: list[str]) -> dict:
    """{step: mean eval/loss over the held-out tasks} from the run's metrics.jsonl (eval.every)."""
    return _heldout_mean(run, held, "eval/loss/")


def heldout_scores(run: dict, held: list[str]) -> dict:
    """{step: mean ROUGE-L over the held-out tasks} of the generation during training (eval.generate_every)."""
    return _heldout_mean(run, held, "eval/rougeL/")


def _heldout_mean(run: dict, held: list[str], prefix: str) -> dict:
    """{step: mean of `<prefix><task>` over the held-out tasks}, at the steps that have all of them."""
    if not held:
        return {}
    series = _metric_series(run["dir"], prefix)
    steps = set.intersection(*(set(series.get(t, {})) for t in held))
    return {s: sum(series[t][s] for t in held) / len(held) for s in sorted(steps)}


def load_harness(run_dir: str) -> dict | None:
    """The run's lm-evaluation-harness scores ({task: {metric: value}} of eval/harness.json), or None."""
    path = os.path.join(RunDir(run_dir).eval, HARNESS_FILE)
    if not os.path.isfile(path):
        return None
    tasks = _read_json(path).get("tasks")
    if not isinstance(tasks, dict):
        raise UserError(f"{path}: expected a 'tasks' mapping")
    return tasks


def _metric_series(run_dir: str, prefix: str) -> dict[str, dict[int, float]]:
    """{name: {step: value}} of the metrics.jsonl keys `<prefix><name>` (a resumed step's line wins)."""
    path, out = RunDir(run_dir).metrics, dict[str, dict[int, float]]()
    if not os.path.isfile(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            for k, v in m.items():
                if k.startswith(prefix) and v is not None:
                    out.setdefault(k[len(prefix) :], {})[int(m["step"])] = v
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def mixture_history(run: dict) -> dict | None:
    """An adaptive mixture's rates over steps (`mix/<task>`) and its per-task training loss, with the
    tasks that gained and lost weight between the first and the last update; None for fixed rates."""
    rates = _metric_series(run["dir"], "mix/")
    if not rates:
        return None
    steps = sorted(set().union(*(r.keys() for r in rates.values())))
    change = {t: r[steps[-1]] - r[steps[0]] for t, r in rates.items() if steps[0] in r and steps[-1] in r}
    order = sorted(change, key=lambda t: change[t])
    return {
        "steps": steps,
        "rates": rates,
        "loss": {t: v for t, v in _metric_series(run["dir"], "loss/").items() if t in rates},
        "gained": [t for t in reversed(order) if change[t] > 0][:5],
        "lost": [t for t in order if change[t] < 0][:5],
        "change": change,
    }


def _compare(runs: list[dict]) -> dict:
    """Groups, per-task status and findings for one evaluation of every run."""
    _unique_names(runs)
    trained_any = set().union(*(r["trained"] for r in runs))
    # Trained-on tasks first, then held-out ones, each by name.
    tasks = sorted(set().union(*(r["scores"] for r in runs)), key=lambda t: (t not in trained_any, t))
    status = {
        t: {r["name"]: OWN if t in r["trained"] else OTHER if t in trained_any else HELD_OUT for r in runs}
        for t in tasks
    }
    groups = {r["name"]: group_means(r, tasks, status) for r in runs}
    return {
        "name": runs[0]["eval_name"],
        "runs": runs,
        "tasks": tasks,
        "status": status,
        "groups": groups,
        "findings": findings_for(runs, tasks, status),
    }


def write_comparison(run_dirs: list[str], out_dir: str, eval_name: str | list[str] | None = None) -> dict:
    """Compare runs on one or more evaluations (the first is the main one); write COMPARISON.md,
    comparison.json, comparison.png, comparison_tasks.png and heldout_loss.png into out_dir.

    Returns the first evaluation's {"runs": [...], "tasks": [{"task", "status": {run: status},
    "scores": {run: {...} | None}}], "groups": {run: {group: {"rougeL", "exact_match", "tasks"}}},
    "findings": [str]}, with "evaluations" (the same for every evaluation), "heldout_loss"
    ({run: {step: loss}}) and "files". Raises UserError with a one-line message on unusable input.
    """
    if not run_dirs:
        raise UserError("no run directories given")
    names = eval_name if isinstance(eval_name, list) else [eval_name]
    evaluations = [_compare([load_run(d, n) for d in run_dirs]) for n in names]
    main = evaluations[0]
    runs, tasks, status = main["runs"], main["tasks"], main["status"]
    held = [t for t in tasks if status[t][runs[0]["name"]] == HELD_OUT]
    curves = {r["name"]: heldout_losses(r, held) for r in runs}

    os.makedirs(out_dir, exist_ok=True)
    files = {
        "markdown": os.path.join(out_dir, "COMPARISON.md"),
        "json": os.path.join(out_dir, "comparison.json"),
        "plot": os.path.join(out_dir, "comparison.png"),
        "plot_tasks": os.path.join(out_dir, "comparison_tasks.png"),
    }
    if any(curves.values()):
        files["plot_loss"] = os.path.join(out_dir, "heldout_loss.png")
        plots.plot_losses(runs, curves, held, files["plot_loss"])
    md = report_markdown.comparison(runs, tasks, status, main["groups"], main["findings"], title_eval=main["name"])
    for ev in evaluations[1:]:
        md += report_markdown.further_evaluation(ev)
    md += "\n![group means](comparison.png)\n\n![per task](comparison_tasks.png)\n"
    if "plot_loss" in files:
        md += "\n![held-out loss during training](heldout_loss.png)\n"
    mixtures = {r["name"]: m for r in runs if (m := mixture_history(r))}
    if mixtures:
        files["plot_mixture"] = os.path.join(out_dir, "mixture.png")
        plots.plot_mixtures(mixtures, files["plot_mixture"])
        md += "".join(report_markdown.mixture_section(n, m) for n, m in mixtures.items())
        md += "\n![task rates and losses over steps](mixture.png)\n"
    harness = {r["name"]: h for r in runs if (h := load_harness(r["dir"]))}
    if harness:
        md += report_markdown.harness_section(harness)
    if scores := {r["name"]: c for r in runs if (c := heldout_scores(r, held))}:
        files["plot_score"] = os.path.join(out_dir, "heldout_score.png")
        plots.plot_scores(runs, scores, held, files["plot_score"])
        md += "\n![held-out ROUGE-L during training](heldout_score.png)\n"
    with open(files["markdown"], "w") as f:
        f.write(md)
    plots.plot_groups(evaluations, files["plot"])
    own = {(t, r["name"]) for t in tasks for r in runs if status[t][r["name"]] == OWN}
    plots.plot_tasks(runs, tasks, own, held, files["plot_tasks"])

    def summary(ev: dict) -> dict:
        return {
            "name": ev["name"],
            "tasks": [
                {"task": t, "status": ev["status"][t], "scores": {r["name"]: r["scores"].get(t) for r in ev["runs"]}}
                for t in ev["tasks"]
            ],
            "groups": ev["groups"],
            "findings": ev["findings"],
        }

    result = {
        "runs": [
            {k: r[k] for k in ("name", "dir", "trained", "eval_file", "eval_name", "model", "settings")} for r in runs
        ],
        **{k: v for k, v in summary(main).items() if k != "name"},
        "evaluations": [summary(ev) for ev in evaluations],
        "heldout_loss": {"tasks": held, "runs": {n: {str(k): v for k, v in c.items()} for n, c in curves.items()}},
        "harness": harness,
        "heldout_score": {"tasks": held, "runs": {n: {str(k): v for k, v in c.items()} for n, c in scores.items()}},
        "mixture": {
            n: {
                "steps": m["steps"],
                "gained": m["gained"],
                "lost": m["lost"],
                "rates": {t: {str(k): v for k, v in r.items()} for t, r in m["rates"].items()},
            }
            for n, m in mixtures.items()
        },
    }
    with open(files["json"], "w") as f:
        json.dump(result, f, indent=1)
    return {**result, "files": files}
