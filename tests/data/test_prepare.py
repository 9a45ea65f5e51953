"""`ift prepare`: the run's data (and an inline model's tokenizer) prepared ahead, so `ift train`
starts from a warm cache; a run on a cold cache says so, with an estimate."""

from __future__ import annotations

import json
import os
import shutil

from helpers import dry_run, read_metrics, run_train, write_config

from ift.cli import main
from ift.config import DataConfig, TaskSource
from ift.data.sources import load_tasks


def write_tasks(folder, n_tasks=3, n=30):
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(n_tasks):
        (folder / f"task{t}.jsonl").write_text(
            "".join(
                json.dumps({"instruction": f"Repeat word {t}.", "input": f"w{i}", "output": f"w{i} w{i}"}) + "\n"
                for i in range(n)
            )
        )


def test_prepare_then_train_starts_warm(tmp_path, capsys):
    write_tasks(tmp_path / "data")
    cache = tmp_path / "cache"
    cfg = write_config(tmp_path, "prep", data={"tasks": [{"path": str(tmp_path / "data")}], "cache_dir": str(cache)})
    assert main(["prepare", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "prepared 90 examples" in out and str(cache) in out and "MiB" in out
    run = tmp_path / "runs" / "prep"
    assert (run / "tokenizer" / "tokenizer_config.json").is_file()  # the inline model's tokenizer, saved
    assert list((cache / "sources").glob("*.arrow")) and list((cache / "tokenized").glob("*.arrow"))
    before = {p: os.path.getmtime(p) for p in cache.rglob("*.arrow")}

    warm = run_train(cfg)
    assert "data cache cold" not in warm.stderr, warm.stderr[-2000:]
    assert {p: os.path.getmtime(p) for p in cache.rglob("*.arrow")} == before  # nothing re-read or re-tokenized
    assert len(read_metrics(run)) == 4

    cold_cfg = write_config(
        tmp_path, "cold", data={"tasks": [{"path": str(tmp_path / "data")}], "cache_dir": str(tmp_path / "cache2")}
    )
    cold = run_train(cold_cfg)
    assert "data cache cold: 90 examples of 3 task(s) to tokenize" in cold.stderr and "ift prepare" in cold.stderr


def test_source_cache_follows_the_files(tmp_path):
    write_tasks(tmp_path / "data", n_tasks=2, n=5)
    data = DataConfig(tasks=[TaskSource(path=str(tmp_path / "data"))], cache_dir=str(tmp_path / "cache"))
    first = load_tasks(data)
    assert [len(t) for t in first] == [5, 5]
    assert len(list((tmp_path / "cache" / "sources").glob("*.json"))) == 1
    again = load_tasks(data)  # from the cache: the same rows
    assert [t.dataset.to_list() for t in again] == [t.dataset.to_list() for t in first]
    # a changed file is a new cache entry, never the old rows
    path = tmp_path / "data" / "task1.jsonl"
    path.write_text(path.read_text() + json.dumps({"instruction": "x", "output": "y"}) + "\n")
    changed = load_tasks(data)
    assert [len(t) for t in changed] == [5, 6] and changed[1].dataset[5]["output"] == "y"
    assert len(list((tmp_path / "cache" / "sources").glob("*.json"))) == 2


def test_submit_says_when_the_cache_is_cold(tmp_path):
    write_tasks(tmp_path / "data")
    data = {"tasks": [{"path": str(tmp_path / "data")}], "cache_dir": str(tmp_path / "cache")}
    cfg = write_config(tmp_path, "sub", data=data)
    assert "# data cache: an inline model's tokenizer is trained from the data" in dry_run(str(cfg))
    assert main(["prepare", str(cfg)]) == 0
    assert "data cache" not in dry_run(str(cfg))  # prepared: warm
    cold = write_config(tmp_path, "sub2", data={**data, "cache_dir": str(tmp_path / "other")})
    (tmp_path / "runs" / "sub2").mkdir(parents=True)
    shutil.copytree(tmp_path / "runs" / "sub" / "tokenizer", tmp_path / "runs" / "sub2" / "tokenizer")
    assert "# data cache cold: 90 examples of 3 task(s) to tokenize" in dry_run(str(cold))
