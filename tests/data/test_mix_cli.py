"""Tests for `ift mix`: the mixture table, realized sampling and the rate plot."""

import json
import re

import pytest

from ift.cli import main
from ift.data import builtin


def write_config(tmp_path, extra=""):
    path = tmp_path / "mix.yaml"
    path.write_text(
        "run: {name: mixtest, seed: 1}\n"
        "data:\n"
        "  tasks:\n"
        "    - {builtin: train, n: 40}\n"
        "train: {max_steps: 10, micro_batch_size: 4, grad_accum: 2}\n" + extra
    )
    return str(path)


def task_rows(out):
    """Table rows keyed by task name: [schema, examples, skipped, cap, rate, epochs(, realized)]."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in builtin.TRAIN_TASKS:
            found[parts[0]] = parts[1:]
    return found


def test_mix_prints_one_row_per_task_and_total(tmp_path, capsys):
    assert main(["mix", write_config(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["task", "schema", "examples", "skipped", "cap", "rate", "epochs"]
    rows = task_rows(out)
    assert list(rows) == list(builtin.TRAIN_TASKS)
    n = len(builtin.TRAIN_TASKS)
    # one line per task, right after the header
    assert [line.split()[0] for line in lines[1 : 1 + n]] == list(builtin.TRAIN_TASKS)
    for schema, examples, skipped, cap, rate, epochs in rows.values():
        assert (schema, examples, skipped, cap) == ("builtin", "40", "0", "-")
        assert float(rate) == pytest.approx(1 / n, abs=1e-4)
        # 10 steps x 4 x 2 = 80 sequences spread evenly over n tasks of 40 examples
        assert float(epochs) == pytest.approx(80 / n / 40, abs=0.01)
    assert f"{n} tasks, {40 * n} records: {40 * n} examples, 0 bad records skipped" in lines
    assert any(
        line.startswith("epochs: over train.max_steps x global batch = 80 sequences at world size 1") for line in lines
    )


def test_mix_overrides_and_world_size(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["mix", cfg, "--world-size", "2", "data.mixture.cap=10", "data.tasks=[]"]) == 2
    assert "data.tasks: must list at least one task source" in capsys.readouterr().err
    assert main(["mix", cfg, "--world-size", "2", "data.mixture.cap=10"]) == 0
    out = capsys.readouterr().out
    rows = task_rows(out)
    assert {r[3] for r in rows.values()} == {"10"}
    assert "= 160 sequences at world size 2" in out


def test_mix_shows_skipped_records(tmp_path, capsys):
    records = [{"instruction": "Echo.", "input": str(i), "output": str(i)} for i in range(5)]
    records.insert(2, {"instruction": "Echo.", "input": "x", "output": ""})
    (tmp_path / "echo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = tmp_path / "skip.yaml"
    cfg.write_text(f"data:\n  root: {tmp_path}\n  on_bad_record: skip\n  tasks:\n    - {{path: echo.jsonl}}\n")
    assert main(["mix", str(cfg)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("echo "))
    assert row.split()[1:4] == ["alpaca", "5", "1"]
    assert "1 tasks, 6 records: 5 examples, 1 bad records skipped" in out
    assert "  skipped in echo: 1 x empty output" in out


def test_mix_samples_and_plot(tmp_path, capsys):
    png = tmp_path / "out.png"
    assert main(["mix", write_config(tmp_path), "--samples", "2000", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[-1] == "realized"
    rows = task_rows(out)
    n = len(builtin.TRAIN_TASKS)
    realized = [float(r[-1]) for r in rows.values()]
    assert all(abs(x - 1 / n) <= 1 / 2000 + 1e-4 for x in realized)  # low-discrepancy: +/- 1 draw
    assert sum(realized) == pytest.approx(1.0, abs=1e-3)
    assert f"plot: {png}" in out
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mix_plot_without_samples_is_an_error(tmp_path, capsys):
    png = tmp_path / "out.png"
    assert main(["mix", write_config(tmp_path), "--plot", str(png)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --plot needs --samples N to show realized rates\n"
    assert not png.exists()


def test_mix_unknown_weight_task_is_a_user_error(tmp_path, capsys):
    cfg = write_config(tmp_path)
    assert main(["mix", cfg, "data.mixture.weights.revers_word=2"]) == 2
    err = capsys.readouterr().err
    assert re.match(r"error: data\.mixture\.weights: unknown task 'revers_word'", err)
    assert err.count("\n") == 1


def test_mix_lists_sharegpt_and_column_split_tasks(tmp_path, capsys):
    turns = [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Bye"},
        {"from": "gpt", "value": "Bye!"},
    ]
    (tmp_path / "share.jsonl").write_text(
        "".join(json.dumps({"conversations": turns[: 2 + 2 * (i % 2)]}) + "\n" for i in range(5))
    )
    (tmp_path / "tulu.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
                    "source": src,
                }
            )
            + "\n"
            for i, src in enumerate(["oasst", "flan", "oasst", "sciq", "oasst"])
        )
    )
    path = tmp_path / "mix.yaml"
    path.write_text(
        f"data:\n  tasks:\n    - {{path: {tmp_path / 'share.jsonl'}}}\n"
        f"    - {{path: {tmp_path / 'tulu.jsonl'}, task_field: source, name: tulu}}\n"
    )
    assert main(["mix", str(path)]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    assert rows["share"] == ["sharegpt", "5"]
    assert rows["tulu/oasst"] == ["messages", "3"] and rows["tulu/flan"] == ["messages", "1"]
    assert rows["tulu/sciq"] == ["messages", "1"]
