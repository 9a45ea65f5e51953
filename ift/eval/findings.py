"""What `ift compare` concludes from the numbers: the task groups (a task is in a run's own mixture,
in another compared run's, or held out from all), group means, and the findings as sentences."""

from __future__ import annotations

import json

OWN, OTHER, HELD_OUT = "own", "seen by other run", "held-out"
GROUPS = (OWN, OTHER, HELD_OUT)
TIE = 1.0  # ROUGE-L points: smaller differences are called a tie in the findings


# ---------------------------------------------------------------- numbers


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def group_means(run: dict, tasks: list[str], status: dict) -> dict:
    """{group: {"rougeL", "exact_match", "tasks"}} of one run: means over its evaluated tasks of each
    status group (status: {task: {run name: group}}), and over "all"."""
    out = {}
    for g in (*GROUPS, "all"):
        ts = [t for t in tasks if t in run["scores"] and (g == "all" or status[t][run["name"]] == g)]
        out[g] = {
            "rougeL": mean(run["scores"][t]["rougeL"] for t in ts),
            "exact_match": mean(run["scores"][t]["exact_match"] for t in ts),
            "tasks": len(ts),
        }
    return out


def fmt(x, digits=1) -> str:
    """A score with one decimal, or – for none."""
    return "–" if x is None else f"{x:.{digits}f}"


def task_list(ts: list[str], limit: int = 3) -> str:
    return ", ".join(ts) if len(ts) <= limit else f"{', '.join(ts[:limit])}, … ({len(ts)} tasks)"


# ---------------------------------------------------------------- findings (generated from the numbers)


def findings_for(runs: list[dict], tasks: list[str], status: dict) -> list[str]:
    """Sentences on held-out generalization, each run's own tasks, then caveats."""
    return _held_out_findings(runs, tasks, status) + _own_task_findings(runs, tasks) + _caveats(runs, tasks)


def _held_out_findings(runs, tasks, status) -> list[str]:
    held = [t for t in tasks if status[t][runs[0]["name"]] == HELD_OUT and all(t in r["scores"] for r in runs)]
    if not held:
        return [
            "No held-out task (in no compared run's mixture) was evaluated by every run, so these results say "
            "nothing about generalization to unseen tasks."
        ]
    means = {
        r["name"]: (mean(r["scores"][t]["rougeL"] for t in held), mean(r["scores"][t]["exact_match"] for t in held))
        for r in runs
    }
    ranked = sorted(means, key=lambda n: means[n][0], reverse=True)
    what = f"the {len(held)} held-out task{'s' if len(held) > 1 else ''}"
    if len(runs) == 1:
        return [f"On {what}, {ranked[0]} scores ROUGE-L {fmt(means[ranked[0]][0])} (EM {fmt(means[ranked[0]][1])})."]
    best, second = ranked[0], ranked[1]
    d = means[best][0] - means[second][0]
    wins = sum(
        next(r for r in runs if r["name"] == best)["scores"][t]["rougeL"]
        > next(r for r in runs if r["name"] == second)["scores"][t]["rougeL"]
        for t in held
    )
    listing = ", ".join(f"{n} {fmt(means[n][0])}" for n in ranked)
    if d < TIE:
        s = (
            f"On {what}, the runs are within {d:.1f} ROUGE-L points of each other ({listing}): too close to call "
            f"a winner (threshold {TIE:.0f} point)."
        )
    else:
        s = (
            f"On {what}, {best} generalizes best: ROUGE-L {fmt(means[best][0])} vs {fmt(means[second][0])} for "
            f"{second} (+{d:.1f} points), higher on {wins} of {len(held)} tasks."
        )
        if len(runs) > 2:
            s += f" All runs: {listing}."
    em_d = means[best][1] - means[second][1]
    if d >= TIE and em_d < 0:
        s += f" Exact match disagrees: {second} has the higher EM ({fmt(means[second][1])} vs {fmt(means[best][1])})."
    else:
        s += f" Exact match: {best} {fmt(means[best][1])} vs {second} {fmt(means[second][1])}."
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
            ma = mean(a["scores"][t]["rougeL"] for t in common)
            mb = mean(b["scores"][t]["rougeL"] for t in common)
            b_trained = [t for t in common if t in b["trained"]]
            if len(common) == 1:
                where = (
                    f"{common[0]}, the only task {a['name']} trained on"
                    if len(a["trained"]) == 1
                    else f"{common[0]}, one of the {len(a['trained'])} tasks {a['name']} trained on"
                )
                b_note = "also trained on it" if b_trained else "did not train on it"
            else:
                where = (
                    f"{len(common)} of the {len(a['trained'])} tasks {a['name']} trained on "
                    "(those both runs were evaluated on)"
                )
                b_note = f"trained on {len(b_trained)} of them" if b_trained else "trained on none of them"
            d = ma - mb
            if abs(d) < TIE:
                verdict = f"a tie (difference {d:+.1f} points)"
            elif d > 0:
                verdict = f"{a['name']} is ahead by {d:.1f} points"
            else:
                verdict = f"{b['name']} is ahead by {-d:.1f} points, so {a['name']} does not win on its own task" + (
                    "s" if len(common) > 1 else ""
                )
            out.append(
                f"On {where}, {a['name']} scores ROUGE-L {fmt(ma)} and {b['name']} ({b_note}) {fmt(mb)}: {verdict}."
            )
    return out


def _caveats(runs, tasks) -> list[str]:
    out = []
    missing = [t for t in tasks if not all(t in r["scores"] for r in runs)]
    if missing:
        out.append(
            f"{len(missing)} task(s) were not evaluated by every run ({task_list(missing)}); "
            "head-to-head findings use only tasks evaluated for the runs compared."
        )
    if len({json.dumps(r["settings"], sort_keys=True) for r in runs}) > 1:
        out.append(
            "The runs were evaluated with different settings (see the runs table), so part of any difference "
            "may come from the evaluation, not the training."
        )
    for t in tasks:
        ns = {r["scores"][t].get("n") for r in runs if t in r["scores"]}
        if len(ns) > 1:
            out.append(f"Task {t} was scored on different numbers of examples across runs ({sorted(ns, key=str)}).")
    return out
