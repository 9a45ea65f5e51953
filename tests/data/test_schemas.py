"""The schema table (ift.data.schemas): each normalizer on its own, then the shared checks."""

from __future__ import annotations

import pytest

from ift.data import schemas
from ift.data.schemas import NORMALIZERS, REQUIRED, Record, record_problem, to_canonical


def reader(record: dict):
    return lambda col, default="": record.get(col, default)


def test_every_schema_has_a_normalizer_and_its_required_fields():
    assert set(NORMALIZERS) == set(REQUIRED)


def test_alpaca():
    r = schemas.alpaca(reader({"instruction": "Add.", "input": "2 3", "output": "5"}))
    assert (r.instruction, r.input, r.output, r.messages) == ("Add.", "2 3", "5", [])
    assert schemas.alpaca(reader({"instruction": "Add.", "input": None, "output": "5"})).input == ""
    assert schemas.alpaca(reader({"instruction": "Add."})).output is None  # missing: left to the checks


def test_sni_names_the_definition():
    r = schemas.sni(reader({"definition": "Reverse.", "input": "ab", "output": "ba"}))
    assert (r.instruction, r.input, r.output, r.instruction_field) == ("Reverse.", "ab", "ba", "definition")
    assert record_problem(schemas.sni(reader({"output": "ba"}))) == "missing field 'definition'"


def test_prompt_completion_names_its_own_fields():
    r = schemas.prompt_completion(reader({"prompt": "Q: 1+1?", "completion": "2"}))
    assert (r.instruction, r.input, r.output) == ("Q: 1+1?", "", "2")
    assert record_problem(schemas.prompt_completion(reader({"prompt": "Q"}))) == "missing field 'completion'"
    assert record_problem(schemas.prompt_completion(reader({"completion": "2"}))) == "missing field 'prompt'"


def test_messages_summarize_the_conversation():
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]
    r = schemas.messages(reader({"messages": turns}))
    assert r.messages == turns and r.output == "Hello" and r.bad == ""
    assert r.instruction == "system: Be brief.\nuser: Hi"  # the turns before the last reply
    one = schemas.messages(reader({"messages": turns[1:]}))
    assert one.instruction == "Hi"  # a single prior turn is the instruction itself


def test_sharegpt_maps_from_and_value():
    conv = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    r = schemas.sharegpt(reader({"conversations": conv}))
    assert r.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert (r.instruction, r.output) == ("Hi", "Hello")


def test_a_bad_conversation_is_the_record_problem():
    r = schemas.messages(reader({"messages": [{"role": "user", "content": "Hi"}]}))
    assert r.bad and record_problem(r) == r.bad


@pytest.mark.parametrize(
    "record, problem",
    [
        (Record("Do it.", "", "ok"), ""),
        (Record("Do it.", "", None), "missing field 'output'"),
        (Record("Do it.", "", float("nan")), "field 'output' is not a text value (nan)"),
        (Record("Do it.", ["x"], "ok"), "field 'input' is not text (a list)"),
        (Record("Do it.", "", "  "), "empty output"),
        (Record("", "", "ok"), "empty prompt (no instruction and no input)"),
        (Record("", "some input", "ok"), ""),
        (Record("Do it.", "", 42), ""),  # a number is its text
    ],
)
def test_shared_checks(record, problem):
    assert record_problem(record) == problem


def test_to_canonical_runs_the_table_over_a_batch():
    batch = {
        "instruction": ["Add.", "Add."],
        "input": ["2 3", None],
        "output": ["5", None],
        "category": ["math", "math"],
    }
    out = to_canonical(batch, "alpaca", "add")
    assert out["task"] == ["add", "add"] and out["output"] == ["5", ""] and out["category"] == ["math", "math"]
    assert out["references"] == [["5"], []] and out["_bad"] == ["", "missing field 'output'"]
