"""One typed configuration tree for a run, loaded from YAML with `key.sub=value` overrides.

Every user mistake becomes a `ConfigError` naming the dotted field; the CLI prints it as one
`error:` line and exits 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml


class UserError(Exception):
    """A mistake in the user's input: shown as `error: <message>` without a traceback."""


class ConfigError(UserError):
    pass


# --------------------------------------------------------------------------- the tree


@dataclass
class RunConfig:
    name: str = "demo"
    output_dir: str = "runs"
    seed: int = 0


@dataclass
class ModelConfig:
    name_or_path: Optional[str] = None  # local folder or hub id (from_pretrained)
    config: Optional[dict] = None  # inline architecture, random init (e.g. a tiny Llama)
    tokenizer: Optional[str] = None  # default: name_or_path, or a BPE trained on the run's data
    dtype: str = "auto"  # auto (bf16 on a GPU that has it, else fp32) | fp32 | bf16 | fp16
    attn_implementation: str = "auto"  # auto (flash_attention_2 on CUDA if installed, else sdpa) | sdpa | eager | flash_attention_2 | flex_attention
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False


@dataclass
class TaskSource:
    name: Optional[str] = None  # default: file stem (one task per file) or hub id
    path: Optional[str] = None  # file, directory or glob, relative to data.root
    hub: Optional[str] = None  # datasets.load_dataset id
    builtin: Optional[str] = None  # built-in suite: train | heldout | all | <task name>
    split: str = "train"
    subset: Optional[str] = None
    schema: Optional[str] = None  # alpaca | sni | messages | sharegpt | prompt_completion; auto-detected
    task_field: Optional[str] = None  # a column naming each record's task: one task per distinct value
    fields: dict = field(default_factory=dict)  # canonical name -> column name
    n: int = 200  # examples per task, built-in suite only


@dataclass
class GroupConfig:
    name: str = ""
    weight: float = 1.0
    tasks: list = field(default_factory=list)  # task names or globs
    strategy: Optional[str] = None  # default: the mixture's
    cap: Optional[int] = None
    temperature: Optional[float] = None
    weights: dict = field(default_factory=dict)


@dataclass
class MixtureConfig:
    strategy: str = "proportional"  # explicit | proportional | temperature
    cap: Optional[int] = None  # examples-proportional cap (FLAN: 3000)
    temperature: float = 1.0
    weights: dict = field(default_factory=dict)  # task -> weight (explicit)
    groups: list[GroupConfig] = field(default_factory=list)


@dataclass
class DataConfig:
    root: Optional[str] = None
    tasks: list[TaskSource] = field(default_factory=lambda: [TaskSource(builtin="train")])
    template: Union[str, dict] = "zero_shot"  # name or {name: proportion}
    few_shot_k: int = 2
    chat_template: str = "auto"  # auto | none
    on_bad_record: str = "error"  # error | skip
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    max_seq_len: int = 512
    packing: bool = True
    pack_window: int = 8192  # examples per best-fit-decreasing window (resume re-packs at most one)
    truncation: str = "truncate_prompt_left"  # drop | truncate_prompt_left | error
    train_on_prompt: bool = False
    train_on: str = "all_assistant"  # conversations: all_assistant | last_assistant turns are targets
    num_proc: int = 1
    cache_dir: Optional[str] = None  # default: ~/.cache/ift


@dataclass
class TrainConfig:
    max_steps: int = 100
    epochs: Optional[float] = None  # epochs of the mixture; caps max_steps when set
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 10
    lr_schedule: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    zero_stage: int = 2
    log_every: int = 10
    save_every: int = 0  # 0: only at the end
    keep_last: int = 2
    keep_every: int = 0
    resume: str = "auto"  # auto | never | <checkpoint path>
    dist_timeout_min: int = 10  # a collective waits this long for a dead rank before failing
    verify_checkpoint: str = "full"  # full (sizes + CRC-32) | size | none: checked against its manifest before loading
    resume_allow_mismatch: list[str] = field(default_factory=list)
    export_final: bool = False
    skip_nonfinite: bool = False
    peak_tflops: float = 0.0  # per device, for the MFU estimate; 0 = unknown (CPU)
    loss_chunk: int = 1024  # target tokens per chunk of the output projection + loss (bounds its memory)


@dataclass
class DeepSpeedConfig:
    config_file: Optional[str] = None  # replaces the generated config
    offload_optimizer: bool = False
    offload_param: bool = False
    extra: dict = field(default_factory=dict)  # merged into the generated config


@dataclass
class WandbConfig:
    project: str = "ift"
    entity: Optional[str] = None
    name: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    mode: str = "offline"  # offline | online | disabled


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class SlurmConfig:
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 8
    mem_gb: Optional[int] = None
    partition: Optional[str] = None
    time_min: int = 60
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    extra_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" lines, e.g. ["--exclusive"]
    max_requeues: int = 3
    max_failures: int = 2  # crashes (not user errors, exit 2) that requeue the job
    signal_delay_s: int = 120
    folder: Optional[str] = None  # submitit logs; default <run dir>/slurm
    gres: bool = True  # request --gpus-per-node; false on CPU-only clusters (gpus_per_node = tasks per node)
    setup: list[str] = field(default_factory=list)  # shell lines run in the job before srun (module load, ...)
    python: Optional[str] = None  # python command in the job; default: the interpreter running `ift submit`


@dataclass
class EvalConfig:
    tasks: list[TaskSource] = field(default_factory=lambda: [TaskSource(builtin="heldout")])
    shots: int = 0
    max_new_tokens: int = 32
    limit: Optional[int] = None  # examples per task
    batch_size: int = 16
    every: int = 0  # evaluate loss on a held-out sample every N steps and at the last step (0: off)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.run.output_dir, self.run.name)


# --------------------------------------------------------------------------- building


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, path: str) -> Any:
    """Turn a YAML value into the field's declared type, or raise naming the field."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        raise errors[-1] if len(errors) == 1 else ConfigError(
            f"{path}: expected {' or '.join(_type_name(a) for a in args if a is not type(None))}, got {value!r}"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return _build(tp, value, path)
    if origin is list or tp is list:
        if isinstance(value, str):  # `a.b=x,y` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        except (ValueError, OverflowError):
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {tp}")


def _unknown_key(key: str, path: str, known) -> ConfigError:
    dotted = f"{path}.{key}" if path else key
    known = list(known)
    close = (difflib.get_close_matches(key, known, n=1, cutoff=0.8)
             or [k for k in known if key.startswith(k + "_") or key.endswith("_" + k)][:1]
             or difflib.get_close_matches(key, known, n=1))
    hint = f" (did you mean '{f'{path}.' if path else ''}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{dotted}'{hint}")


def _build(cls, values: dict, path: str = ""):
    hints = _hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(str(key), path, hints)
        kwargs[key] = _coerce(value, hints[key], f"{path}.{key}" if path else key)
    return cls(**kwargs)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving `include:` (a path or list, relative to this file) first."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(_seen + (path,))})")
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if raw is None:  # an empty or comment-only file would silently run with every default
        raise ConfigError(f"{path}: the config file is empty (or only comments)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    includes = raw.pop("include", None) or []
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = _deep_merge(merged, read_yaml(os.path.join(os.path.dirname(path), inc), _seen + (path,)))
    return _deep_merge(merged, raw)


def apply_override(raw: dict, override: str) -> None:
    """Apply one `a.b.c=value` to a raw dict; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form key.sub=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    cls, node, prefix = Config, raw, ""
    for i, part in enumerate(parts):
        hints = _hints(cls) if cls is not None else None
        if hints is not None and part not in hints:
            raise _unknown_key(part, prefix, hints)
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(text) if text.strip() else ""
            if isinstance(node[part], (int, float)) and hints is not None:
                # keep `run.name=007` a string: only fields typed as numbers take YAML's number reading
                if str in _plain_types(hints[part]) and not ({int, float, bool} & _plain_types(hints[part])):
                    node[part] = text
            return
        tp = hints[part] if hints is not None else None
        if tp is not None and not dataclasses.is_dataclass(tp) and dict not in _plain_types(tp):
            raise ConfigError(f"'{prefix + '.' if prefix else ''}{part}' is not a section; cannot set '{key}'")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is not a mapping")
        cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
        prefix = f"{prefix}.{part}" if prefix else part


def _plain_types(tp) -> set:
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return {typing.get_origin(a) or a for a in args}


def load_config(path: Optional[str] = None, overrides: tuple | list = ()) -> Config:
    raw = read_yaml(path) if path else {}
    for o in overrides:
        apply_override(raw, o)
    cfg = _build(Config, raw)
    validate(cfg)
    return cfg


# --------------------------------------------------------------------------- validation


def _check(cond: bool, field_path: str, value: Any, must: str) -> None:
    if not cond:
        raise ConfigError(f"{field_path}: {must}, got {value!r}")


def _choice(value: Any, field_path: str, choices) -> None:
    _check(value in choices, field_path, value, f"must be one of {', '.join(map(str, choices))}")


TEMPLATES = ("zero_shot", "few_shot", "cot")
SCHEMAS = ("alpaca", "sni", "messages", "sharegpt", "prompt_completion")
STRATEGIES = ("explicit", "proportional", "temperature")


def _validate_strategy(strategy, cap, temperature, weights, path) -> None:
    if strategy is not None:
        _choice(strategy, f"{path}.strategy", STRATEGIES)
    if cap is not None:
        _check(cap > 0, f"{path}.cap", cap, "must be > 0")
    if temperature is not None:
        _check(temperature > 0 and math.isfinite(temperature), f"{path}.temperature", temperature, "must be > 0")
    for name, w in weights.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        _check(ok, f"{path}.weights.{name}", w, "must be a number > 0")


def validate(cfg: Config) -> None:
    """Range and choice checks; types were checked while building."""
    _check(bool(cfg.run.name) and "/" not in cfg.run.name, "run.name", cfg.run.name, "must be a non-empty name without '/'")
    m = cfg.model
    _choice(m.dtype, "model.dtype", ("auto", "fp32", "bf16", "fp16"))
    _choice(m.attn_implementation, "model.attn_implementation",
            ("auto", "sdpa", "eager", "flash_attention_2", "flex_attention"))
    _check(m.name_or_path is None or m.config is None, "model", "name_or_path and config", "set one of model.name_or_path and model.config, not both")

    d = cfg.data
    _check(len(d.tasks) > 0, "data.tasks", d.tasks, "must list at least one task source")
    for i, t in enumerate(d.tasks):
        validate_source(t, f"data.tasks[{i}]")
    if isinstance(d.template, str):
        _choice(d.template, "data.template", TEMPLATES)
    else:
        _check(len(d.template) > 0, "data.template", d.template, "must name at least one template")
        for name, p in d.template.items():
            _choice(name, f"data.template.{name}", TEMPLATES)
            ok = isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
            _check(ok, f"data.template.{name}", p, "must be a proportion >= 0")
        _check(sum(d.template.values()) > 0, "data.template", d.template, "proportions must not all be 0")
    _check(d.few_shot_k >= 0, "data.few_shot_k", d.few_shot_k, "must be >= 0")
    _choice(d.chat_template, "data.chat_template", ("auto", "none"))
    _choice(d.on_bad_record, "data.on_bad_record", ("error", "skip"))
    _choice(d.train_on, "data.train_on", ("all_assistant", "last_assistant"))
    _choice(d.truncation, "data.truncation", ("drop", "truncate_prompt_left", "error"))
    _check(d.max_seq_len > 0, "data.max_seq_len", d.max_seq_len, "must be > 0")
    _check(d.pack_window > 0, "data.pack_window", d.pack_window, "must be > 0")
    _check(d.num_proc >= 1, "data.num_proc", d.num_proc, "must be >= 1")
    mx = d.mixture
    _validate_strategy(mx.strategy, mx.cap, mx.temperature, mx.weights, "data.mixture")
    for i, g in enumerate(mx.groups):
        gp = f"data.mixture.groups[{i}]"
        _check(bool(g.name), f"{gp}.name", g.name, "must be set")
        _check(g.name not in [h.name for h in mx.groups[:i]], f"{gp}.name", g.name, "repeats an earlier group's name")
        ok = math.isfinite(g.weight) and g.weight > 0
        _check(ok, f"{gp}.weight", g.weight, "must be > 0")
        _check(len(g.tasks) > 0, f"{gp}.tasks", g.tasks, "must list at least one task (empty group)")
        _validate_strategy(g.strategy, g.cap, g.temperature, g.weights, gp)

    t = cfg.train
    _check(t.max_steps > 0, "train.max_steps", t.max_steps, "must be > 0")
    _check(t.epochs is None or t.epochs > 0, "train.epochs", t.epochs, "must be > 0")
    _check(t.micro_batch_size > 0, "train.micro_batch_size", t.micro_batch_size, "must be > 0")
    _check(t.grad_accum > 0, "train.grad_accum", t.grad_accum, "must be > 0")
    _check(math.isfinite(t.lr) and t.lr > 0, "train.lr", t.lr, "must be > 0")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "must be >= 0")
    _check(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas", t.betas, "must be two numbers in [0, 1)")
    _check(t.warmup_steps >= 0, "train.warmup_steps", t.warmup_steps, "must be >= 0")
    _choice(t.lr_schedule, "train.lr_schedule", ("cosine", "linear", "constant"))
    _check(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "must be in [0, 1]")
    _check(t.grad_clip >= 0, "train.grad_clip", t.grad_clip, "must be >= 0 (0 disables clipping)")
    _choice(t.zero_stage, "train.zero_stage", (0, 1, 2, 3))
    _check(t.log_every > 0, "train.log_every", t.log_every, "must be > 0")
    _check(t.loss_chunk > 0, "train.loss_chunk", t.loss_chunk, "must be > 0")
    _choice(t.verify_checkpoint, "train.verify_checkpoint", ("full", "size", "none"))
    _check(t.dist_timeout_min > 0, "train.dist_timeout_min", t.dist_timeout_min, "must be > 0")
    for name in ("save_every", "keep_every"):
        _check(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), "must be >= 0")
    _check(t.keep_last >= 1, "train.keep_last", t.keep_last, "must be >= 1")
    for i, what in enumerate(t.resume_allow_mismatch):
        _choice(what, f"train.resume_allow_mismatch[{i}]", ("mixture", "model", "tokenizer"))
    _check(t.peak_tflops >= 0, "train.peak_tflops", t.peak_tflops, "must be >= 0")

    if cfg.deepspeed.config_file is not None:
        _check(os.path.isfile(cfg.deepspeed.config_file), "deepspeed.config_file", cfg.deepspeed.config_file, "must be an existing JSON file")
    _choice(cfg.tracking.wandb.mode, "tracking.wandb.mode", ("offline", "online", "disabled"))

    s = cfg.slurm
    for name in ("nodes", "gpus_per_node", "cpus_per_task", "time_min"):
        _check(getattr(s, name) > 0, f"slurm.{name}", getattr(s, name), "must be > 0")
    _check(s.max_requeues >= 0, "slurm.max_requeues", s.max_requeues, "must be >= 0")
    _check(s.max_failures >= 0, "slurm.max_failures", s.max_failures, "must be >= 0")

    e = cfg.eval
    for i, src in enumerate(e.tasks):
        validate_source(src, f"eval.tasks[{i}]")
    _check(e.shots >= 0, "eval.shots", e.shots, "must be >= 0")
    _check(e.max_new_tokens > 0, "eval.max_new_tokens", e.max_new_tokens, "must be > 0")
    _check(e.limit is None or e.limit > 0, "eval.limit", e.limit, "must be > 0")
    _check(e.batch_size > 0, "eval.batch_size", e.batch_size, "must be > 0")
    _check(e.every >= 0, "eval.every", e.every, "must be >= 0")


def validate_source(t: TaskSource, path: str) -> None:
    given = [k for k in ("path", "hub", "builtin") if getattr(t, k)]
    _check(len(given) == 1, path, {k: getattr(t, k) for k in given}, "needs exactly one of path, hub, builtin")
    if t.schema is not None:
        _choice(t.schema, f"{path}.schema", SCHEMAS)
    _check(t.n > 0, f"{path}.n", t.n, "must be > 0")
    _check(t.task_field is None or (isinstance(t.task_field, str) and t.task_field and not t.builtin),
           f"{path}.task_field", t.task_field, "must be a column name of a file or hub source")
    canonical = ("task", "instruction", "input", "output", "references", "rationale", "category", "messages",
                 "conversations", "prompt", "completion")
    for k in t.fields:
        _choice(k, f"{path}.fields.{k}", canonical)


# --------------------------------------------------------------------------- saving


SECRET_WORDS = ("key", "token", "secret", "password")  # whole words of a key: api_key, hf_token


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data, with anything that looks like a secret removed."""

    def scrub(node):
        if isinstance(node, dict):
            return {k: ("<redacted>" if set(str(k).lower().split("_")) & set(SECRET_WORDS) and isinstance(v, str) else scrub(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    return scrub(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
    os.replace(tmp, path)
