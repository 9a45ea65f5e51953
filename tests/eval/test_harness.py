"""`ift eval --harness`: lm-evaluation-harness on a tiny model with a local task (a YAML reading a
local JSONL; no hub access), its numbers checked by hand and carried into `ift compare`'s report."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("lm_eval")  # the harness extra (the test extra installs it)

from helpers import save_tiny_llama  # noqa: E402

from ift import cli  # noqa: E402
from ift.eval.report import write_comparison  # noqa: E402

ROWS = [
    {"question": "Which word is a color?", "choices": ["green", "table", "river"], "label": 0},
    {"question": "Which is a number?", "choices": ["apple", "seven", "cloud"], "label": 1},
    {"question": "Which is a fruit?", "choices": ["stone", "light", "apple"], "label": 2},
    {"question": "Which is wet?", "choices": ["water", "bread", "stone"], "label": 0},
]


@pytest.fixture()
def model_dir(tmp_path):
    texts = [f"Question: {r['question']}\nAnswer: " + " ".join(r["choices"]) for r in ROWS]
    return save_tiny_llama(tmp_path / "model", texts * 3, initializer_range=0.5, max_position_embeddings=256)


def write_task(folder):
    folder.mkdir(parents=True)
    (folder / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / "mc.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
""")
    return folder


def by_hand(model_dir) -> float:
    """acc of the harness's multiple choice: the choice of the highest log-likelihood of ' <choice>'."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    right = 0
    for r in ROWS:
        context = f"Question: {r['question']}\nAnswer:"
        lls = []
        for choice in r["choices"]:
            ctx, whole = tok(context)["input_ids"], tok(context + " " + choice)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            lls.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        right += max(range(len(lls)), key=lls.__getitem__) == r["label"]
    return right / len(ROWS)


def test_harness_on_a_local_task_reaches_the_report(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tasks = write_task(tmp_path / "harness_tasks")
    run = tmp_path / "runs" / "r"  # a run directory for the report: its mixture and one ift evaluation
    (run / "eval").mkdir(parents=True)
    (run / "mixture.json").write_text(json.dumps({"tasks": {"rev": {"rate": 1.0}}}))
    (run / "eval" / "eval_0shot.json").write_text(
        json.dumps({"name": "eval_0shot", "tasks": {"rev": {"rougeL": 50.0, "exact_match": 40.0, "n": 4}}})
    )

    args = cli.build_parser().parse_args(
        [
            "eval",
            str(model_dir),
            "--harness",
            "tiny_mc",
            "--harness-include",
            str(tasks),
            "--out",
            str(run / "eval"),
            "--batch-size",
            "2",
        ]
    )
    args.argv = []
    result = cli.cmd_eval(args)
    saved = json.loads((run / "eval" / "harness.json").read_text())
    assert saved["tasks"] == result["tasks"] and set(saved["tasks"]) == {"tiny_mc"}
    acc = saved["tasks"]["tiny_mc"]["acc"]
    assert acc == pytest.approx(by_hand(model_dir))
    assert saved["n_samples"]["tiny_mc"]["effective"] == len(ROWS)
    assert "tiny_mc: acc" in capsys.readouterr().out

    report = write_comparison([str(run)], str(tmp_path / "cmp"))
    md = (tmp_path / "cmp" / "COMPARISON.md").read_text()
    assert "## Standard benchmarks (lm-evaluation-harness)" in md
    assert f"| tiny_mc | acc | {acc:.4f} |" in md
    assert report["harness"] == {"r": saved["tasks"]}


def test_harness_errors(model_dir, tmp_path):
    from ift.errors import UserError
    from ift.eval.harness import run_harness

    with pytest.raises(UserError, match="unknown lm-eval task.*no_such_task"):
        run_harness(str(model_dir), "no_such_task", out=str(tmp_path))
    with pytest.raises(UserError, match="--harness-include .*: not a folder"):
        run_harness(str(model_dir), "tiny_mc", include=str(tmp_path / "nowhere"), out=str(tmp_path))
    with pytest.raises(UserError, match="--out DIR is required"):
        run_harness(str(model_dir), "tiny_mc", include=str(write_task(tmp_path / "t")))
