"""The plots of `ift compare` (ift.eval.report): group means per evaluation, ROUGE-L per task, and
the held-out loss during training. Matplotlib is imported on first use, with the Agg backend."""

from __future__ import annotations


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_groups(evaluations: list[dict], path: str) -> None:
    """One row per evaluation (zero-shot, few-shot, ...): ROUGE-L and exact match per task group."""
    plt = _pyplot()
    runs = evaluations[0]["runs"]
    cols = tuple(evaluations[0]["groups"][runs[0]["name"]])  # the task groups, then "all"
    width = 0.8 / len(runs)
    fig, rows = plt.subplots(
        len(evaluations),
        2,
        figsize=(max(9, 2.2 * len(runs) + 6), 4.6 * len(evaluations) + 0.6),
        sharey=True,
        squeeze=False,
    )
    top = max(
        [1.0]
        + [
            e["groups"][r["name"]][c][m] or 0
            for e in evaluations
            for r in e["runs"]
            for c in cols
            for m in ("rougeL", "exact_match")
        ]
    )
    for axes, ev in zip(rows, evaluations):
        for ax, metric, title in zip(axes, ("rougeL", "exact_match"), ("ROUGE-L", "Exact match")):
            for i, r in enumerate(ev["runs"]):
                g = ev["groups"][r["name"]]
                xs = [j + (i - (len(runs) - 1) / 2) * width for j in range(len(cols))]
                bars = ax.bar(xs, [g[c][metric] or 0.0 for c in cols], width, label=r["name"], color=f"C{i}")
                for b, c in zip(bars, cols):
                    label = f"{g[c][metric]:.1f}\n({g[c]['tasks']})" if g[c]["tasks"] else "n/a"
                    ax.annotate(
                        label,
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            ax.set_xticks(range(len(cols)), [c.replace("seen by other run", "seen by\nother run") for c in cols])
            ax.set_title(f"{title}, {ev['name']} (mean over tasks)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
            ax.set_ylim(0, top * 1.15)
        axes[0].set_ylabel("score (x100)")
    handles, labels = rows[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(runs), 4), fontsize=8, frameon=False)
    fig.text(
        0.5,
        0.35 / (4.6 * len(evaluations) + 0.6),
        "(k) = tasks in the group; 'own' and 'seen by other run' hold different tasks per run",
        ha="center",
        fontsize=7,
        color="0.35",
    )
    fig.tight_layout(rect=(0, 0.9 / (4.6 * len(evaluations) + 0.6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tasks(runs: list[dict], tasks: list[str], own: set, held: list[str], path: str) -> None:
    """ROUGE-L per task and run; own: the (task, run name) pairs trained on (hatched); held: the held-out
    tasks (after the trained-on ones in `tasks`)."""
    plt = _pyplot()
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
            trained = (t, r["name"]) in own
            ax.barh(
                y,
                s["rougeL"],
                height,
                color=f"C{i}",
                hatch="///" if trained else None,
                edgecolor="white" if trained else None,
                linewidth=0,
            )
            ax.text(s["rougeL"] + 0.5, y, f"{s['rougeL']:.1f}", va="center", fontsize=6)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
    ax.set_ylim(len(tasks) - 0.5, -0.5)  # first task on top
    held_rows = [j for j, t in enumerate(tasks) if t in held]
    if held_rows and held_rows[0] > 0:  # tasks are ordered: trained-on first, then held-out
        ax.axhline(held_rows[0] - 0.5, color="0.3", linestyle="--", linewidth=0.8)
    for j in held_rows:
        ax.get_yticklabels()[j].set_color("0.25")
        ax.get_yticklabels()[j].set_style("italic")
    top = max([1.0] + [r["scores"][t]["rougeL"] for r in runs for t in tasks if t in r["scores"]])
    ax.set_xlim(0, top * 1.12)
    ax.set_xlabel("ROUGE-L (x100)")
    ax.set_title(
        "ROUGE-L per task (hatched = task in that run's mixture; italic below the dashed line = held-out)", fontsize=9
    )
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [Patch(color=f"C{i}", label=r["name"]) for i, r in enumerate(runs)]
    handles.append(Patch(facecolor="0.6", hatch="///", edgecolor="white", label="own (trained on)"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_losses(runs: list[dict], curves: dict, held: list[str], path: str) -> None:
    """The mean loss on the held-out tasks during training, per run (from metrics.jsonl)."""
    _plot_curves(
        runs,
        curves,
        path,
        "loss (mean over tasks, log scale)",
        f"Loss on the {len(held)} held-out tasks during training",
        log=True,
    )


def plot_scores(runs: list[dict], curves: dict, held: list[str], path: str) -> None:
    """The mean ROUGE-L of the held-out generation during training (eval.generate_every), per run."""
    _plot_curves(
        runs,
        curves,
        path,
        "ROUGE-L x100 (mean over tasks)",
        f"Generation on the {len(held)} held-out tasks during training",
        log=False,
    )


def _plot_curves(runs: list[dict], curves: dict, path: str, ylabel: str, title: str, log: bool) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, r in enumerate(runs):
        c = curves.get(r["name"])
        if c:
            ax.plot(list(c), list(c.values()), marker="o", markersize=3, color=f"C{i}", label=r["name"])
    if log:
        ax.set_yscale("log")  # a run that never saw these tasks sits an order of magnitude above
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mixtures(mixtures: dict, path: str) -> None:
    """Per adaptive run: its task rates over steps (stacked; a rate holds from its update to the next)
    beside each task's training loss."""
    plt = _pyplot()
    fig, rows = plt.subplots(len(mixtures), 2, figsize=(13, 4.2 * len(mixtures)), squeeze=False)
    for (name, mix), (left, right) in zip(mixtures.items(), rows):
        tasks, steps = list(mix["rates"]), mix["steps"]
        end = max([steps[-1]] + [s for c in mix["loss"].values() for s in c])
        xs = [x for a, b in zip(steps, steps[1:] + [end]) for x in (a, b)]  # a step function, as stacked areas
        ys = [[mix["rates"][t].get(a, 0.0) for a in steps for _ in (0, 1)] for t in tasks]
        colors = [plt.cm.tab20(i % 20) for i in range(len(tasks))]
        left.stackplot(xs, ys, labels=tasks, colors=colors, linewidth=0)
        left.set_xlim(steps[0], end)
        left.set_ylim(0, 1)
        left.set_xlabel("step")
        left.set_ylabel("sampling rate (stacked)")
        left.set_title(f"{name}: task rates", fontsize=10)
        for t, c in zip(tasks, colors):
            curve = mix["loss"].get(t, {})
            right.plot(list(curve), list(curve.values()), color=c, linewidth=1, label=t)
        right.set_yscale("log")
        right.set_xlabel("step")
        right.set_ylabel("training loss per task (log scale)")
        right.set_title(f"{name}: task losses", fontsize=10)
        right.grid(alpha=0.3)
        right.legend(
            fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, ncol=1 + len(tasks) // 25
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
