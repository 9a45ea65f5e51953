"""Malformed input files: every file a task reads, and the config file, fails with one `error:`
naming the file (and line where there is one), or is handled, for each member of the family:

| input                                         | decision                                             |
|-----------------------------------------------|------------------------------------------------------|
| invalid UTF-8 (JSONL, JSON, CSV)              | error `file:line` (pyarrow would replace the bytes)  |
| a JSONL line that is JSON but not an object   | error `file:line`                                    |
| duplicate keys in a record                    | error `file:line` (which value is meant is ambiguous)|
| byte-order mark (JSONL, CSV, config)          | handled: ignored                                     |
| mixed line endings (\\n and \\r\\n)              | handled                                              |
| a very long line (several MB)                 | handled                                              |
| NaN / inf in a parquet text column            | bad record `file record N`: never the text "nan"     |
| numbers / booleans in a text column           | handled: their text ("42")                           |
| lists / objects in a text column              | bad record                                           |
| a null nested in a chat message's content     | bad record                                           |
| a directory where a data file is expected     | error naming it                                      |
| an unreadable file (permissions)              | error naming it (not testable as root: skipped)      |
| an empty or comment-only config file          | error naming the file                                |
| a config file that is not UTF-8 / a directory | error naming the file                                |
"""

from __future__ import annotations

import json
import os

import pytest

from ift.config import ConfigError, DataConfig, TaskSource, load_config
from ift.data.sources import load_tasks
from ift.errors import UserError

GOOD = {"instruction": "Reverse the word.", "input": "abc", "output": "cba"}


def load(tmp_path, on_bad_record="error", **source):
    return load_tasks(DataConfig(root=str(tmp_path), tasks=[TaskSource(**source)], on_bad_record=on_bad_record))


def error(tmp_path, on_bad_record="error", **source) -> str:
    with pytest.raises(UserError) as exc:
        load(tmp_path, on_bad_record=on_bad_record, **source)
    message = str(exc.value)
    assert "\n" not in message.strip(), message
    return message


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def line(record) -> bytes:
    return json.dumps(record).encode() + b"\n"


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv", "t.json"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    if name.endswith(".jsonl"):
        data = line(GOOD) + line(GOOD) + b'{"instruction": "caf\xe9", "input": "", "output": "x"}\n'
    elif name.endswith(".csv"):
        data = b"instruction,input,output\nReverse,abc,cba\nOther,caf\xe9,x\n"
    else:
        data = (
            b'[\n{"instruction": "a", "input": "", "output": "b"},\n'
            b'{"instruction": "caf\xe9", "input": "", "output": "x"}\n]\n'
        )
    write(tmp_path / name, data)
    message = error(tmp_path, path=name)
    assert f"{tmp_path / name}:3: not valid UTF-8 (byte 0xe9" in message, message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    write(tmp_path / "t.jsonl", line(GOOD) + b"[1, 2]\n" + line(GOOD))
    assert error(tmp_path, path="t.jsonl") == f"{tmp_path / 't.jsonl'}:2: the record is not a JSON object (a list)"
    write(tmp_path / "s.jsonl", line(GOOD) + b'"just a string"\n')
    assert f"{tmp_path / 's.jsonl'}:2: the record is not a JSON object (a str)" in error(tmp_path, path="s.jsonl")


def test_duplicate_keys_are_an_error(tmp_path):
    write(tmp_path / "t.jsonl", line(GOOD) + b'{"instruction": "a", "input": "", "output": "one", "output": "two"}\n')
    message = error(tmp_path, path="t.jsonl")
    assert message.startswith(f"{tmp_path / 't.jsonl'}:2: duplicate key 'output'"), message


def test_byte_order_mark_mixed_line_endings_and_a_long_line_are_handled(tmp_path):
    long_input = "x" * (3 << 20)
    write(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + line(GOOD) + line({**GOOD, "output": "second"}))
    write(tmp_path / "crlf.jsonl", line(GOOD).replace(b"\n", b"\r\n") + line({**GOOD, "output": "lf"}))
    write(tmp_path / "long.jsonl", line({**GOOD, "input": long_input}) + line(GOOD))
    write(tmp_path / "bomcsv.csv", b"\xef\xbb\xbfinstruction,input,output\r\nReverse,abc,cba\nTwo,d,e\r\n")
    tasks = {t.name: t.dataset.to_list() for t in load(tmp_path, path="*")}
    assert [(r["instruction"], r["output"]) for r in tasks["bom"]] == [
        ("Reverse the word.", "cba"),
        ("Reverse the word.", "second"),
    ]
    assert [r["output"] for r in tasks["crlf"]] == ["cba", "lf"]
    assert tasks["long"][0]["input"] == long_input
    assert [(r["instruction"], r["input"], r["output"]) for r in tasks["bomcsv"]] == [
        ("Reverse", "abc", "cba"),
        ("Two", "d", "e"),
    ]


def test_parquet_nan_and_non_text_values(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "instruction": ["a", "b", "c", "d"],
                "input": ["", "", "", ""],
                "output": [1.5, float("nan"), 42.0, float("inf")],
            }
        ),
        tmp_path / "nums.parquet",
    )
    message = error(tmp_path, path="nums.parquet")
    assert "nums.parquet record 2" in message and "'output' is not a text value (nan)" in message, message
    tasks = load(tmp_path, on_bad_record="skip", path="nums.parquet")
    assert [r["output"] for r in tasks[0].dataset.to_list()] == ["1.5", "42.0"]  # never "nan" or "inf"
    assert sum(tasks[0].skipped.values()) == 2
    pq.write_table(
        pa.table({"instruction": ["a", "b"], "input": ["", ""], "output": [["x", "y"], ["z"]]}),
        tmp_path / "lists.parquet",
    )
    assert "'output' is not text (a list)" in error(tmp_path, path="lists.parquet")


def test_numbers_and_booleans_become_their_text(tmp_path):
    write(
        tmp_path / "t.jsonl",
        line({"instruction": "Add 40 and 2.", "input": "", "output": 42})
        + line({"instruction": "Is 4 even?", "input": 4, "output": True}),
    )
    rows = load(tmp_path, path="t.jsonl")[0].dataset.to_list()
    assert [(r["input"], r["output"]) for r in rows] == [("", "42"), ("4", "True")]


def test_null_nested_in_a_chat_message(tmp_path):
    write(
        tmp_path / "chat.jsonl",
        line({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
        + line({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}),
    )
    message = error(tmp_path, path="chat.jsonl", schema="messages")
    assert f"{tmp_path / 'chat.jsonl'}:2" in message and "messages[0].content is not text" in message, message


def test_directory_where_a_file_is_expected(tmp_path):
    write(tmp_path / "ok.jsonl", line(GOOD))
    (tmp_path / "oops.jsonl").mkdir()  # a glob of task files matches a directory
    assert error(tmp_path, path="*.jsonl") == f"{tmp_path / 'oops.jsonl'}: is a directory, expected a data file"
    # a path that names a directory means "every task file in it": an empty one is an error naming it
    assert "no .jsonl/.json/.parquet/.csv files match" in error(tmp_path, path="oops.jsonl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permissions cannot be tested as root")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "t.jsonl", line(GOOD))
    path.chmod(0)
    assert error(tmp_path, path="t.jsonl") == f"{path}: permission denied"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n# and another\n"])
def test_empty_config_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: the config file is empty"):
        load_config(str(path))


def test_config_file_encoding_directory_and_bom(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"run:\n  name: caf\xe9\n")
    with pytest.raises(ConfigError, match=f"{bad}: not valid UTF-8"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfrun:\n  name: fine\n")
    assert load_config(str(bom)).run.name == "fine"
