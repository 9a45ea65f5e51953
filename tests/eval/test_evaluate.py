"""Tests for `ift eval` (ift.eval.evaluate, .generate, .tasks; the CLI glue in ift.cli) on a tiny random Llama
saved as a local HF folder."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import types

import pytest
import yaml
from helpers import save_tiny_llama

from ift import cli
from ift.errors import UserError
from ift.eval import evaluate as ev
from ift.eval import generate as gen
from ift.eval import metrics
from ift.eval.report import load_run

WORDS = ["apple", "river", "green house", "table", "music box", "bread", "cloud", "stone wall", "light", "water"]
DEFINITION = "Write the word backwards."
POSITIVES = [
    {"input": "moon", "output": "noom", "explanation": "moon backwards is noom"},
    {"input": "star", "output": "rats", "explanation": "star backwards is rats"},
]


def sni_rows(words, outputs=None):
    outputs = outputs or [w[::-1] for w in words]
    return [
        {
            "id": f"t{i}",
            "task": "rev",
            "definition": DEFINITION,
            "input": w,
            "output": o,
            "references": [o],
            "category": "string",
        }
        for i, (w, o) in enumerate(zip(words, outputs))
    ]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random Llama + byte-level BPE tokenizer in a plain HF folder."""
    texts = [f"{DEFINITION}\n\nInput: {w}\nOutput: {w[::-1]}" for w in WORDS] + ["Name a number. Add the two numbers."]
    return save_tiny_llama(
        tmp_path_factory.mktemp("tiny_model"), texts * 3, initializer_range=0.3, max_position_embeddings=256
    )


@pytest.fixture()
def task_dir(tmp_path):
    d = tmp_path / "tasks"
    write_jsonl(d / "rev.jsonl", sni_rows(WORDS[:6]))
    (d / "rev.examples.json").write_text(
        json.dumps({"task": "rev", "definition": DEFINITION, "positive_examples": POSITIVES})
    )
    # alpaca schema, no .examples.json: few-shot exemplars come from the task itself
    write_jsonl(
        d / "add.jsonl",
        [
            {"instruction": "Add the two numbers.", "input": f"{a} {b}", "output": str(a + b)}
            for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9)]
        ],
    )
    return d


def run(model_dir, tmp_path, tasks, **kw):
    kw.setdefault("max_new_tokens", 6)
    kw.setdefault("out", str(tmp_path / "out"))
    return ev.evaluate(str(model_dir), tasks=str(tasks), **kw)


# --------------------------------------------------------------------------- results


def test_result_structure_files_and_determinism(model_dir, task_dir, tmp_path):
    res = run(model_dir, tmp_path, task_dir / "*.jsonl", batch_size=4)
    assert res["name"].endswith("_0shot")
    assert set(res["tasks"]) == {"rev", "add"}
    assert res["tasks"]["rev"]["n"] == 6 and res["tasks"]["add"]["n"] == 5
    for scores in [*res["tasks"].values(), res["mean"]]:
        for m in ("exact_match", "rougeL", "exact_match_cased"):
            assert 0.0 <= scores[m] <= 100.0
    assert res["mean"]["tasks"] == 2 and res["mean"]["n"] == 11
    assert res["settings"] == {
        "shots": 0,
        "max_new_tokens": 6,
        "limit": None,
        "batch_size": 4,
        "tasks": str(task_dir / "*.jsonl"),
    }
    ex = res["examples"]
    assert [(e["task"], e["index"]) for e in ex] == [("add", i) for i in range(5)] + [("rev", i) for i in range(6)]
    assert all(isinstance(e["prediction"], str) for e in ex)
    assert all(e["prompt"].endswith("Output:") for e in ex)
    assert ex[5]["prompt"] == f"{DEFINITION}\n\nInput: apple\nOutput:" and ex[5]["references"] == ["elppa"]
    for e in ex:
        for m in ("exact_match", "rougeL", "exact_match_cased"):
            assert 0.0 <= e[m] <= 100.0

    # files: JSON (what ift compare reads) + markdown, nothing left behind
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted([f"{res['name']}.json", f"{res['name']}.md"])
    on_disk = json.loads((out / f"{res['name']}.json").read_text())
    assert on_disk["tasks"] == res["tasks"] and on_disk["model"] == str(model_dir)
    assert {"name", "model", "settings", "tasks", "mean", "examples"} <= set(on_disk)
    md = (out / f"{res['name']}.md").read_text()
    assert "| rev | 6 |" in md and "| add | 5 |" in md and "**mean**" in md

    again = run(model_dir, tmp_path, task_dir / "*.jsonl", batch_size=4, name="again")
    assert [e["prediction"] for e in again["examples"]] == [e["prediction"] for e in ex]
    assert again["tasks"] == res["tasks"]


def test_scores_are_computed_from_the_predictions(model_dir, task_dir, tmp_path):
    first = run(model_dir, tmp_path, task_dir / "rev.jsonl")
    preds = [e["prediction"] for e in first["examples"]]
    keep = [i for i, p in enumerate(preds) if any(c.isalnum() for c in p)]
    assert len(keep) >= 3, preds
    words = [WORDS[i] for i in keep]
    # references = exactly what the greedy model says (the prompts do not contain the output)
    write_jsonl(tmp_path / "forced" / "rev.jsonl", sni_rows(words, [preds[i] for i in keep]))
    res = run(model_dir, tmp_path, tmp_path / "forced" / "rev.jsonl")
    assert [e["prediction"] for e in res["examples"]] == [preds[i] for i in keep]
    assert res["tasks"]["rev"]["exact_match"] == 100.0
    assert res["tasks"]["rev"]["exact_match_cased"] == 100.0
    assert res["tasks"]["rev"]["rougeL"] == pytest.approx(100.0)

    # swapped case: SNI's lower-casing exact match still 100, the cased one is not
    cased = [i for i in keep if preds[i].swapcase() != preds[i]]
    assert cased, preds
    write_jsonl(
        tmp_path / "swapped" / "rev.jsonl", sni_rows([WORDS[i] for i in cased], [preds[i].swapcase() for i in cased])
    )
    res = run(model_dir, tmp_path, tmp_path / "swapped" / "rev.jsonl")
    assert res["tasks"]["rev"]["exact_match"] == 100.0
    assert res["tasks"]["rev"]["exact_match_cased"] == 0.0


def test_exact_match_cased():
    assert ev.exact_match_cased("APPLE", ["apple", "APPLE"]) == 1.0
    assert ev.exact_match_cased("apple", ["APPLE"]) == 0.0 and metrics.exact_match("apple", ["APPLE"]) == 1.0
    assert ev.exact_match_cased(" Apple. ", "Apple") == 1.0  # punctuation and spaces as in SNI


def test_left_padded_batches_equal_one_by_one(model_dir, task_dir, tmp_path):
    # inputs of different lengths, so batches are padded
    write_jsonl(
        tmp_path / "mixed" / "rev.jsonl", sni_rows(["a", "green house stone wall music box", "river", "cloud light"])
    )
    one = run(model_dir, tmp_path, tmp_path / "mixed" / "rev.jsonl", batch_size=1, max_new_tokens=8)
    many = run(model_dir, tmp_path, tmp_path / "mixed" / "rev.jsonl", batch_size=4, max_new_tokens=8, name="b4")
    assert [e["prediction"] for e in many["examples"]] == [e["prediction"] for e in one["examples"]]
    assert len({e["prediction"] for e in one["examples"]}) > 1  # the model does read its prompt


def test_generate_keeps_order_and_stops_at_eos(model_dir):
    model, tok, _ = gen.load_model(str(model_dir))
    prompts = tok(["Input: a\nOutput:", "Write the word backwards.\n\nInput: stone wall\nOutput:"])["input_ids"]
    both = gen.generate(model, tok, prompts, 5, batch_size=2)
    assert both == [gen.generate(model, tok, [p], 5, batch_size=1)[0] for p in prompts]
    assert tok.padding_side == "left"


def test_few_shot_uses_sni_positive_examples_or_same_task_exemplars(model_dir, task_dir, tmp_path):
    res = run(model_dir, tmp_path, task_dir / "*.jsonl", shots=2)
    assert res["name"].endswith("_2shot") and res["settings"]["shots"] == 2
    rev = [e for e in res["examples"] if e["task"] == "rev"]
    for e in rev:
        p = e["prompt"]
        assert p.startswith(DEFINITION + "\n\n")
        assert "Input: moon\nOutput: noom\n\nInput: star\nOutput: rats\n\n" in p  # Tk-Instruct: def + 2 positives
        assert "explanation" not in p and "backwards is" not in p
        assert p.endswith(f"Input: {WORDS[e['index']]}\nOutput:")
    add = [e for e in res["examples"] if e["task"] == "add"]
    for e in add:
        p = e["prompt"]
        assert p.count("Output:") == 3  # two exemplars from the same task + the question
        own = p.rsplit("\n\n", 1)[1]
        assert own not in p.rsplit("\n\n", 1)[0]  # never the example itself
        assert f"{own} {e['references'][0]}" not in p


def test_chat_template_prompts(model_dir, task_dir, tmp_path):
    from transformers import AutoTokenizer

    chat_dir = tmp_path / "chat_model"
    import shutil

    shutil.copytree(model_dir, chat_dir)
    tok = AutoTokenizer.from_pretrained(chat_dir)
    tok.chat_template = (
        "{% for m in messages %}<|user|>{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    tok.save_pretrained(chat_dir)
    res = run(chat_dir, tmp_path, task_dir / "rev.jsonl", limit=2)
    assert res["chat"] is True
    assert res["examples"][0]["prompt"] == f"<|user|>{DEFINITION}\n\nInput: apple\nOutput:<|assistant|>"
    assert res["tasks"]["rev"]["n"] == 2


def test_builtin_and_yaml_task_specs(model_dir, task_dir, tmp_path):
    res = run(model_dir, tmp_path, "builtin:lowercase_word", limit=3, batch_size=3)
    assert res["name"] == "lowercase_word_0shot" and list(res["tasks"]) == ["lowercase_word"]
    assert res["tasks"]["lowercase_word"]["n"] == 3

    cfg = tmp_path / "evalcfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"root": str(task_dir)},
                "eval": {"tasks": [{"path": "add.jsonl"}], "limit": 2, "max_new_tokens": 3},
            }
        )
    )
    res = ev.evaluate(str(model_dir), tasks=str(cfg), out=str(tmp_path / "out"))
    assert res["name"] == "evalcfg_0shot" and list(res["tasks"]) == ["add"]
    # a model folder has no run config: the tasks config's eval section gives the defaults
    assert res["tasks"]["add"]["n"] == 2 and res["settings"]["max_new_tokens"] == 3

    res = run(model_dir, tmp_path, f"builtin:first_word,{task_dir / 'add.jsonl'}", limit=1)
    assert list(res["tasks"]) == ["first_word", "add"]


def test_errors(model_dir, task_dir, tmp_path):
    src = str(model_dir)
    with pytest.raises(UserError, match="--tasks is required"):
        ev.evaluate(src, out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="--out DIR is required"):
        ev.evaluate(src, tasks=str(task_dir / "*.jsonl"))
    with pytest.raises(UserError, match="no such"):
        ev.evaluate(str(tmp_path / "nope"), tasks="builtin:heldout", out=str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="config.json"):
        ev.evaluate(str(empty), tasks="builtin:heldout", out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="no .jsonl"):
        ev.evaluate(src, tasks=str(task_dir / "*.parquet"), out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="no such file"):
        ev.evaluate(src, tasks=str(tmp_path / "missing.jsonl"), out=str(tmp_path / "o"))
    with pytest.raises(UserError, match="unknown builtin"):
        ev.evaluate(src, tasks="builtin:nope", out=str(tmp_path / "o"))
    no_eval = tmp_path / "noeval.yaml"
    no_eval.write_text("run: {name: x}\n")
    with pytest.raises(UserError, match="no eval.tasks"):
        ev.evaluate(src, tasks=str(no_eval), out=str(tmp_path / "o"))
    # the flags are eval.* settings, checked by EvalConfig.check
    for flag, message in (
        ({"batch_size": 0}, "eval.batch_size: must be > 0, got 0"),
        ({"shots": -1}, "eval.shots: must be >= 0, got -1"),
        ({"limit": 0}, "eval.limit: must be > 0, got 0"),
        ({"max_new_tokens": 0}, "eval.max_new_tokens: must be > 0, got 0"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            ev.evaluate(src, tasks="builtin:heldout", out=str(tmp_path / "o"), **flag)
    assert not (tmp_path / "o").exists()


def test_cli_glue(model_dir, task_dir, tmp_path, capsys):
    p = argparse.ArgumentParser()
    cli.add_eval_args(p)
    args = p.parse_args(
        [
            str(model_dir),
            "--tasks",
            str(task_dir / "rev.jsonl"),
            "--shots",
            "2",
            "--limit",
            "2",
            "--max-new-tokens",
            "3",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "o"),
            "--name",
            "x",
        ]
    )
    res = cli.cmd_eval(args, [])
    out = capsys.readouterr().out
    assert "rev" in out and "mean" in out and str(tmp_path / "o" / "x.json") in out
    assert res["settings"]["shots"] == 2 and res["tasks"]["rev"]["n"] == 2
    with pytest.raises(UserError, match="unrecognized"):
        cli.cmd_eval(args, ["--bogus"])


# --------------------------------------------------------------------------- run directories


class FakeWandb(types.ModuleType):
    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.defined, self.finished = [], [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        fake = self

        class Run:
            def define_metric(self, name, **kw):
                fake.defined.append((name, kw))

            def log(self, data, **kw):
                fake.logged.append(data)

            def finish(self):
                fake.finished += 1

        return Run()


def make_run_dir(tmp_path, task_dir, mode="offline"):
    from ift.checkpoint import DONE_FILE, step_name

    run_dir = tmp_path / "runs" / "r"
    ckpt = run_dir / "checkpoints" / step_name(7)
    ckpt.mkdir(parents=True)
    (ckpt / DONE_FILE).write_text("7\n")
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "run": {"name": "r", "output_dir": str(tmp_path / "runs")},
                "data": {"root": str(task_dir), "max_seq_len": 128},
                "tracking": {"wandb": {"mode": mode, "project": "proj"}},
                "eval": {
                    "tasks": [{"path": "rev.jsonl"}, {"builtin": "lowercase_word", "n": 5}],
                    "limit": 3,
                    "max_new_tokens": 4,
                    "batch_size": 2,
                },
            }
        )
    )
    (run_dir / "wandb_run_id").write_text("abc123\n")
    (run_dir / "mixture.json").write_text(json.dumps({"tasks": {"rev": {"rate": 1.0}}}))
    return run_dir, ckpt


@pytest.fixture()
def fake_consolidated(model_dir, monkeypatch):
    """Stand-in for DeepSpeed consolidation: the tiny HF model, as if rebuilt from the checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ift import export

    seen = []

    def load(ckpt, dtype=None):
        seen.append(ckpt)
        return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)

    monkeypatch.setattr(export, "load_consolidated", load)
    return seen


def test_run_dir_uses_its_config_writes_into_the_run_and_logs_to_its_wandb_run(
    task_dir, tmp_path, fake_consolidated, monkeypatch
):
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run_dir, ckpt = make_run_dir(tmp_path, task_dir)
    res = ev.evaluate(str(run_dir))
    assert fake_consolidated == [str(ckpt)]
    assert res["name"] == "eval_0shot"
    assert res["files"]["json"] == str(run_dir / "eval" / "eval_0shot.json")
    assert os.path.isfile(run_dir / "eval" / "eval_0shot.md")
    assert list(res["tasks"]) == ["rev", "lowercase_word"]
    assert all(s["n"] == 3 for s in res["tasks"].values())  # eval.limit from the run config
    assert res["settings"] == {
        "shots": 0,
        "max_new_tokens": 4,
        "limit": 3,
        "batch_size": 2,
        "tasks": ["rev.jsonl", "builtin:lowercase_word"],
    }
    assert res["checkpoint"] == str(ckpt) and res["step"] == 7

    assert wandb.inits == [
        {"id": "abc123", "resume": "allow", "mode": "offline", "dir": str(run_dir), "project": "proj", "entity": None}
    ]
    assert wandb.finished == 1 and res["wandb"] is True
    (logged,) = wandb.logged
    assert logged["eval/step"] == 7
    assert logged["eval/eval_0shot/mean/rougeL"] == res["mean"]["rougeL"]
    assert logged["eval/eval_0shot/rev/exact_match_cased"] == res["tasks"]["rev"]["exact_match_cased"]

    # ift compare reads what ift eval wrote
    loaded = load_run(str(run_dir))
    assert loaded["eval_name"] == "eval_0shot" and loaded["scores"] == res["tasks"]
    assert loaded["settings"] == res["settings"] and loaded["model"] == str(run_dir)

    # a checkpoint folder belongs to its run; explicit arguments beat the run's eval section
    res = ev.evaluate(str(ckpt), shots=2, limit=1, wandb=False)
    assert res["files"]["json"] == str(run_dir / "eval" / "eval_2shot.json")
    assert all(s["n"] == 1 for s in res["tasks"].values()) and len(wandb.inits) == 1


def test_run_dir_with_wandb_disabled_logs_nothing(task_dir, tmp_path, fake_consolidated, monkeypatch):
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run_dir, _ = make_run_dir(tmp_path, task_dir, mode="disabled")
    res = ev.evaluate(str(run_dir), tasks="builtin:heldout", limit=1, out=str(tmp_path / "elsewhere"))
    assert wandb.inits == [] and res["wandb"] is False
    assert res["name"] == "heldout_0shot" and (tmp_path / "elsewhere" / "heldout_0shot.json").is_file()
    assert not (run_dir / "eval").exists()


# --------------------------------------------------------------------------- at scale: buckets, speed, backends


def test_plan_batches_and_padding_fraction():
    lengths = [3, 9, 4, 8, 2, 9]
    assert gen.plan_batches(lengths, 2) == [[1, 5], [3, 2], [0, 4]]  # longest first, ties by index
    assert gen.plan_batches(lengths, 4, bucket=False) == [[0, 1, 2, 3], [4, 5]]
    # in order: 4 x 9 + 2 x 9 slots for 35 tokens; bucketed: 2 x 9 + 2 x 8 + 2 x 3
    assert gen.padding_fraction(lengths, gen.plan_batches(lengths, 4, bucket=False)) == pytest.approx(1 - 35 / 54)
    assert gen.padding_fraction(lengths, gen.plan_batches(lengths, 2)) == pytest.approx(1 - 35 / 40)
    assert gen.padding_fraction([5], [[0]]) == 0.0


def test_bucketing_keeps_predictions_and_reports_speed(model_dir, tmp_path):
    words = [
        "a",
        "green house stone wall music box",
        "river",
        "cloud light",
        "bread",
        "music box table water",
        "stone",
        "apple river cloud",
    ]
    write_jsonl(tmp_path / "mixed" / "rev.jsonl", sni_rows(words))
    write_jsonl(tmp_path / "mixed" / "rev2.jsonl", sni_rows(list(reversed(words))))
    spec = tmp_path / "mixed" / "*.jsonl"
    plain = run(model_dir, tmp_path, spec, batch_size=3, max_new_tokens=8, bucket=False, name="plain")
    bucketed = run(model_dir, tmp_path, spec, batch_size=3, max_new_tokens=8, name="bucketed")
    one_by_one = run(model_dir, tmp_path, spec, batch_size=1, max_new_tokens=8, name="one")
    preds = [(e["task"], e["index"], e["prediction"]) for e in bucketed["examples"]]
    assert preds == [(e["task"], e["index"], e["prediction"]) for e in plain["examples"]]
    assert preds == [(e["task"], e["index"], e["prediction"]) for e in one_by_one["examples"]]
    assert bucketed["tasks"] == plain["tasks"]
    assert bucketed["speed"]["padding_frac"] < plain["speed"]["padding_frac"]
    assert one_by_one["speed"]["padding_frac"] == 0.0
    sp = bucketed["speed"]
    assert sp["processes"] == 1 and sp["backend"] == "hf" and sp["examples_per_s"] > 0
    assert 0 < sp["generated_tokens"] <= 16 * 8 and 0 <= sp["decode_waste"] < 1
    assert sp["tokens_per_s"] == pytest.approx(sp["generated_tokens"] / sp["seconds"])


def test_vllm_backend_without_vllm_is_one_error(model_dir, task_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed (it never is on CPU)
    with pytest.raises(UserError, match=r"eval.backend vllm needs vLLM.*pip install vllm"):
        run(model_dir, tmp_path, task_dir / "rev.jsonl", backend="vllm")
    with pytest.raises(UserError, match="eval.backend: must be hf or vllm, got 'tgi'"):
        run(model_dir, tmp_path, task_dir / "rev.jsonl", backend="tgi")


def test_generate_every_config_checks(tmp_path):
    from ift.config import ConfigError, load_config

    assert load_config(None, ["eval.generate_every=5"]).eval.generate_every == 5
    with pytest.raises(ConfigError, match="eval.generate_every: must be >= 0"):
        load_config(None, ["eval.generate_every=-1"])
    with pytest.raises(ConfigError, match="eval.backend: must be hf or vllm"):
        load_config(None, ["eval.backend=tgi"])
    with pytest.raises(ConfigError, match="eval.generate_every: cannot run with train.sequence_parallel > 1"):
        load_config(None, ["eval.generate_every=5", "train.sequence_parallel=2"])
