"""Tests for loading task collections into canonical per-task datasets (ift.data.sources)."""

import json
import os

import datasets
import pytest

from ift.config import DataConfig, TaskSource
from ift.data import builtin
from ift.data.sources import CANONICAL, Task, load_source, load_tasks
from ift.errors import UserError

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
    {"instruction": "Say hello.", "output": "hello"},  # no input: optional
    {"instruction": "Reverse the word.", "input": "cat", "output": "tac"},
]


def write_jsonl(path, records, blank_lines=()):
    with open(path, "w") as f:
        for i, r in enumerate(records):
            if i in blank_lines:
                f.write("\n")
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


def load(tmp_path, on_bad_record="error", **source):
    return load_tasks(DataConfig(root=str(tmp_path), tasks=[TaskSource(**source)], on_bad_record=on_bad_record))


def only(tasks) -> Task:
    assert len(tasks) == 1, [t.name for t in tasks]
    return tasks[0]


def rows(task):
    return task.dataset.to_list()


def user_error(tmp_path, on_bad_record="error", **source):
    with pytest.raises(UserError) as exc:
        load(tmp_path, on_bad_record=on_bad_record, **source)
    return str(exc.value)


# --------------------------------------------------------------------------- schemas


def test_alpaca_jsonl_input_optional(tmp_path):
    write_jsonl(tmp_path / "arith.jsonl", ALPACA)
    task = only(load(tmp_path, path="arith.jsonl"))
    assert task.name == "arith" and task.schema == "alpaca"
    assert task.source == str(tmp_path / "arith.jsonl")
    assert len(task) == 3 and not task.skipped
    assert set(task.dataset.column_names) == set(CANONICAL)
    r = rows(task)
    assert r[0] == {
        "task": "arith",
        "instruction": "Add the numbers.",
        "input": "2 3",
        "output": "5",
        "references": ["5"],
        "rationale": "",
        "category": "",
        "messages": [],
    }
    assert r[1]["input"] == "" and r[1]["output"] == "hello"


def test_sni_flat_jsonl(tmp_path):
    recs = [
        {
            "definition": "Answer yes or no.",
            "input": "Is the sky blue?",
            "output": "yes",
            "references": ["yes", "Yes"],
            "category": "qa",
        },
        {
            "definition": "Answer yes or no.",
            "input": "Is fire cold?",
            "output": "no",
            "references": ["no"],
            "category": "qa",
        },
    ]
    write_jsonl(tmp_path / "yesno.jsonl", recs)
    task = only(load(tmp_path, path="yesno.jsonl"))
    assert task.schema == "sni"
    r = rows(task)
    assert r[0]["instruction"] == "Answer yes or no." and r[0]["input"] == "Is the sky blue?"
    assert r[0]["output"] == "yes" and r[0]["references"] == ["yes", "Yes"]
    assert r[0]["category"] == "qa"
    assert r[1]["references"] == ["no"]


def test_original_sni_task_file(tmp_path):
    task_json = {
        "Contributors": ["someone"],
        "Source": ["somewhere"],
        "Categories": ["Sentiment Analysis"],
        "Definition": ["Classify the sentiment of the review as positive or negative."],
        "Positive Examples": [{"input": "Great film.", "output": "positive", "explanation": "praise"}],
        "Negative Examples": [],
        "Instances": [
            {"id": "task001-1", "input": "I loved it.", "output": ["positive"]},
            {"id": "task001-2", "input": "Dull and long.", "output": ["negative", "neg"]},
        ],
    }
    (tmp_path / "task001_sentiment.json").write_text(json.dumps(task_json, indent=1))
    task = only(load(tmp_path, path="task001_sentiment.json"))
    assert task.name == "task001_sentiment" and task.schema == "sni"
    r = rows(task)
    assert len(r) == 2
    assert r[0]["instruction"] == "Classify the sentiment of the review as positive or negative."
    assert r[0]["input"] == "I loved it." and r[0]["output"] == "positive"
    assert r[0]["category"] == "Sentiment Analysis"
    assert r[1]["output"] == "negative" and r[1]["references"] == ["negative", "neg"]
    # Positive Examples are exemplars, not training instances
    assert "Great film." not in [x["input"] for x in r]


def test_sni_task_file_missing_instances(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"Definition": ["Do it."], "Categories": ["x"]}))
    msg = user_error(tmp_path, path="t.json")
    assert msg == f"{tmp_path / 't.json'}: Super-NaturalInstructions task file has no 'Instances'"


def test_messages_jsonl_keeps_every_turn(tmp_path):
    recs = [
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "times 3?"},
                {"role": "assistant", "content": "12"},
            ]
        },
        {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]},
    ]
    write_jsonl(tmp_path / "chat.jsonl", recs)
    task = only(load(tmp_path, path="chat.jsonl"))
    assert task.schema == "messages"
    r = rows(task)
    assert [x["output"] for x in r] == ["Paris", "12", "hi"]
    # earlier turns form the prompt (system prompt included), never the target
    assert "You are terse." in r[0]["instruction"] and "Capital of France?" in r[0]["instruction"]
    assert "Paris" not in r[0]["instruction"]
    assert "2+2?" in r[1]["instruction"] and "4" in r[1]["instruction"] and "times 3?" in r[1]["instruction"]
    assert "12" not in r[1]["instruction"]
    assert r[2]["instruction"] == "Say hi"
    # every turn is kept, system prompt included, for the conversation's rendering and masks
    assert r[1]["messages"] == recs[1]["messages"] and r[0]["messages"] == recs[0]["messages"]


def test_sharegpt_conversations_map_roles(tmp_path):
    recs = [
        {
            "conversations": [
                {"from": "system", "value": "Be brief."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
                {"from": "human", "value": "Bye"},
                {"from": "gpt", "value": "Bye!"},
                {"from": "human", "value": "(no reply)"},
            ]
        },
        {"id": "x", "conversations": [{"from": "user", "value": "Q"}, {"from": "assistant", "value": "A"}]},
    ]
    write_jsonl(tmp_path / "share.jsonl", recs)
    task = only(load(tmp_path, path="share.jsonl"))
    assert task.schema == "sharegpt"
    r = rows(task)
    # roles mapped; the trailing user turn, which no reply follows, is left out
    assert r[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Bye!"},
    ]
    assert r[0]["output"] == "Bye!" and r[1]["messages"][1] == {"role": "assistant", "content": "A"}


def test_sharegpt_unknown_role_is_named(tmp_path):
    recs = [
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "function_call", "value": "{}"}]},
    ]
    path = write_jsonl(tmp_path / "share.jsonl", recs)
    msg = user_error(tmp_path, path="share.jsonl")
    assert msg.startswith(f"{path}:2: conversations[1].from is 'function_call', expected one of"), msg


def test_messages_without_assistant_turn_is_bad(tmp_path):
    recs = [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": [{"role": "user", "content": "Anyone?"}]},
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", recs)
    msg = user_error(tmp_path, path="chat.jsonl")
    assert msg.startswith(f"{path}:2: messages: no assistant turn")


def test_prompt_completion(tmp_path):
    write_jsonl(
        tmp_path / "pc.jsonl",
        [{"prompt": "The capital of Italy is", "completion": "Rome"}, {"prompt": "1 + 1 =", "completion": "2"}],
    )
    task = only(load(tmp_path, path="pc.jsonl"))
    assert task.schema == "prompt_completion"
    r = rows(task)
    assert r[0]["instruction"] == "The capital of Italy is" and r[0]["input"] == ""
    assert r[0]["output"] == "Rome" and r[0]["references"] == ["Rome"]


def test_json_array_of_records(tmp_path):
    (tmp_path / "arr.json").write_text(json.dumps(ALPACA, indent=2))
    task = only(load(tmp_path, path="arr.json"))
    assert task.schema == "alpaca" and len(task) == 3
    assert [x["output"] for x in rows(task)] == ["5", "hello", "tac"]


def test_parquet_file(tmp_path):
    recs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for r in ALPACA]
    datasets.Dataset.from_list(recs).to_parquet(str(tmp_path / "pq.parquet"))
    task = only(load(tmp_path, path="pq.parquet"))
    assert task.name == "pq" and task.schema == "alpaca"
    assert [x["input"] for x in rows(task)] == ["2 3", "", "cat"]


def test_csv_file(tmp_path):
    recs = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for r in ALPACA]
    datasets.Dataset.from_list(recs).to_csv(str(tmp_path / "c.csv"), index=False)
    task = only(load(tmp_path, path="c.csv"))
    assert task.name == "c" and task.schema == "alpaca"
    r = rows(task)
    assert [x["output"] for x in r] == ["5", "hello", "tac"]
    assert r[1]["input"] == ""  # an empty CSV cell is an empty input, not "None" or "nan"


def test_fields_mapping_renames_columns(tmp_path):
    recs = [
        {"question": "What is 2+2?", "context": "math", "answer": "4", "why": "2 and 2 make 4"},
        {"question": "Color of grass?", "context": "", "answer": "green", "why": ""},
    ]
    write_jsonl(tmp_path / "qa.jsonl", recs)
    task = only(
        load(
            tmp_path,
            path="qa.jsonl",
            fields={"instruction": "question", "input": "context", "output": "answer", "rationale": "why"},
        )
    )
    assert task.schema == "alpaca"
    r = rows(task)
    assert r[0]["instruction"] == "What is 2+2?" and r[0]["input"] == "math"
    assert r[0]["output"] == "4" and r[0]["rationale"] == "2 and 2 make 4"


def test_fields_mapping_shadows_an_existing_column(tmp_path):
    # the file has both `output` (ignored) and `gold`; fields maps output -> gold
    write_jsonl(tmp_path / "t.jsonl", [{"instruction": "Pick.", "output": "wrong", "gold": "right"}])
    task = only(load(tmp_path, path="t.jsonl", fields={"output": "gold"}))
    assert rows(task)[0]["output"] == "right"


def test_fields_mapping_to_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "x", "output": "y"}])
    msg = user_error(tmp_path, path="t.jsonl", fields={"output": "answer"})
    assert msg.startswith(f"{path}: fields maps to column(s) ['answer'] that the data does not have")


def test_directory_gives_one_task_per_file(tmp_path):
    d = tmp_path / "tasks"
    d.mkdir()
    write_jsonl(d / "b_task.jsonl", ALPACA[:2])
    write_jsonl(d / "a_task.jsonl", ALPACA)
    (d / "notes.txt").write_text("not data")
    (d / "a_task.examples.json").write_text(json.dumps(ALPACA))  # exemplar side files are not tasks
    tasks = load(tmp_path, path="tasks")
    assert [t.name for t in tasks] == ["a_task", "b_task"]
    assert [len(t) for t in tasks] == [3, 2]
    assert all(set(t.dataset["task"]) == {t.name} for t in tasks)


def test_glob_gives_one_task_per_file(tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    write_jsonl(d / "one.jsonl", ALPACA)
    write_jsonl(d / "two.jsonl", [{"prompt": "p", "completion": "c"}])
    write_jsonl(d / "skip.txt", ALPACA)
    tasks = load(tmp_path, path="mixed/*.jsonl")
    assert [(t.name, t.schema, len(t)) for t in tasks] == [("one", "alpaca", 3), ("two", "prompt_completion", 1)]


def test_explicit_name_for_one_file(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", ALPACA)
    assert only(load(tmp_path, path="t.jsonl", name="renamed")).name == "renamed"


def test_explicit_name_with_several_files_is_an_error(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ALPACA)
    write_jsonl(tmp_path / "b.jsonl", ALPACA)
    msg = user_error(tmp_path, path="*.jsonl", name="one")
    assert msg == "data.tasks[0].name: 'one' names one task but the path matches 2 files"


def test_explicit_schema_override(tmp_path):
    # both prompt/completion and instruction/output columns: auto-detection picks prompt_completion
    recs = [{"prompt": "P", "completion": "C", "instruction": "I", "output": "O"}]
    write_jsonl(tmp_path / "both.jsonl", recs)
    assert only(load(tmp_path, path="both.jsonl")).schema == "prompt_completion"
    task = only(load(tmp_path, path="both.jsonl", schema="alpaca"))
    assert task.schema == "alpaca"
    assert rows(task)[0]["instruction"] == "I" and rows(task)[0]["output"] == "O"


def test_explicit_schema_missing_required_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"instruction": "x", "output": "y"}])
    msg = user_error(tmp_path, path="t.jsonl", schema="sni")
    assert msg.startswith(f"{path}: schema 'sni' needs field 'definition', which no record has")


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_hub_source_on_a_local_folder(tmp_path, fmt):
    folder = tmp_path / "my_hub_ds"
    folder.mkdir()
    recs = [{"instruction": "Echo.", "input": str(i), "output": str(i)} for i in range(4)]
    if fmt == "parquet":
        datasets.Dataset.from_list(recs).to_parquet(str(folder / "train.parquet"))
    else:
        write_jsonl(folder / "train.jsonl", recs)
    task = only(load_tasks(DataConfig(tasks=[TaskSource(hub=str(folder))])))
    assert task.name == "my_hub_ds" and task.schema == "alpaca" and task.source == str(folder)
    assert [x["output"] for x in rows(task)] == ["0", "1", "2", "3"]
    named = only(load_tasks(DataConfig(tasks=[TaskSource(hub=str(folder) + "/", name="echo")])))
    assert named.name == "echo"


def test_hub_source_bad_split(tmp_path):
    folder = tmp_path / "hubds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ALPACA)
    msg = user_error(tmp_path, hub=str(folder), split="validation")
    assert msg.startswith(f"data.tasks[0].hub: cannot load '{folder}' (split validation):")


def test_builtin_source():
    tasks = load_tasks(DataConfig(tasks=[TaskSource(builtin="train", n=7)]), seed=3)
    assert [t.name for t in tasks] == list(builtin.TRAIN_TASKS)
    t0 = tasks[0]
    assert t0.schema == "builtin" and t0.source == "builtin" and len(t0) == 7
    assert set(CANONICAL) <= set(t0.dataset.column_names)
    assert rows(t0) == [{**r, "messages": []} for r in builtin.examples(t0.name, 7, 3)]
    one = only(load_tasks(DataConfig(tasks=[TaskSource(builtin="min_of_list", n=2)])))
    assert one.name == "min_of_list" and len(one) == 2


def test_builtin_unknown_split():
    with pytest.raises(UserError) as exc:
        load_tasks(DataConfig(tasks=[TaskSource(builtin="validation")]))
    assert str(exc.value).startswith("data.tasks[0].builtin: unknown builtin split or task 'validation'")


def test_eval_section_name_in_errors():
    with pytest.raises(UserError) as exc:
        load_tasks(DataConfig(), sources=[TaskSource(builtin="nope")], section="eval.tasks")
    assert str(exc.value).startswith("eval.tasks[0].builtin:")


# --------------------------------------------------------------------------- bad input


def test_malformed_jsonl_line_names_file_line_and_json_error(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [ALPACA[0], ALPACA[1], '{"instruction": "x", "output": ', ALPACA[2]])
    msg = user_error(tmp_path, path="bad.jsonl")
    assert msg.startswith(f"{path}:3: invalid JSON:")
    assert "column" in msg


def test_malformed_line_among_good_files(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", ALPACA)
    path = write_jsonl(tmp_path / "worse.jsonl", [ALPACA[0], "not json at all"])
    msg = user_error(tmp_path, path="*.jsonl")
    assert msg.startswith(f"{path}:2: invalid JSON: Expecting value")


def test_missing_output_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [ALPACA[0], ALPACA[2], {"instruction": "No answer here."}])
    msg = user_error(tmp_path, path="t.jsonl")
    assert msg.startswith(f"{path}:3: missing field 'output'")


def test_line_numbers_count_blank_lines(tmp_path):
    # a blank line before the bad record: the location must be the physical line in the file
    path = write_jsonl(tmp_path / "t.jsonl", [ALPACA[0], ALPACA[2], {"instruction": "No answer."}], blank_lines=(1,))
    msg = user_error(tmp_path, path="t.jsonl")
    assert msg.startswith(f"{path}:4: missing field 'output'")


def test_empty_output_is_an_error_by_default(tmp_path):
    recs = [ALPACA[0], {"instruction": "Blank.", "input": "x", "output": "   "}, ALPACA[2]]
    path = write_jsonl(tmp_path / "t.jsonl", recs)
    msg = user_error(tmp_path, path="t.jsonl")
    assert msg.startswith(f"{path}:2: empty output")
    assert "1 bad record(s)" in msg and "data.on_bad_record=skip" in msg


def test_bad_records_skipped_and_counted(tmp_path):
    recs = [
        ALPACA[0],
        {"instruction": "Blank.", "input": "x", "output": ""},
        ALPACA[1],
        {"instruction": "", "input": "", "output": "orphan"},
        {"instruction": "Also blank.", "output": ""},
        ALPACA[2],
    ]
    write_jsonl(tmp_path / "t.jsonl", recs)
    task = only(load(tmp_path, on_bad_record="skip", path="t.jsonl"))
    assert len(task) == 3
    assert [x["output"] for x in rows(task)] == ["5", "hello", "tac"]
    assert task.skipped == {"empty output": 2, "empty prompt (no instruction and no input)": 1}


def test_neither_instruction_nor_input_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [ALPACA[0], {"instruction": " ", "input": "", "output": "y"}])
    msg = user_error(tmp_path, path="t.jsonl")
    assert msg.startswith(f"{path}:2: empty prompt (no instruction and no input)")


def test_bad_record_in_parquet_names_record_number(tmp_path):
    recs = [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]
    path = str(tmp_path / "t.parquet")
    datasets.Dataset.from_list(recs).to_parquet(path)
    msg = user_error(tmp_path, path="t.parquet")
    assert msg.startswith(f"{path} record 2: empty output")


def test_undetectable_schema(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}])
    msg = user_error(tmp_path, path="odd.jsonl")
    assert msg.startswith(f"{path}: cannot detect the schema from columns ['answer', 'question']")
    assert "`schema:`" in msg and "`fields:`" in msg


def test_nonexistent_path(tmp_path):
    msg = user_error(tmp_path, path="nowhere/data.jsonl")
    assert msg == f"data.tasks[0].path: no such file or directory: {tmp_path / 'nowhere' / 'data.jsonl'}"


def test_glob_matching_nothing(tmp_path):
    (tmp_path / "d").mkdir()
    msg = user_error(tmp_path, path="d/*.jsonl")
    assert msg == f"data.tasks[0].path: no .jsonl/.json/.parquet/.csv files match {tmp_path / 'd' / '*.jsonl'}"


def test_duplicate_task_names(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    write_jsonl(tmp_path / "x" / "same.jsonl", ALPACA)
    write_jsonl(tmp_path / "y" / "same.jsonl", ALPACA)
    data = DataConfig(root=str(tmp_path), tasks=[TaskSource(path="x/same.jsonl"), TaskSource(path="y/same.jsonl")])
    with pytest.raises(UserError) as exc:
        load_tasks(data)
    msg = str(exc.value)
    assert msg.startswith("data.tasks: task name 'same' comes from both")
    assert os.path.join("x", "same.jsonl") in msg and os.path.join("y", "same.jsonl") in msg
    assert "`name:`" in msg


def test_duplicate_with_builtin_name(tmp_path):
    write_jsonl(tmp_path / "reverse_word.jsonl", ALPACA)
    data = DataConfig(
        root=str(tmp_path), tasks=[TaskSource(builtin="reverse_word", n=3), TaskSource(path="reverse_word.jsonl")]
    )
    with pytest.raises(UserError, match="task name 'reverse_word' comes from both builtin and"):
        load_tasks(data)


def test_load_source_directly_uses_where(tmp_path):
    with pytest.raises(UserError) as exc:
        load_source(TaskSource(path="missing.jsonl"), str(tmp_path), "error", 0, "eval.tasks[2]")
    assert str(exc.value).startswith("eval.tasks[2].path: no such file or directory")


# --------------------------------------------------------------------------- canonical column types


def test_numeric_values_become_canonical_strings(tmp_path):
    # JSON numbers are common targets (arithmetic, counts); canonical columns are always text
    write_jsonl(
        tmp_path / "num.jsonl",
        [{"instruction": "Add.", "input": 2, "output": 5}, {"instruction": "Add.", "input": 3, "output": 7}],
    )
    task = only(load(tmp_path, path="num.jsonl"))
    for col in ("instruction", "input", "output", "rationale", "category", "task"):
        assert task.dataset.features[col] == datasets.Value("string"), col
    r = rows(task)
    assert r[0]["output"] == "5" and r[0]["input"] == "2"
    assert r[0]["references"] == ["5"]


def test_csv_cells_are_read_as_text(tmp_path):
    path = tmp_path / "codes.csv"
    path.write_text("instruction,input,output\nGive the agent number.,,007\nHalf of three.,,1.50\n")
    task = only(load(tmp_path, path="codes.csv"))
    r = rows(task)
    assert [x["output"] for x in r] == ["007", "1.50"]
    assert [x["input"] for x in r] == ["", ""]  # an all-empty column is empty text, not "nan"/"None"


# --------------------------------------------------------------------------- tasks from a column


def mixed_records(source_values):
    return [
        {"instruction": f"Do {s}.", "input": str(i), "output": f"{s}-{i}", "source": s}
        for i, s in enumerate(source_values)
    ]


def test_task_field_splits_one_source_into_tasks(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", mixed_records(["flan", "cot", "flan", "sni", "cot", "flan"]))
    write_jsonl(tmp_path / "b.jsonl", mixed_records(["sni", "dolly"]))
    tasks = load(tmp_path, path="*.jsonl", task_field="source")
    # one task per distinct value over all the files, in order of first appearance
    assert [t.name for t in tasks] == ["flan", "cot", "sni", "dolly"]
    assert [len(t) for t in tasks] == [3, 2, 2, 1]
    by_name = {t.name: rows(t) for t in tasks}
    assert [r["output"] for r in by_name["flan"]] == ["flan-0", "flan-2", "flan-5"]
    assert [r["output"] for r in by_name["sni"]] == ["sni-3", "sni-0"]  # a.jsonl's, then b.jsonl's
    assert all(r["task"] == name for name, rs in by_name.items() for r in rs)
    # with a name, the tasks are prefixed, so two split sources cannot collide
    named = load(tmp_path, path="a.jsonl", task_field="source", name="mix")
    assert [t.name for t in named] == ["mix/flan", "mix/cot", "mix/sni"]
    assert {r["task"] for r in rows(named[0])} == {"mix/flan"}


def test_task_field_missing_value_and_column_are_named(tmp_path):
    recs = mixed_records(["a", "b"]) + [{"instruction": "x", "output": "y"}]
    path = write_jsonl(tmp_path / "t.jsonl", recs)
    assert user_error(tmp_path, path="t.jsonl", task_field="source").startswith(
        f"{path}:3: task_field 'source' is missing"
    )
    tasks = load(tmp_path, on_bad_record="skip", path="t.jsonl", task_field="source")
    assert [t.name for t in tasks] == ["a", "b"] and sum(sum(t.skipped.values()) for t in tasks) == 1
    msg = user_error(tmp_path, path="t.jsonl", task_field="dataset")
    assert msg.startswith(f"{path}: task_field 'dataset' is not a column of the data"), msg


def test_task_field_tasks_mix_like_any_task(tmp_path):
    from ift.config import GroupConfig, MixtureConfig
    from ift.data.mixture import task_rates

    write_jsonl(tmp_path / "a.jsonl", mixed_records(["flan"] * 6 + ["cot"] * 2 + ["sni"] * 4))
    tasks = load(tmp_path, path="a.jsonl", task_field="source", name="m")
    sizes = {t.name: len(t) for t in tasks}
    capped = task_rates(MixtureConfig(strategy="proportional", cap=4), sizes)
    assert capped == pytest.approx({"m/flan": 0.4, "m/cot": 0.2, "m/sni": 0.4})
    grouped = task_rates(
        MixtureConfig(
            groups=[
                GroupConfig(name="f", weight=3, tasks=["m/f*"]),
                GroupConfig(name="rest", weight=1, tasks=["m/[cs]*"]),
            ]
        ),
        sizes,
    )
    assert grouped["m/flan"] == pytest.approx(0.75) and grouped["m/cot"] + grouped["m/sni"] == pytest.approx(0.25)
