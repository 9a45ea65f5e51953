"""COMPARISON.md's sections (`ift compare`, ift.eval.report): the runs, the findings, the group
means and per-task scores of each evaluation, an adaptive mixture's rates, the harness's benchmarks."""

from __future__ import annotations

import os

from ift.eval.findings import GROUPS, HELD_OUT, OTHER, OWN, fmt, task_list


def comparison(runs, tasks, status, groups, findings, title_eval: str = "") -> str:
    names = [r["name"] for r in runs]
    lines = [
        "# Fine-tuning comparison",
        "",
        "Scores are x100: **ROUGE-L / exact match**, the Super-NaturalInstructions metrics (max over references, "
        "mean over examples; group means are means over tasks).",
        "",
        "## Runs",
        "",
        "| run | dir | trained on | evaluation | model | settings |",
        "|---|---|---|---|---|---|",
    ]
    for r in runs:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(r["settings"].items())) or "–"
        trained = f"{len(r['trained'])}: {task_list(r['trained'])}" if r["trained"] else "nothing"
        lines.append(
            f"| {r['name']} | `{r['dir']}` | {trained} | "
            f"{r['eval_name']} (`{os.path.basename(r['eval_file'])}`) | {r['model'] or '–'} | {settings} |"
        )
    lines += ["", f"## What the numbers show ({title_eval})", ""] + [f"- {s}" for s in findings]
    lines += [
        "",
        f"## Means per task group ({title_eval})",
        "",
        f"Status per run: `{OWN}` = in that run's mixture; `{OTHER}` = in another compared run's mixture "
        f"but not this one's; `{HELD_OUT}` = in no compared run's mixture. The {OWN} and {OTHER} groups hold "
        f"different tasks for different runs; {HELD_OUT} tasks are the same for all runs. (k) = number of "
        "tasks.",
        "",
        *group_table(names, groups),
    ]
    lines += [
        "",
        f"## Per task ({title_eval})",
        "",
        "| task | n | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for t in tasks:
        ns = sorted({str(r["scores"][t].get("n", "?")) for r in runs if t in r["scores"]})
        cells = []
        for r in runs:
            s = r["scores"].get(t)
            score = f"{fmt(s['rougeL'])} / {fmt(s['exact_match'])}" if s else "not evaluated"
            cells.append(f"{score} ({status[t][r['name']]})")
        lines.append(f"| {t} | {'/'.join(ns)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def further_evaluation(ev: dict) -> str:
    """A further evaluation (e.g. few-shot): its findings and group means."""
    lines = ["", f"## What the numbers show ({ev['name']})", ""] + [f"- {s}" for s in ev["findings"]]
    lines += [
        "",
        f"## Means per task group ({ev['name']})",
        "",
        *group_table([r["name"] for r in ev["runs"]], ev["groups"]),
    ]
    return "\n".join(lines) + "\n"


def group_table(names: list[str], groups: dict) -> list[str]:
    """Markdown rows: per run, ROUGE-L / EM (tasks) of every group."""
    rows = ["| run | " + " | ".join(GROUPS) + " | all |", "|---" * (len(GROUPS) + 2) + "|"]
    for n in names:
        g = groups[n]
        cells = [
            f"{fmt(g[c]['rougeL'])} / {fmt(g[c]['exact_match'])} ({g[c]['tasks']})" if g[c]["tasks"] else "–"
            for c in (*GROUPS, "all")
        ]
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return rows


def harness_section(harness: dict) -> str:
    names = list(harness)
    rows = sorted({(t, m) for h in harness.values() for t, scores in h.items() for m in scores})
    lines = [
        "",
        "## Standard benchmarks (lm-evaluation-harness)",
        "",
        "Each run's `eval/harness.json` (`ift eval RUN --harness ...`), as the harness reports them (0..1).",
        "",
        "| task | metric | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for t, m in rows:
        cells = [f"{harness[n][t][m]:.4f}" if m in harness[n].get(t, {}) else "–" for n in names]
        lines.append(f"| {t} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mixture_section(name: str, mix: dict) -> str:
    first, last = mix["steps"][0], mix["steps"][-1]
    lines = [
        "",
        f"## Adaptive mixture ({name})",
        "",
        f"Rates at step {first} (the configured mixture) and after the last update (step {last}); "
        f"{len(mix['steps']) - 1} updates.",
        "",
        f"- gained weight: {', '.join(mix['gained']) or 'none'}",
        f"- lost weight: {', '.join(mix['lost']) or 'none'}",
        "",
        "| task | rate at start | rate at end | change |",
        "|---|---|---|---|",
    ]
    for t, r in sorted(mix["rates"].items(), key=lambda kv: -mix["change"].get(kv[0], 0)):
        lines.append(f"| {t} | {r.get(first, 0):.3f} | {r.get(last, 0):.3f} | {mix['change'].get(t, 0):+.3f} |")
    return "\n".join(lines) + "\n"
