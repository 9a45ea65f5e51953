import json
import os

import pytest
import yaml

from ift.errors import UserError
from ift.eval.report import write_comparison


def make_run(root, dirname, name, trained, scores, eval_name="heldout", settings=None):
    d = root / dirname
    (d / "eval").mkdir(parents=True, exist_ok=True)
    mixture = {"tasks": {t: {"examples": 10, "rate": 1 / len(trained)} for t in trained}}
    (d / "mixture.json").write_text(json.dumps(mixture))
    if name is not None:
        (d / "config.yaml").write_text(yaml.safe_dump({"run": {"name": name}}))
    tasks = {t: {"rougeL": r, "exact_match": e, "n": 100} for t, (r, e) in scores.items()}
    (d / "eval" / f"{eval_name}.json").write_text(
        json.dumps(
            {
                "name": eval_name,
                "model": str(d),
                "settings": settings or {"shots": 2},
                "tasks": tasks,
                "mean": {},
                "examples": [],
            }
        )
    )
    return str(d)


FT = {"taskA": (80, 60), "taskB": (10, 0), "taskH1": (20, 10), "taskH2": (30, 20)}
IFT = {"taskA": (70, 50), "taskB": (60, 40), "taskH1": (40, 20), "taskH2": (50, 30)}


def two_runs(tmp_path, ft=FT, ift=IFT):
    return [
        make_run(tmp_path, "ft", "ft_run", ["taskA"], ft),
        make_run(tmp_path, "ift", "ift_run", ["taskA", "taskB", "taskC"], ift),
    ]


def row(md, key, section="## Per task"):
    lines = md.split(section, 1)[1].splitlines()
    line = next(ln for ln in lines if ln.startswith(f"| {key} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_tables_statuses_and_group_means(tmp_path):
    out = tmp_path / "cmp"
    res = write_comparison(two_runs(tmp_path), str(out))
    md = (out / "COMPARISON.md").read_text()
    for name in ("ft_run", "ift_run", "taskA", "taskB", "taskH1", "taskH2"):
        assert name in md
    # columns: task, n, ft_run, ift_run
    assert row(md, "taskA")[2:] == ["80.0 / 60.0 (own)", "70.0 / 50.0 (own)"]
    assert row(md, "taskB")[2:] == ["10.0 / 0.0 (seen by other run)", "60.0 / 40.0 (own)"]
    assert row(md, "taskH1")[2:] == ["20.0 / 10.0 (held-out)", "40.0 / 20.0 (held-out)"]
    assert [t["task"] for t in res["tasks"]] == ["taskA", "taskB", "taskH1", "taskH2"]  # trained-on first
    assert res["tasks"][1]["status"] == {"ft_run": "seen by other run", "ift_run": "own"}

    g = res["groups"]
    assert g["ft_run"]["own"] == {"rougeL": 80, "exact_match": 60, "tasks": 1}
    assert g["ft_run"]["seen by other run"] == {"rougeL": 10, "exact_match": 0, "tasks": 1}
    assert g["ft_run"]["held-out"] == {"rougeL": 25, "exact_match": 15, "tasks": 2}
    assert g["ft_run"]["all"] == {"rougeL": 35, "exact_match": 22.5, "tasks": 4}
    assert g["ift_run"]["own"] == {"rougeL": 65, "exact_match": 45, "tasks": 2}
    assert g["ift_run"]["seen by other run"] == {"rougeL": None, "exact_match": None, "tasks": 0}
    assert g["ift_run"]["held-out"] == {"rougeL": 45, "exact_match": 25, "tasks": 2}
    means = "## Means per task group"
    assert row(md, "ft_run", means)[1:] == ["80.0 / 60.0 (1)", "10.0 / 0.0 (1)", "25.0 / 15.0 (2)", "35.0 / 22.5 (4)"]
    assert row(md, "ift_run", means)[1:] == ["65.0 / 45.0 (2)", "–", "45.0 / 25.0 (2)", "55.0 / 35.0 (4)"]

    for key in ("plot", "plot_tasks"):
        assert os.path.getsize(res["files"][key]) > 1000
    assert [r["name"] for r in res["runs"]] == ["ft_run", "ift_run"]


def test_findings_follow_the_numbers(tmp_path):
    res = write_comparison(two_runs(tmp_path), str(tmp_path / "a"))
    held, own = res["findings"][0], res["findings"][1]
    assert "ift_run generalizes best" in held and "45.0 vs 25.0" in held and "+20.0" in held
    assert "higher on 2 of 2 tasks" in held
    assert "ft_run scores ROUGE-L 80.0" in own and "ft_run is ahead by 10.0" in own
    assert held in (tmp_path / "a" / "COMPARISON.md").read_text()

    # Swap the numbers: the conclusions flip.
    res = write_comparison(two_runs(tmp_path / "swapped", ft=IFT, ift=FT), str(tmp_path / "b"))
    held, own = res["findings"][0], res["findings"][1]
    assert "ft_run generalizes best" in held and "+20.0" in held
    assert "ift_run is ahead by 10.0 points, so ft_run does not win on its own task" in own


def test_small_differences_are_called_a_tie(tmp_path):
    close = dict(FT, taskA=(70.4, 50), taskH1=(40.2, 20), taskH2=(50.1, 30))
    res = write_comparison(two_runs(tmp_path, ft=close), str(tmp_path / "out"))
    held, own = res["findings"][0], res["findings"][1]
    assert "too close to call" in held and "generalizes best" not in held
    assert "a tie" in own


def test_exact_match_disagreement_is_reported(tmp_path):
    ft = dict(FT, taskH1=(20, 90), taskH2=(30, 90))
    res = write_comparison(two_runs(tmp_path, ft=ft), str(tmp_path / "out"))
    assert "Exact match disagrees: ft_run has the higher EM (90.0 vs 25.0)" in res["findings"][0]


def test_no_held_out_tasks(tmp_path):
    only_trained = {"taskA": (1, 1), "taskB": (2, 2)}
    res = write_comparison(two_runs(tmp_path, ft=only_trained, ift=only_trained), str(tmp_path / "out"))
    assert "nothing about generalization" in res["findings"][0]


def test_three_runs_baseline_and_caveats(tmp_path):
    dirs = two_runs(tmp_path)
    base = dict(IFT, taskH1=(5, 0))
    del base["taskB"]
    dirs.append(make_run(tmp_path, "base", None, [], base, settings={"shots": 0}))
    (tmp_path / "base" / "mixture.json").write_text(json.dumps({"tasks": {}}))
    res = write_comparison(dirs, str(tmp_path / "out"))
    md = (tmp_path / "out" / "COMPARISON.md").read_text()
    assert res["runs"][2]["name"] == "base"  # no config.yaml: directory name
    assert row(md, "taskB")[4] == "not evaluated (seen by other run)"
    assert row(md, "taskH1")[4] == "5.0 / 0.0 (held-out)"
    text = " ".join(res["findings"])
    assert "All runs: ift_run 45.0, base 27.5, ft_run 25.0." in text
    assert "not evaluated by every run (taskB)" in text
    assert "different settings" in text


def test_eval_file_choice(tmp_path):
    d = make_run(tmp_path, "ft", "ft_run", ["taskA"], {"taskA": (10, 10)}, eval_name="old")
    make_run(tmp_path, "ft", "ft_run", ["taskA"], {"taskA": (90, 90)}, eval_name="new")
    os.utime(os.path.join(d, "eval", "old.json"), (1, 1))
    res = write_comparison([d], str(tmp_path / "o1"))
    assert res["runs"][0]["eval_name"] == "new" and res["groups"]["ft_run"]["own"]["rougeL"] == 90
    res = write_comparison([d], str(tmp_path / "o2"), eval_name="old")
    assert res["groups"]["ft_run"]["own"]["rougeL"] == 10
    with pytest.raises(UserError, match="no evaluation named 'nope'"):
        write_comparison([d], str(tmp_path / "o3"), eval_name="nope")


def test_duplicate_run_names_are_disambiguated(tmp_path):
    a = make_run(tmp_path, "a", "same", ["taskA"], FT)
    b = make_run(tmp_path, "b", "same", ["taskB"], IFT)
    res = write_comparison([a, b], str(tmp_path / "out"))
    assert len({r["name"] for r in res["runs"]}) == 2


def test_clear_errors(tmp_path):
    d = make_run(tmp_path, "ft", "ft_run", ["taskA"], FT)
    os.remove(os.path.join(d, "eval", "heldout.json"))
    with pytest.raises(UserError, match=f"run {d} has no evaluation results"):
        write_comparison([d], str(tmp_path / "out"))
    with pytest.raises(UserError, match="run directory not found"):
        write_comparison([str(tmp_path / "missing")], str(tmp_path / "out"))
    os.remove(os.path.join(d, "mixture.json"))
    with pytest.raises(UserError, match="no mixture.json"):
        write_comparison([d], str(tmp_path / "out"))


def test_adaptive_mixture_rates_and_losses_reach_the_report(tmp_path):
    ft, ift = two_runs(tmp_path)
    lines = [
        {"step": 0, "mix/taskA": 0.5, "mix/taskB": 0.3, "mix/taskC": 0.2},
        {"step": 5, "loss": 2.0, "loss/taskA": 1.0, "loss/taskB": 3.0, "loss/taskC": 2.0},
        {"step": 5, "mix/taskA": 0.3, "mix/taskB": 0.5, "mix/taskC": 0.2},
        {
            "step": 10,
            "loss": 1.5,
            "loss/taskA": 0.5,
            "loss/taskB": 2.5,
            "loss/taskC": 1.0,
            "mix/taskA": 0.2,
            "mix/taskB": 0.6,
            "mix/taskC": 0.2,
        },
    ]
    (tmp_path / "ift" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    out = tmp_path / "cmp"
    res = write_comparison([ft, ift], str(out))
    assert os.path.getsize(res["files"]["plot_mixture"]) > 10_000
    mix = res["mixture"]["ift_run"]
    assert mix["steps"] == [0, 5, 10] and mix["gained"] == ["taskB"] and mix["lost"] == ["taskA"]
    assert mix["rates"]["taskB"] == {"0": 0.3, "5": 0.5, "10": 0.6}
    assert "ft_run" not in res["mixture"]  # fixed rates: no section
    md = (out / "COMPARISON.md").read_text()
    assert "## Adaptive mixture (ift_run)" in md and "![task rates and losses over steps](mixture.png)" in md
    assert row(md, "taskB", "## Adaptive mixture") == ["taskB", "0.300", "0.600", "+0.300"]
    assert row(md, "taskA", "## Adaptive mixture") == ["taskA", "0.500", "0.200", "-0.300"]
    assert "- gained weight: taskB" in md and "- lost weight: taskA" in md


def test_heldout_generation_curve_and_harness_table_reach_the_report(tmp_path):
    ft, ift = two_runs(tmp_path)
    lines = [
        {"step": 5, "loss": 2.0, "eval/rougeL": 25.0, "eval/rougeL/taskH1": 20.0, "eval/rougeL/taskH2": 30.0},
        {"step": 10, "loss": 1.5, "eval/rougeL/taskH1": 40.0, "eval/rougeL/taskH2": 50.0},
        {"step": 12, "eval/rougeL/taskH1": 45.0},
    ]  # a step without every held-out task: left out
    (tmp_path / "ift" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (tmp_path / "ft" / "eval" / "harness.json").write_text(
        json.dumps({"tasks": {"arc_easy": {"acc": 0.25, "acc_norm": 0.5}}})
    )
    (tmp_path / "ift" / "eval" / "harness.json").write_text(json.dumps({"tasks": {"arc_easy": {"acc": 0.375}}}))
    out = tmp_path / "cmp"
    res = write_comparison([ft, ift], str(out))
    assert res["heldout_score"]["runs"] == {"ift_run": {"5": 25.0, "10": 45.0}}
    assert os.path.getsize(res["files"]["plot_score"]) > 10_000
    md = (out / "COMPARISON.md").read_text()
    assert "![held-out ROUGE-L during training](heldout_score.png)" in md
    assert row(md, "arc_easy", "## Standard benchmarks") == ["arc_easy", "acc", "0.2500", "0.3750"]
    assert "| arc_easy | acc_norm | 0.5000 | – |" in md
    assert res["harness"]["ift_run"] == {"arc_easy": {"acc": 0.375}}
    assert res["runs"][0]["eval_name"] == "heldout"  # harness.json is not an ift evaluation to pick
