"""Tests for the typed config tree (ift.config) and the CLI's error handling (ift.cli)."""

import dataclasses
import os
import re
import textwrap
import typing

import pytest
import yaml

from ift.cli import build_parser, main
from ift.config import (
    Config,
    ConfigError,
    GroupConfig,
    TaskSource,
    UserError,
    load_config,
    save_config,
    to_dict,
)


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def error_of(path=None, overrides=()):
    with pytest.raises(ConfigError) as exc:
        load_config(path, overrides)
    return str(exc.value)


# --------------------------------------------------------------------------- loading YAML


def test_defaults_without_a_file():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.data.tasks == [TaskSource(builtin="train")]
    assert cfg.run_dir == os.path.join("runs", "demo")


def test_load_yaml_builds_typed_tree(tmp_path):
    path = write(
        tmp_path / "run.yaml",
        """
        run: {name: tiny, seed: 3}
        model:
          config: {hidden_size: 64, num_hidden_layers: 2}
        data:
          template: few_shot
          few_shot_k: 3
          tasks:
            - {path: data/*.jsonl, fields: {output: answer}}
            - {builtin: heldout, n: 50}
          mixture:
            strategy: temperature
            temperature: 2
            groups:
              - {name: a, weight: 2, tasks: ["x*"]}
        train:
          lr: 3e-4
          betas: [0.8, 0.99]
          max_steps: 50
    """,
    )
    cfg = load_config(path)
    assert cfg.run.name == "tiny" and cfg.run.seed == 3
    assert cfg.model.config == {"hidden_size": 64, "num_hidden_layers": 2}
    assert cfg.data.template == "few_shot" and cfg.data.few_shot_k == 3
    # nested dataclass lists become dataclasses, not dicts
    assert cfg.data.tasks == [
        TaskSource(path="data/*.jsonl", fields={"output": "answer"}),
        TaskSource(builtin="heldout", n=50),
    ]
    assert isinstance(cfg.data.tasks[0], TaskSource)
    assert cfg.data.mixture.groups == [GroupConfig(name="a", weight=2.0, tasks=["x*"])]
    assert isinstance(cfg.data.mixture.groups[0].weight, float)
    assert cfg.data.mixture.temperature == 2.0 and isinstance(cfg.data.mixture.temperature, float)
    # YAML reads "3e-4" (no dot) as a string; the float field still gets a float
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.betas == [0.8, 0.99]
    assert cfg.train.max_steps == 50
    # untouched sections keep their defaults
    assert cfg.slurm == Config().slurm


def test_no_config_file_is_the_defaults_and_an_empty_one_an_error(tmp_path):
    assert load_config(None) == Config()
    empty = write(tmp_path / "empty.yaml", "")
    assert error_of(empty) == f"{empty}: the config file is empty (or only comments)"


def test_missing_file_and_invalid_yaml(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    assert error_of(missing) == f"config file not found: {missing}"
    bad = write(tmp_path / "bad.yaml", "train: {lr: [1, 2\n")
    msg = error_of(bad)
    assert msg.startswith(f"{bad}: invalid YAML:")
    top = write(tmp_path / "list.yaml", "- a\n- b\n")
    assert error_of(top) == f"{top}: expected a mapping at the top level"


# --------------------------------------------------------------------------- include


def test_include_inherits_and_child_overrides_one_nested_key(tmp_path):
    (tmp_path / "base").mkdir()
    write(
        tmp_path / "base" / "parent.yaml",
        """
        run: {name: parent, seed: 7}
        train: {lr: 0.01, max_steps: 30, warmup_steps: 5}
        data:
          mixture: {strategy: temperature, temperature: 3}
    """,
    )
    child = write(
        tmp_path / "child.yaml",
        """
        include: base/parent.yaml
        train: {lr: 0.002}
        data:
          mixture: {temperature: 1.5}
    """,
    )
    cfg = load_config(child)
    assert cfg.train.lr == 0.002  # overridden by the child
    assert cfg.train.max_steps == 30 and cfg.train.warmup_steps == 5  # siblings inherited
    assert cfg.data.mixture.strategy == "temperature"  # deep merge keeps the parent's sibling
    assert cfg.data.mixture.temperature == 1.5
    assert cfg.run.name == "parent" and cfg.run.seed == 7


def test_include_list_later_wins_and_is_relative_to_including_file(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "a.yaml", "train: {lr: 0.1, max_steps: 11}\n")
    write(tmp_path / "sub" / "b.yaml", "train: {lr: 0.2}\n")
    write(tmp_path / "sub" / "mid.yaml", "include: [a.yaml, b.yaml]\nrun: {name: mid}\n")
    top = write(tmp_path / "top.yaml", "include: sub/mid.yaml\n")
    cfg = load_config(top)
    assert cfg.train.lr == 0.2 and cfg.train.max_steps == 11 and cfg.run.name == "mid"


def test_include_cycle_is_an_error(tmp_path):
    a = write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    msg = error_of(a)
    assert "include cycle" in msg
    assert "a.yaml" in msg and "b.yaml" in msg


def test_self_include_is_a_cycle(tmp_path):
    a = write(tmp_path / "self.yaml", "include: self.yaml\n")
    assert "include cycle" in error_of(a)


def test_missing_include_names_the_file(tmp_path):
    a = write(tmp_path / "a.yaml", "include: gone.yaml\n")
    assert error_of(a) == f"config file not found: {tmp_path / 'gone.yaml'}"


# --------------------------------------------------------------------------- overrides


def test_overrides_coerce_types():
    cfg = load_config(
        None,
        [
            "train.max_steps=25",
            "train.lr=1e-4",
            "train.min_lr_ratio=0.5",
            "data.packing=false",
            "model.gradient_checkpointing=true",
            "tracking.wandb.tags=a,b",
            "train.resume_allow_mismatch=[mixture, model]",
            "run.seed=5",
        ],
    )
    assert cfg.train.max_steps == 25 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.min_lr_ratio == 0.5
    assert cfg.data.packing is False
    assert cfg.model.gradient_checkpointing is True
    assert cfg.tracking.wandb.tags == ["a", "b"]
    assert cfg.train.resume_allow_mismatch == ["mixture", "model"]
    assert cfg.run.seed == 5


def test_override_wins_over_yaml(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {lr: 0.5, max_steps: 9}\n")
    cfg = load_config(path, ["train.lr=0.25"])
    assert cfg.train.lr == 0.25 and cfg.train.max_steps == 9


@pytest.mark.parametrize("text", ["[0.8, 0.9]", "0.8,0.9"])
def test_override_list_of_numbers(text):
    # `a,b` and `[a, b]` are both lists; the betas must be numbers either way
    cfg = load_config(None, [f"train.betas={text}"])
    assert cfg.train.betas == [0.8, 0.9]
    assert all(isinstance(b, float) for b in cfg.train.betas)


def test_override_list_of_sections():
    cfg = load_config(None, ["data.tasks=[{builtin: heldout, n: 5}, {path: x.jsonl, schema: alpaca}]"])
    assert cfg.data.tasks == [TaskSource(builtin="heldout", n=5), TaskSource(path="x.jsonl", schema="alpaca")]
    assert error_of(None, ["data.tasks=[{builtin: train, nn: 3}]"]) == (
        "unknown config key 'data.tasks[0].nn' (did you mean 'data.tasks[0].n'?)"
    )


def test_override_dict_value():
    cfg = load_config(None, ["data.template={zero_shot: 0.5, few_shot: 0.5}"])
    assert cfg.data.template == {"zero_shot": 0.5, "few_shot": 0.5}


def test_override_into_a_dict_field():
    cfg = load_config(None, ["deepspeed.extra.steps_per_print=7", "model.config.hidden_size=32"])
    assert cfg.deepspeed.extra == {"steps_per_print": 7}
    assert cfg.model.config == {"hidden_size": 32}


@pytest.mark.parametrize("name", ["007", "1e3", "42", "true"])
def test_string_field_keeps_the_text(name):
    cfg = load_config(None, [f"run.name={name}"])
    assert cfg.run.name == name


def test_override_without_equals_sign():
    assert error_of(None, ["train.lr"]) == "override 'train.lr' is not of the form key.sub=value"


def test_override_through_a_scalar_is_an_error():
    msg = error_of(None, ["train.lr.x=1"])
    assert "'train.lr' is not a section" in msg and "train.lr.x" in msg


# --------------------------------------------------------------------------- unknown keys


def test_unknown_key_in_yaml_has_full_path_and_suggestion(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {lr_rate: 1}\n")
    assert error_of(path) == "unknown config key 'train.lr_rate' (did you mean 'train.lr'?)"


def test_unknown_key_in_override_has_full_path_and_suggestion():
    assert error_of(None, ["train.lr_rate=1"]) == "unknown config key 'train.lr_rate' (did you mean 'train.lr'?)"


@pytest.mark.parametrize(
    "yaml_text, override, expected",
    [
        (
            "train: {max_step: 5}\n",
            "train.max_step=5",
            "unknown config key 'train.max_step' (did you mean 'train.max_steps'?)",
        ),
        (
            "data: {mixture: {strategi: explicit}}\n",
            "data.mixture.strategi=explicit",
            "unknown config key 'data.mixture.strategi' (did you mean 'data.mixture.strategy'?)",
        ),
        (
            "tracking: {wandb: {projekt: x}}\n",
            "tracking.wandb.projekt=x",
            "unknown config key 'tracking.wandb.projekt' (did you mean 'tracking.wandb.project'?)",
        ),
        ("trian: {lr: 1}\n", "trian.lr=1", "unknown config key 'trian' (did you mean 'train'?)"),
    ],
)
def test_unknown_keys_yaml_and_override_agree(tmp_path, yaml_text, override, expected):
    path = write(tmp_path / "r.yaml", yaml_text)
    assert error_of(path) == expected
    assert error_of(None, [override]) == expected


def test_unknown_key_inside_a_list_entry_names_the_index(tmp_path):
    path = write(tmp_path / "r.yaml", "data:\n  tasks:\n    - {builtin: train}\n    - {pth: x.jsonl}\n")
    assert error_of(path) == "unknown config key 'data.tasks[1].pth' (did you mean 'data.tasks[1].path'?)"


def test_unknown_key_without_a_close_match_has_no_hint(tmp_path):
    path = write(tmp_path / "r.yaml", "train: {zzzzqqq: 1}\n")
    assert error_of(path) == "unknown config key 'train.zzzzqqq'"


# --------------------------------------------------------------------------- types and ranges


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.max_steps=abc", "train.max_steps: expected an integer, got 'abc'"),
        ("train.max_steps=1.5", "train.max_steps: expected an integer, got 1.5"),
        ("train.max_steps=true", "train.max_steps: expected an integer, got True"),
        ("train.lr=fast", "train.lr: expected a number, got 'fast'"),
        ("data.packing=maybe", "data.packing: expected true or false, got 'maybe'"),
        ("train.betas={a: 1}", "train.betas: expected a list, got {'a': 1}"),
        ("deepspeed.extra=5", "deepspeed.extra: expected a mapping, got 5"),
        ("run.name=[a, b]", "run.name: expected a string, got ['a', 'b']"),
    ],
)
def test_wrong_types_name_field_and_value(override, expected):
    assert error_of(None, [override]) == expected


def test_wrong_type_for_a_section(tmp_path):
    path = write(tmp_path / "r.yaml", "train: 5\n")
    assert error_of(path) == "train: expected a mapping, got 5"


def test_wrong_type_inside_a_list_of_sections(tmp_path):
    path = write(tmp_path / "r.yaml", "data: {tasks: [{builtin: train, n: lots}]}\n")
    assert error_of(path) == "data.tasks[0].n: expected an integer, got 'lots'"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=-0.001", "train.lr: must be > 0, got -0.001"),
        ("train.lr=0", "train.lr: must be > 0, got 0.0"),
        ("data.max_seq_len=0", "data.max_seq_len: must be > 0, got 0"),
        ("train.zero_stage=5", "train.zero_stage: must be one of 0, 1, 2, 3, got 5"),
        ("data.template=two_shot", "data.template: must be one of zero_shot, few_shot, cot, got 'two_shot'"),
        (
            "data.template={zero_shot: 0.5, many_shot: 0.5}",
            "data.template.many_shot: must be one of zero_shot, few_shot, cot, got 'many_shot'",
        ),
        ("data.template={zero_shot: -1}", "data.template.zero_shot: must be a proportion >= 0, got -1"),
        ("data.mixture.weights.reverse_word=-1", "data.mixture.weights.reverse_word: must be a number > 0, got -1"),
        (
            "data.mixture.strategy=uniform",
            "data.mixture.strategy: must be one of explicit, proportional, temperature, got 'uniform'",
        ),
        ("train.min_lr_ratio=2", "train.min_lr_ratio: must be in [0, 1], got 2.0"),
        ("model.dtype=fp8", "model.dtype: must be one of auto, fp32, bf16, fp16, got 'fp8'"),
        ("run.name=a/b", "run.name: must be a non-empty name without '/', got 'a/b'"),
    ],
)
def test_out_of_range_values_name_field_and_value(override, expected):
    assert error_of(None, [override]) == expected


def test_negative_group_weight_in_yaml(tmp_path):
    path = write(
        tmp_path / "r.yaml",
        """
        data:
          mixture:
            groups:
              - {name: g, weight: -2, tasks: ["*"]}
    """,
    )
    assert error_of(path) == "data.mixture.groups[0].weight: must be > 0, got -2.0"


def test_task_source_needs_exactly_one_origin(tmp_path):
    path = write(tmp_path / "r.yaml", "data: {tasks: [{path: a.jsonl, builtin: train}]}\n")
    msg = error_of(path)
    assert msg.startswith("data.tasks[0]: needs exactly one of path, hub, builtin")
    path = write(tmp_path / "r2.yaml", "data: {tasks: [{path: a.jsonl, schema: dolly}]}\n")
    assert error_of(path) == (
        "data.tasks[0].schema: must be one of alpaca, sni, messages, sharegpt, prompt_completion, got 'dolly'"
    )


def test_errors_are_user_errors():
    assert issubclass(ConfigError, UserError)


# --------------------------------------------------------------------------- saving


def test_save_config_round_trips(tmp_path):
    path = write(
        tmp_path / "r.yaml",
        """
        run: {name: "007", seed: 9}
        model:
          config: {hidden_size: 48, num_hidden_layers: 1}
          tokenizer: some/tokenizer
        data:
          template: {zero_shot: 0.7, cot: 0.3}
          tasks:
            - {path: "tasks/*.jsonl", fields: {output: answer}, schema: alpaca}
            - {builtin: train, n: 30}
          mixture:
            strategy: explicit
            weights: {reverse_word: 2}
            groups:
              - {name: g, weight: 1.5, tasks: ["*"], cap: 10}
        train: {lr: 2e-4, betas: [0.85, 0.9], epochs: 1.5}
        deepspeed: {extra: {steps_per_print: 3}}
        slurm: {extra_sbatch: ["--exclusive"]}
    """,
    )
    cfg = load_config(path, ["train.max_steps=12"])
    out = tmp_path / "out" / "config.yaml"
    save_config(cfg, str(out))
    assert out.is_file()
    assert not os.path.exists(str(out) + ".tmp")
    again = load_config(str(out))
    assert again == cfg
    assert again.run.name == "007"


def test_save_config_redacts_secrets_but_not_tokenizer(tmp_path):
    cfg = load_config(
        None,
        [
            "deepspeed.extra.api_key=sk-very-secret",
            "deepspeed.extra.nested={hf_token: hf_abc, password: hunter2}",
            "deepspeed.extra.steps_per_print=5",
            "deepspeed.extra.HF_TOKEN=hf_upper",
            "model.tokenizer=my/tokenizer-path",
            "eval.max_new_tokens=17",
        ],
    )
    out = tmp_path / "config.yaml"
    save_config(cfg, str(out))
    text = out.read_text()
    for secret in ("sk-very-secret", "hf_abc", "hunter2", "hf_upper"):
        assert secret not in text
    saved = yaml.safe_load(text)
    assert saved["deepspeed"]["extra"]["api_key"] == "<redacted>"
    assert saved["deepspeed"]["extra"]["nested"] == {"hf_token": "<redacted>", "password": "<redacted>"}
    assert saved["deepspeed"]["extra"]["steps_per_print"] == 5
    assert saved["deepspeed"]["extra"]["HF_TOKEN"] == "<redacted>"
    assert saved["model"]["tokenizer"] == "my/tokenizer-path"  # 'tokenizer' is not the word 'token'
    assert saved["eval"]["max_new_tokens"] == 17
    assert to_dict(cfg)["deepspeed"]["extra"]["api_key"] == "<redacted>"
    # the live config is untouched
    assert cfg.deepspeed.extra["api_key"] == "sk-very-secret"


# --------------------------------------------------------------------------- CLI


def test_cli_user_error_is_one_line_exit_2(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", "train: {lr_rate: 1}\n")
    assert main(["mix", path]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: unknown config key 'train.lr_rate'")
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "Traceback" not in err and "Traceback" not in out


def test_cli_bad_override_value_exit_2(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", "run: {name: x}\n")
    assert main(["mix", path, "train.lr=-1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: train.lr: must be > 0, got -1.0\n"


def test_cli_betas_override_is_not_a_traceback(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", "data: {tasks: [{builtin: reverse_word, n: 5}]}\n")
    assert main(["mix", path, "train.betas=0.8,0.9"]) == 0
    capsys.readouterr()


def test_cli_missing_config_file(tmp_path, capsys):
    missing = str(tmp_path / "missing.yaml")
    assert main(["mix", missing]) == 2
    assert capsys.readouterr().err == f"error: config file not found: {missing}\n"


def test_cli_unrecognized_argument(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", "run: {name: x}\n")
    assert main(["mix", path, "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized argument(s): --bogus")
    assert err.count("\n") == 1


def test_cli_export_of_a_missing_run_is_a_user_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and err.count("\n") == 1


VERBS = ("train", "submit", "mix", "eval", "compare", "export")


def test_help_lists_every_verb(capsys):
    text = build_parser().format_help()
    for verb in VERBS:
        assert verb in text
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ift")
    for verb in VERBS:
        assert f"    {verb} " in out  # one line per verb in the sub-command list


def test_no_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: ift" in capsys.readouterr().err


def test_task_field_and_train_on_are_validated(tmp_path):
    path = write(tmp_path / "tf.yaml", "data: {tasks: [{builtin: train, task_field: source}]}\n")
    assert error_of(path).startswith("data.tasks[0].task_field: must be a column name of a file or hub source")
    path = write(tmp_path / "to.yaml", "data: {train_on: every_turn}\n")
    assert error_of(path) == "data.train_on: must be one of all_assistant, last_assistant, got 'every_turn'"


# --------------------------------------------------------------------------- the README's reference


README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def config_tree(cls=Config, prefix=""):
    """({dotted key: type} of every leaf field, {dotted section}); a list of sections is `name[]`."""
    leaves, sections = {}, set()
    for name, tp in typing.get_type_hints(cls).items():
        item = (typing.get_args(tp) or (None,))[0] if typing.get_origin(tp) is list else None
        sub, path = (tp, prefix + name) if dataclasses.is_dataclass(tp) else (item, prefix + name + "[]")
        if not dataclasses.is_dataclass(sub):
            leaves[prefix + name] = tp
            continue
        sections.add(path)
        sub_leaves, sub_sections = config_tree(sub, path + ".")
        leaves.update(sub_leaves)
        sections |= sub_sections
    return leaves, sections


def literal_choices(tp):
    """The choices of the Literal in a field's type (alone, in a Union, a list's items, a dict's keys)."""
    if typing.get_origin(tp) is typing.Literal:
        return [str(a) for a in typing.get_args(tp)]
    return next((c for c in map(literal_choices, typing.get_args(tp)) if c), None)


def readme_reference(text):
    """{dotted key: its choices or None} from the README's configuration table: one row per section
    (or several: `data.tasks[]`, `eval.tasks[]`); keys in backticks, separated by `,` `;` or **or**;
    a key's choices `a\\|b` right after it; notes in parentheses."""
    lines = text.split("\n## Configuration\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| section | keys"))
    keys = {}
    for row in lines[start + 2 :]:
        if not row.startswith("|"):
            break
        sections, cell = (c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1])
        while re.search(r"\([^()]*\)", cell):
            cell = re.sub(r"\([^()]*\)", "", cell)
        for item in re.split(r",|;|\*\*or\*\*", cell):
            m = re.fullmatch(r"\s*`(\w+)`(?:\s+(\S+\\\|\S+))?\s*", item)
            assert m, f"README configuration table, row {sections}: cannot read {item.strip()!r}"
            for section in re.findall(r"`([^`]+)`", sections):
                keys[f"{section}.{m[1]}"] = m[2].split("\\|") if m[2] else None
    return keys


def reference_problems(readme_text):
    documented = readme_reference(readme_text)
    leaves, sections = config_tree()
    problems = [f"{k}: not in the README's configuration table" for k in leaves if k not in documented]
    problems += [
        f"{k}: in the README but not in ift/config.py"
        for k in documented
        if k not in leaves and k not in sections and k + "[]" not in sections
    ]
    problems += [
        f"{k}: the README lists choices {documented[k]}, ift/config.py {literal_choices(tp)}"
        for k, tp in leaves.items()
        if k in documented and documented[k] != literal_choices(tp)
    ]
    return problems


def test_readme_configuration_reference_matches_the_tree():
    with open(README, encoding="utf-8") as f:
        assert reference_problems(f.read()) == []


@pytest.mark.parametrize(
    "override, message",
    [
        ("slurm.signal_delay_s=4000", "slurm.signal_delay_s: must be in [0, slurm.time_min * 60 = 3600), got 4000"),
        ("slurm.signal_delay_s=-1", "slurm.signal_delay_s: must be in [0"),
        (
            "slurm.extra_sbatch=[--exclusive, -x]",
            "slurm.extra_sbatch: give a long option, e.g. --exclusive or --mail-type=END, got '-x'",
        ),
        ("train.tiled_mlp=true", "train.tiled_mlp: needs data.packing=true"),  # with data.packing=false below
    ],
)
def test_cross_field_checks_run_at_load(override, message):
    """Every check that the config alone decides runs in load_config, for every verb."""
    extra = ["data.packing=false"] if "tiled" in override else []
    with pytest.raises(ConfigError) as err:
        load_config(None, [override, *extra])
    assert message in str(err.value)


def test_extra_sbatch_options_parse():
    s = load_config(None, ["slurm.extra_sbatch=[--exclusive, --mail-type=END, '#SBATCH --comment x y']"]).slurm
    assert s.sbatch_options() == {"exclusive": True, "mail_type": "END", "comment": "x y"}


def test_only_task_is_a_config_field_applied_once(tmp_path):
    from ift.config import MixtureConfig, save_config

    base = "run: {name: base}\ndata: {mixture: {strategy: temperature, temperature: 2}}\n"
    (tmp_path / "base.yaml").write_text(base)
    cfg = load_config(str(tmp_path / "base.yaml"), ["data.only_task=reverse_word"])
    assert cfg.data.only_task == "reverse_word" and cfg.run.name == "base-ft-reverse_word"
    assert cfg.data.mixture == MixtureConfig()  # the baseline trains one task: no mixture settings
    save_config(cfg, str(tmp_path / "config.yaml"))  # the run's saved config says what ran, and loads to itself
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    named = load_config(None, ["run.name=mine", "data.only_task=reverse_word"])
    assert named.run.name == "mine"  # a name given on the command line is kept as it is
