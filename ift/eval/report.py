"""`ift compare`: compare evaluation results of several runs (e.g. single-task FT vs multi-task IFT).

Per run dir it reads `mixture.json` (tasks trained on), `config.yaml` (run.name), one or more
`eval/<name>.json` (e.g. zero-shot and few-shot) and the held-out losses of `metrics.jsonl`, and writes
COMPARISON.md, comparison.json (every number of the report, for tools), comparison.png (group means per
evaluation), comparison_tasks.png and heldout_loss.png into an output folder.
"""
from __future__ import annotations

import json
import os

import yaml

OWN, OTHER, HELD_OUT = "own", "seen by other run", "held-out"
GROUPS = (OWN, OTHER, HELD_OUT)
TIE = 1.0  # ROUGE-L points: smaller differences are called a tie in the findings


# ---------------------------------------------------------------- loading

def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def _pick_eval_file(run_dir: str, eval_name: str | None) -> str:
    eval_dir = os.path.join(run_dir, "eval")
    if eval_name is not None:
        path = os.path.join(eval_dir, eval_name if eval_name.endswith(".json") else eval_name + ".json")
        if not os.path.isfile(path):
            raise ValueError(f"run {run_dir}: no evaluation named '{eval_name}' ({path} not found)")
        return path
    files = sorted(os.path.join(eval_dir, f) for f in os.listdir(eval_dir) if f.endswith(".json")) \
        if os.path.isdir(eval_dir) else []
    if not files:
        raise ValueError(f"run {run_dir} has no evaluation results (no {eval_dir}/*.json): run `ift eval` on it first")
    return max(files, key=lambda p: (os.path.getmtime(p), p))  # newest


def _trained_tasks(mixture: dict, path: str) -> list[str]:
    tasks = mixture.get("tasks")
    if not isinstance(tasks, dict):
        raise ValueError(f"{path}: expected a 'tasks' mapping")
    # A task with sampling rate 0 is in the config but never trained on.
    return sorted(t for t, info in tasks.items() if not isinstance(info, dict) or info.get("rate", 1) > 0)


def load_run(run_dir: str, eval_name: str | None = None) -> dict:
    """One run's name, trained-on tasks and chosen evaluation results."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"run directory not found: {run_dir}")
    mix_path = os.path.join(run_dir, "mixture.json")
    if not os.path.isfile(mix_path):
        raise ValueError(f"run {run_dir} has no mixture.json: cannot tell which tasks it was trained on")
    trained = _trained_tasks(_read_json(mix_path), mix_path)

    name = os.path.basename(os.path.abspath(run_dir))
    cfg_path = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            cfg = yaml.safe_load(f) or {}
        name = str(((cfg.get("run") or {}).get("name")) or name)

    eval_path = _pick_eval_file(run_dir, eval_name)
    ev = _read_json(eval_path)
    if not isinstance(ev.get("tasks"), dict) or not ev["tasks"]:
        raise ValueError(f"{eval_path} has no per-task results ('tasks')")
    return {"name": name, "dir": run_dir, "trained": trained, "eval_file": eval_path,
            "eval_name": ev.get("name", os.path.basename(eval_path)[:-5]),
            "model": ev.get("model"), "settings": ev.get("settings") or {}, "scores": ev["tasks"]}


def _unique_names(runs: list[dict]) -> None:
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']} ({r['dir'].rstrip('/')})"


# ---------------------------------------------------------------- numbers

def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _group_means(run: dict, tasks: list[str], status: dict) -> dict:
    out = {}
    for g in (*GROUPS, "all"):
        ts = [t for t in tasks if t in run["scores"] and (g == "all" or status[t][run["name"]] == g)]
        out[g] = {"rougeL": _mean(run["scores"][t]["rougeL"] for t in ts),
                  "exact_match": _mean(run["scores"][t]["exact_match"] for t in ts),
                  "tasks": len(ts)}
    return out


def _fmt(x, digits=1):
    return "–" if x is None else f"{x:.{digits}f}"


def _task_list(ts: list[str], limit: int = 3) -> str:
    return ", ".join(ts) if len(ts) <= limit else f"{', '.join(ts[:limit])}, … ({len(ts)} tasks)"


# ---------------------------------------------------------------- findings (generated from the numbers)

def _held_out_findings(runs, tasks, status) -> list[str]:
    held = [t for t in tasks if status[t][runs[0]["name"]] == HELD_OUT and all(t in r["scores"] for r in runs)]
    if not held:
        return ["No held-out task (in no compared run's mixture) was evaluated by every run, so these results say "
                "nothing about generalization to unseen tasks."]
    means = {r["name"]: (_mean(r["scores"][t]["rougeL"] for t in held),
                         _mean(r["scores"][t]["exact_match"] for t in held)) for r in runs}
    ranked = sorted(means, key=lambda n: means[n][0], reverse=True)
    what = f"the {len(held)} held-out task{'s' if len(held) > 1 else ''}"
    if len(runs) == 1:
        return [f"On {what}, {ranked[0]} scores ROUGE-L {_fmt(means[ranked[0]][0])} (EM {_fmt(means[ranked[0]][1])})."]
    best, second = ranked[0], ranked[1]
    d = means[best][0] - means[second][0]
    wins = sum(next(r for r in runs if r["name"] == best)["scores"][t]["rougeL"] >
               next(r for r in runs if r["name"] == second)["scores"][t]["rougeL"] for t in held)
    listing = ", ".join(f"{n} {_fmt(means[n][0])}" for n in ranked)
    if d < TIE:
        s = (f"On {what}, the runs are within {d:.1f} ROUGE-L points of each other ({listing}): too close to call "
             f"a winner (threshold {TIE:.0f} point).")
    else:
        s = (f"On {what}, {best} generalizes best: ROUGE-L {_fmt(means[best][0])} vs {_fmt(means[second][0])} for "
             f"{second} (+{d:.1f} points), higher on {wins} of {len(held)} tasks.")
        if len(runs) > 2:
            s += f" All runs: {listing}."
    em_d = means[best][1] - means[second][1]
    if d >= TIE and em_d < 0:
        s += (f" Exact match disagrees: {second} has the higher EM ({_fmt(means[second][1])} vs "
              f"{_fmt(means[best][1])}).")
    else:
        s += f" Exact match: {best} {_fmt(means[best][1])} vs {second} {_fmt(means[second][1])}."
    return [s]


def _own_task_findings(runs, tasks) -> list[str]:
    out, said = [], set()
    for a in runs:
        others = [b for b in runs if b is not a]
        own = [t for t in tasks if t in a["trained"] and t in a["scores"]]
        if not others:
            break
        if not a["trained"]:  # e.g. an untrained baseline
            continue
        if not own:
            out.append(f"None of the {len(a['trained'])} tasks {a['name']} trained on was evaluated.")
            continue
        for b in others:
            common = [t for t in own if t in b["scores"]]
            key = (frozenset((a["name"], b["name"])), tuple(common))
            if not common or key in said:  # both trained on the same tasks: one sentence is enough
                continue
            said.add(key)
            ma = _mean(a["scores"][t]["rougeL"] for t in common)
            mb = _mean(b["scores"][t]["rougeL"] for t in common)
            b_trained = [t for t in common if t in b["trained"]]
            if len(common) == 1:
                where = (f"{common[0]}, the only task {a['name']} trained on" if len(a["trained"]) == 1 else
                         f"{common[0]}, one of the {len(a['trained'])} tasks {a['name']} trained on")
                b_note = "also trained on it" if b_trained else "did not train on it"
            else:
                where = (f"{len(common)} of the {len(a['trained'])} tasks {a['name']} trained on "
                         "(those both runs were evaluated on)")
                b_note = (f"trained on {len(b_trained)} of them" if b_trained else "trained on none of them")
            d = ma - mb
            if abs(d) < TIE:
                verdict = f"a tie (difference {d:+.1f} points)"
            elif d > 0:
                verdict = f"{a['name']} is ahead by {d:.1f} points"
            else:
                verdict = f"{b['name']} is ahead by {-d:.1f} points, so {a['name']} does not win on its own task" + \
                          ("s" if len(common) > 1 else "")
            out.append(f"On {where}, {a['name']} scores ROUGE-L {_fmt(ma)} and {b['name']} ({b_note}) {_fmt(mb)}: "
                       f"{verdict}.")
    return out


def _caveats(runs, tasks) -> list[str]:
    out = []
    missing = [t for t in tasks if not all(t in r["scores"] for r in runs)]
    if missing:
        out.append(f"{len(missing)} task(s) were not evaluated by every run ({_task_list(missing)}); "
                   "head-to-head findings use only tasks evaluated for the runs compared.")
    if len({json.dumps(r["settings"], sort_keys=True) for r in runs}) > 1:
        out.append("The runs were evaluated with different settings (see the runs table), so part of any difference "
                   "may come from the evaluation, not the training.")
    for t in tasks:
        ns = {r["scores"][t].get("n") for r in runs if t in r["scores"]}
        if len(ns) > 1:
            out.append(f"Task {t} was scored on different numbers of examples across runs ({sorted(ns, key=str)}).")
    return out


# ---------------------------------------------------------------- outputs

def _markdown(runs, tasks, status, groups, findings, title_eval: str = "") -> str:
    names = [r["name"] for r in runs]
    lines = ["# Fine-tuning comparison", "",
             "Scores are x100: **ROUGE-L / exact match**, the Super-NaturalInstructions metrics (max over references, "
             "mean over examples; group means are means over tasks).", "", "## Runs", "",
             "| run | dir | trained on | evaluation | model | settings |", "|---|---|---|---|---|---|"]
    for r in runs:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(r["settings"].items())) or "–"
        trained = f"{len(r['trained'])}: {_task_list(r['trained'])}" if r["trained"] else "nothing"
        lines.append(f"| {r['name']} | `{r['dir']}` | {trained} | "
                     f"{r['eval_name']} (`{os.path.basename(r['eval_file'])}`) | {r['model'] or '–'} | {settings} |")
    lines += ["", f"## What the numbers show ({title_eval})", ""] + [f"- {s}" for s in findings]
    lines += ["", f"## Means per task group ({title_eval})", "",
              f"Status per run: `{OWN}` = in that run's mixture; `{OTHER}` = in another compared run's mixture but not "
              f"this one's; `{HELD_OUT}` = in no compared run's mixture. The {OWN} and {OTHER} groups hold different "
              f"tasks for different runs; {HELD_OUT} tasks are the same for all runs. (k) = number of tasks.", "",
              *_group_table(names, groups)]
    lines += ["", f"## Per task ({title_eval})", "", "| task | n | " + " | ".join(names) + " |",
              "|---" * (len(names) + 2) + "|"]
    for t in tasks:
        ns = sorted({str(r["scores"][t].get("n", "?")) for r in runs if t in r["scores"]})
        cells = []
        for r in runs:
            s = r["scores"].get(t)
            score = f"{_fmt(s['rougeL'])} / {_fmt(s['exact_match'])}" if s else "not evaluated"
            cells.append(f"{score} ({status[t][r['name']]})")
        lines.append(f"| {t} | {'/'.join(ns)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _markdown_more(ev: dict) -> str:
    """A further evaluation (e.g. few-shot): its findings and group means."""
    lines = ["", f"## What the numbers show ({ev['name']})", ""] + [f"- {s}" for s in ev["findings"]]
    lines += ["", f"## Means per task group ({ev['name']})", "",
              *_group_table([r["name"] for r in ev["runs"]], ev["groups"])]
    return "\n".join(lines) + "\n"


def _group_table(names: list[str], groups: dict) -> list[str]:
    """Markdown rows: per run, ROUGE-L / EM (tasks) of every group."""
    rows = ["| run | " + " | ".join(GROUPS) + " | all |", "|---" * (len(GROUPS) + 2) + "|"]
    for n in names:
        g = groups[n]
        cells = [f"{_fmt(g[c]['rougeL'])} / {_fmt(g[c]['exact_match'])} ({g[c]['tasks']})" if g[c]["tasks"] else "–"
                 for c in (*GROUPS, "all")]
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return rows


def _plot_groups(evaluations, path) -> None:
    """One row per evaluation (zero-shot, few-shot, ...): ROUGE-L and exact match per task group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = (*GROUPS, "all")
    runs = evaluations[0]["runs"]
    width = 0.8 / len(runs)
    fig, rows = plt.subplots(len(evaluations), 2, figsize=(max(9, 2.2 * len(runs) + 6), 4.6 * len(evaluations) + 0.6),
                             sharey=True, squeeze=False)
    top = max([1.0] + [e["groups"][r["name"]][c][m] or 0 for e in evaluations for r in e["runs"] for c in cols
                       for m in ("rougeL", "exact_match")])
    for axes, ev in zip(rows, evaluations):
        for ax, metric, title in zip(axes, ("rougeL", "exact_match"), ("ROUGE-L", "Exact match")):
            for i, r in enumerate(ev["runs"]):
                g = ev["groups"][r["name"]]
                xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(cols))]
                bars = ax.bar(xs, [g[c][metric] or 0.0 for c in cols], width, label=r["name"], color=f"C{i}")
                for b, c in zip(bars, cols):
                    label = f"{g[c][metric]:.1f}\n({g[c]['tasks']})" if g[c]["tasks"] else "n/a"
                    ax.annotate(label, (b.get_x() + b.get_width() / 2, b.get_height()), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(cols)), [c.replace("seen by other run", "seen by\nother run") for c in cols])
            ax.set_title(f"{title}, {ev['name']} (mean over tasks)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            ax.set_ylim(0, top * 1.15)
        axes[0].set_ylabel("score (x100)")
    handles, labels = rows[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 4), fontsize=8, frameon=False)
    fig.text(0.5, 0.35 / (4.6 * len(evaluations) + 0.6), "(k) = tasks in the group; 'own' and 'seen by other run' "
             "hold different tasks per run", ha="center", fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.9 / (4.6 * len(evaluations) + 0.6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def heldout_losses(run: dict, held: list[str]) -> dict:
    """{step: mean eval/loss over the held-out tasks} from the run's metrics.jsonl (eval.every)."""
    path = os.path.join(run["dir"], "metrics.jsonl")
    out: dict = {}
    if not held or not os.path.isfile(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                m = json.loads(line)
            except json.JSONDecodeError:
                continue
            vals = [m[f"eval/loss/{t}"] for t in held if f"eval/loss/{t}" in m]
            if len(vals) == len(held):
                out[int(m["step"])] = sum(vals) / len(vals)  # a resumed step's line replaces the first
    return dict(sorted(out.items()))


def _plot_losses(runs, curves, held, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(runs):
        c = curves[r["name"]]
        if c:
            ax.plot(list(c), list(c.values()), marker="o", markersize=3, color=f"C{i}", label=r["name"])
    ax.set_yscale("log")  # a run that never saw these tasks sits an order of magnitude above
    ax.set_xlabel("step")
    ax.set_ylabel("loss (mean over tasks, log scale)")
    ax.set_title(f"Loss on the {len(held)} held-out tasks during training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_tasks(runs, tasks, status, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(runs)
    height = 0.8 / n
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.17 * len(tasks) * n + 0.12 * len(tasks) + 1.5)))
    for i, r in enumerate(runs):
        for j, t in enumerate(tasks):
            s = r["scores"].get(t)
            y = j + (i - (n - 1) / 2) * height
            if s is None:
                ax.text(1, y, "not evaluated", va="center", fontsize=6, color="0.4")
                continue
            own = status[t][r["name"]] == OWN
            ax.barh(y, s["rougeL"], height, color=f"C{i}", hatch="///" if own else None,
                    edgecolor="white" if own else None, linewidth=0)
            ax.text(s["rougeL"] + 0.5, y, f"{s['rougeL']:.1f}", va="center", fontsize=6)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
    ax.set_ylim(len(tasks) - 0.5, -0.5)  # first task on top
    held = [j for j, t in enumerate(tasks) if status[t][runs[0]["name"]] == HELD_OUT]
    if held and held[0] > 0:  # tasks are ordered: trained-on first, then held-out
        ax.axhline(held[0] - 0.5, color="0.3", linestyle="--", linewidth=0.8)
    for j in held:
        ax.get_yticklabels()[j].set_color("0.25")
        ax.get_yticklabels()[j].set_style("italic")
    top = max([1.0] + [r["scores"][t]["rougeL"] for r in runs for t in tasks if t in r["scores"]])
    ax.set_xlim(0, top * 1.12)
    ax.set_xlabel("ROUGE-L (x100)")
    ax.set_title("ROUGE-L per task (hatched = task in that run's mixture; italic below the dashed line = held-out)",
                 fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [Patch(color=f"C{i}", label=r["name"]) for i, r in enumerate(runs)]
    handles.append(Patch(facecolor="0.6", hatch="///", edgecolor="white", label="own (trained on)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _compare(runs: list[dict]) -> dict:
    """Groups, per-task status and findings for one evaluation of every run."""
    _unique_names(runs)
    trained_any = set().union(*(r["trained"] for r in runs))
    # Trained-on tasks first, then held-out ones, each by name.
    tasks = sorted(set().union(*(r["scores"] for r in runs)), key=lambda t: (t not in trained_any, t))
    status = {t: {r["name"]: OWN if t in r["trained"] else OTHER if t in trained_any else HELD_OUT for r in runs}
              for t in tasks}
    groups = {r["name"]: _group_means(r, tasks, status) for r in runs}
    findings = _held_out_findings(runs, tasks, status) + _own_task_findings(runs, tasks) + _caveats(runs, tasks)
    return {"name": runs[0]["eval_name"], "runs": runs, "tasks": tasks, "status": status, "groups": groups,
            "findings": findings}


def write_comparison(run_dirs: list[str], out_dir: str, eval_name: str | list[str] | None = None) -> dict:
    """Compare runs on one or more evaluations (the first is the main one); write COMPARISON.md,
    comparison.json, comparison.png, comparison_tasks.png and heldout_loss.png into out_dir.

    Returns the first evaluation's {"runs": [...], "tasks": [{"task", "status": {run: status},
    "scores": {run: {...} | None}}], "groups": {run: {group: {"rougeL", "exact_match", "tasks"}}},
    "findings": [str]}, with "evaluations" (the same for every evaluation), "heldout_loss"
    ({run: {step: loss}}) and "files". Raises ValueError with a one-line message on unusable input.
    """
    if not run_dirs:
        raise ValueError("no run directories given")
    names = eval_name if isinstance(eval_name, list) else [eval_name]
    evaluations = [_compare([load_run(d, n) for d in run_dirs]) for n in names]
    main = evaluations[0]
    runs, tasks, status = main["runs"], main["tasks"], main["status"]
    held = [t for t in tasks if status[t][runs[0]["name"]] == HELD_OUT]
    curves = {r["name"]: heldout_losses(r, held) for r in runs}

    os.makedirs(out_dir, exist_ok=True)
    files = {"markdown": os.path.join(out_dir, "COMPARISON.md"), "json": os.path.join(out_dir, "comparison.json"),
             "plot": os.path.join(out_dir, "comparison.png"),
             "plot_tasks": os.path.join(out_dir, "comparison_tasks.png")}
    if any(curves.values()):
        files["plot_loss"] = os.path.join(out_dir, "heldout_loss.png")
        _plot_losses(runs, curves, held, files["plot_loss"])
    md = _markdown(runs, tasks, status, main["groups"], main["findings"], title_eval=main["name"])
    for ev in evaluations[1:]:
        md += _markdown_more(ev)
    md += "\n![group means](comparison.png)\n\n![per task](comparison_tasks.png)\n"
    if "plot_loss" in files:
        md += "\n![held-out loss during training](heldout_loss.png)\n"
    with open(files["markdown"], "w") as f:
        f.write(md)
    _plot_groups(evaluations, files["plot"])
    _plot_tasks(runs, tasks, status, files["plot_tasks"])

    def summary(ev: dict) -> dict:
        return {"name": ev["name"],
                "tasks": [{"task": t, "status": ev["status"][t],
                           "scores": {r["name"]: r["scores"].get(t) for r in ev["runs"]}} for t in ev["tasks"]],
                "groups": ev["groups"], "findings": ev["findings"]}

    result = {
        "runs": [{k: r[k] for k in ("name", "dir", "trained", "eval_file", "eval_name", "model", "settings")}
                 for r in runs],
        **{k: v for k, v in summary(main).items() if k != "name"},
        "evaluations": [summary(ev) for ev in evaluations],
        "heldout_loss": {"tasks": held, "runs": {n: {str(k): v for k, v in c.items()} for n, c in curves.items()}},
    }
    with open(files["json"], "w") as f:
        json.dump(result, f, indent=1)
    return {**result, "files": files}


# ---------------------------------------------------------------- CLI glue (wired up in ift/cli.py)

def add_compare_args(sp) -> None:
    sp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories with eval/<name>.json results")
    sp.add_argument("--out", help="output folder (default: comparison/ next to the first run dir)")
    sp.add_argument("--eval", dest="eval_name", action="append",
                    help="evaluation name to use in each run (default: the newest); repeat for several, e.g. "
                         "--eval eval_0shot --eval eval_2shot (the first is the main one)")


def cmd_compare(args, extras=None) -> dict:
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.run_dirs[0])), "comparison")
    result = write_comparison(args.run_dirs, out, args.eval_name)
    for ev in result["evaluations"]:
        print(f"{ev['name']}:")
        for n, g in ev["groups"].items():
            print(f"  {n}: " + ", ".join(f"{k} {_fmt(v['rougeL'])} ({v['tasks']})" for k, v in g.items() if v["tasks"]))
        for s in ev["findings"]:
            print(f"  - {s}")
    print("wrote " + ", ".join(result["files"].values()))
    return result
