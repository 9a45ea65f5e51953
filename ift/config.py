"""One typed configuration tree for a run, loaded from YAML with `key.sub=value` overrides.

Each section is a dataclass whose fields carry their documentation, and whose `check(at)` validates
it (`at`: its dotted path). Every user mistake becomes a `ConfigError` naming the dotted field; the
CLI prints it as one `error:` line and exits 2. The loading machinery is in `ift.config_loader`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from ift.atomic import write_text
from ift.config_loader import ConfigError, apply_override, build, check_choices, read_yaml, require
from ift.errors import UserError

__all__ = [
    "ConfigError",
    "UserError",
    "RunConfig",
    "ModelConfig",
    "TaskSource",
    "GroupConfig",
    "AdaptConfig",
    "MixtureConfig",
    "DataConfig",
    "TrainConfig",
    "DeepSpeedConfig",
    "WandbConfig",
    "TrackingConfig",
    "SlurmConfig",
    "EvalConfig",
    "Config",
    "load_config",
    "single_task",
    "read_yaml",
    "validate",
    "validate_source",
    "to_dict",
    "save_config",
]

Strategy = Literal["explicit", "proportional", "temperature"]
"""How a mixture (or a group) sets its tasks' rates: `explicit`: the `weights` given; `proportional`:
by task size, capped at `cap`; `temperature`: seqio's min(size, cap) ** (1 / temperature)."""
TemplateName = Literal["zero_shot", "few_shot", "cot"]
"""A prompt template: `zero_shot`: instruction + input; `few_shot`: with `few_shot_k` exemplars of the same
task; `cot`: the target carries the rationale when there is one."""


@dataclass
class RunConfig:
    name: str = "demo"
    """The run's name: its directory is `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    seed: int = 0

    def check(self, at: str) -> None:
        require(
            bool(self.name) and "/" not in self.name, f"{at}.name", self.name, "must be a non-empty name without '/'"
        )


@dataclass
class ModelConfig:
    name_or_path: str | None = None
    """A local folder or hub id (from_pretrained); or else `config`."""
    config: dict | None = None
    """An inline architecture (e.g. a tiny Llama), randomly initialized."""
    tokenizer: str | None = None
    """Default: name_or_path, or a BPE trained on the run's data."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, else fp32."""
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = "auto"
    """auto: flash_attention_2 on CUDA when flash_attn is installed, else sdpa."""
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False

    def check(self, at: str) -> None:
        check_choices(self, at)
        require(
            self.name_or_path is None or self.config is None,
            at,
            "name_or_path and config",
            f"set one of {at}.name_or_path and {at}.config, not both",
        )


FieldName = Literal[
    "task",
    "instruction",
    "input",
    "output",
    "references",
    "rationale",
    "category",
    "messages",
    "conversations",
    "prompt",
    "completion",
]
"""The canonical record fields that a source's `fields` can rename."""


@dataclass
class TaskSource:
    """Where tasks come from: exactly one of `path`, `hub`, `builtin`."""

    name: str | None = None
    """Default: the file stem (one task per file) or the hub id."""
    path: str | None = None
    """A file, directory or glob, relative to data.root."""
    hub: str | None = None
    """A datasets.load_dataset id."""
    builtin: str | None = None
    """The built-in suite: train | heldout | all | <task name>."""
    split: str = "train"
    subset: str | None = None
    schema: Literal["alpaca", "sni", "messages", "sharegpt", "prompt_completion"] | None = None
    """The records' layout; auto-detected when unset."""
    task_field: str | None = None
    """A column naming each record's task: one task per distinct value."""
    fields: dict[FieldName, Any] = field(default_factory=dict)
    """Renames: canonical field name -> the column holding it."""
    n: int = 200
    """Examples per task, built-in suite only."""

    def check(self, at: str) -> None:
        given = [k for k in ("path", "hub", "builtin") if getattr(self, k)]
        require(len(given) == 1, at, {k: getattr(self, k) for k in given}, "needs exactly one of path, hub, builtin")
        check_choices(self, at)
        require(self.n > 0, f"{at}.n", self.n, "must be > 0")
        require(
            self.task_field is None
            or (isinstance(self.task_field, str) and bool(self.task_field) and not self.builtin),
            f"{at}.task_field",
            self.task_field,
            "must be a column name of a file or hub source",
        )


def _check_rates(section: MixtureConfig | GroupConfig, at: str) -> None:
    """The rate settings a mixture and a group share."""
    if section.cap is not None:
        require(section.cap > 0, f"{at}.cap", section.cap, "must be > 0")
    t = section.temperature
    if t is not None:
        require(t > 0 and math.isfinite(t), f"{at}.temperature", t, "must be > 0")
    for name, w in section.weights.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
        require(ok, f"{at}.weights.{name}", w, "must be a number > 0")


@dataclass
class GroupConfig:
    """A named submix: a task's rate is the group's weight x its rate inside the group."""

    name: str = ""
    weight: float = 1.0
    tasks: list = field(default_factory=list)
    """Task names or globs."""
    strategy: Strategy | None = None
    """Default: the mixture's."""
    cap: int | None = None
    temperature: float | None = None
    weights: dict = field(default_factory=dict)

    def check(self, at: str) -> None:
        require(bool(self.name), f"{at}.name", self.name, "must be set")
        require(math.isfinite(self.weight) and self.weight > 0, f"{at}.weight", self.weight, "must be > 0")
        require(len(self.tasks) > 0, f"{at}.tasks", self.tasks, "must list at least one task (empty group)")
        check_choices(self, at)
        _check_rates(self, at)


@dataclass
class AdaptConfig:
    """An adaptive mixture (ift.data.adapt): every `every` steps, new task rates from each task's loss
    since the last update. The configured strategy's rates are the prior; no `rule`: fixed rates."""

    rule: Literal["excess_loss", "learning_progress"] | None = None
    """excess_loss: DoReMi's online multiplicative weights on each task's loss above a reference;
    learning_progress: weights on each task's relative loss decrease over the window (ODM-style)."""
    every: int = 50
    """Optimizer steps between updates."""
    eta: float = 1.0
    """Step size of the multiplicative update."""
    smoothing: float = 0.1
    """Rates = (1 - smoothing) x adapted + smoothing x the base rates."""
    floor: float = 0.0
    """The least rate of every task (floor x tasks <= 1)."""
    reference: str = "initial"
    """excess_loss: `initial` (each task's loss over the first window) or a reference run's metrics.jsonl."""
    epsilon: float = 0.05
    """learning_progress: exploration, the share spread uniformly over the tasks."""
    signal: Literal["train", "heldout"] = "train"
    """train: each task's training loss; heldout: its `eval/loss/<task>` on eval.tasks of the same name."""

    def check(self, at: str) -> None:
        check_choices(self, at)
        require(self.every >= 1, f"{at}.every", self.every, "must be >= 1")
        require(math.isfinite(self.eta) and self.eta > 0, f"{at}.eta", self.eta, "must be > 0")
        for name in ("smoothing", "epsilon", "floor"):
            v = getattr(self, name)
            require(math.isfinite(v) and 0 <= v <= 1, f"{at}.{name}", v, "must be in [0, 1]")
        require(self.smoothing < 1, f"{at}.smoothing", self.smoothing, "must be < 1 (1 keeps the base rates)")
        require(bool(self.reference), f"{at}.reference", self.reference, "must be `initial` or a metrics.jsonl path")


@dataclass
class MixtureConfig:
    strategy: Strategy = "proportional"
    cap: int | None = None
    """The examples-proportional cap (FLAN: 3000)."""
    temperature: float = 1.0
    """seqio's T: 1 is proportional, higher flattens the mix."""
    weights: dict = field(default_factory=dict)
    """Task -> weight, for `explicit`."""
    groups: list[GroupConfig] = field(default_factory=list)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def check(self, at: str) -> None:
        check_choices(self, at)
        _check_rates(self, at)
        self.adapt.check(f"{at}.adapt")
        for i, g in enumerate(self.groups):
            gp = f"{at}.groups[{i}]"
            require(
                g.name not in [h.name for h in self.groups[:i]],
                f"{gp}.name",
                g.name,
                "repeats an earlier group's name",
            )
            g.check(gp)


@dataclass
class DataConfig:
    root: str | None = None
    """The folder that task paths are relative to."""
    tasks: list[TaskSource] = field(default_factory=lambda: [TaskSource(builtin="train")])
    template: TemplateName | dict[TemplateName, Any] = "zero_shot"
    """A template name, or a mix {name: proportion}."""
    few_shot_k: int = 2
    """Exemplars per few_shot prompt."""
    chat_template: Literal["auto", "none"] = "auto"
    """auto: the tokenizer's chat template when it has one; none: a plain role format."""
    on_bad_record: Literal["error", "skip"] = "error"
    """skip: bad records are skipped and counted per task."""
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    only_task: str | None = None
    """The single-task baseline (`--only-task`): train on this task of data.tasks alone, same model,
    optimizer, steps and global batch; the mixture becomes the default and run.name gets `-ft-<task>`
    unless run.name is given on the command line."""
    max_seq_len: int = 512
    packing: bool = True
    """false: one example per row, padded to the longest in the micro-batch."""
    pack_window: int = 8192
    """Examples per best-fit-decreasing window (a resume re-packs at most one)."""
    truncation: Literal["drop", "truncate_prompt_left", "error"] = "truncate_prompt_left"
    """An example over max_seq_len is dropped, loses prompt tokens from the left (a conversation keeps
    its first max_seq_len tokens), or is an error."""
    train_on_prompt: bool = False
    train_on: Literal["all_assistant", "last_assistant"] = "all_assistant"
    """Which assistant turns of a conversation are targets."""
    num_proc: int = 1
    cache_dir: str | None = None
    """Default: ~/.cache/ift."""

    def check(self, at: str) -> None:
        require(len(self.tasks) > 0, f"{at}.tasks", self.tasks, "must list at least one task source")
        for i, t in enumerate(self.tasks):
            t.check(f"{at}.tasks[{i}]")
        check_choices(self, at)
        if not isinstance(self.template, str):  # a {name: proportion} mix
            require(len(self.template) > 0, f"{at}.template", self.template, "must name at least one template")
            for name, p in self.template.items():
                ok = isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p) and p >= 0
                require(ok, f"{at}.template.{name}", p, "must be a proportion >= 0")
            require(sum(self.template.values()) > 0, f"{at}.template", self.template, "proportions must not all be 0")
        require(self.few_shot_k >= 0, f"{at}.few_shot_k", self.few_shot_k, "must be >= 0")
        require(self.max_seq_len > 0, f"{at}.max_seq_len", self.max_seq_len, "must be > 0")
        require(self.pack_window > 0, f"{at}.pack_window", self.pack_window, "must be > 0")
        require(self.num_proc >= 1, f"{at}.num_proc", self.num_proc, "must be >= 1")
        self.mixture.check(f"{at}.mixture")


@dataclass
class TrainConfig:
    max_steps: int = 100
    epochs: float | None = None
    """Epochs of the mixture; caps max_steps when set."""
    micro_batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 10
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """The decay after warm-up, down to min_lr_ratio x lr."""
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    """0 disables clipping."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO: 0 off, 1 optimizer states, 2 and gradients, 3 and parameters sharded."""
    log_every: int = 10
    save_every: int = 0
    """0: only at the end."""
    keep_last: int = 2
    keep_every: int = 0
    """Also keep every checkpoint whose step is a multiple of this (0: none)."""
    resume: str = "auto"
    """auto: from the newest complete checkpoint | never | a checkpoint path."""
    dist_timeout_min: float = 10
    """A collective of the default group (NCCL on GPUs) waits this long for a dead rank before failing."""
    host_timeout_min: float = 120
    """A rank waits this long for another's host work (tokenizer training, a cold tokenization cache,
    checkpoint verification and conversion, export) before failing; on the host (gloo) group."""
    verify_checkpoint: Literal["full", "size", "none"] = "full"
    """Checked against its manifest before loading: full = sizes and CRC-32, size = sizes, none."""
    resume_allow_mismatch: list[Literal["mixture", "model", "tokenizer"]] = field(default_factory=list)
    """What may differ from the checkpoint's run on a resume."""
    export_final: bool = False
    """Export a Hugging Face folder at the end."""
    skip_nonfinite: bool = False
    """Skip an update whose gradient is not finite (ZeRO stage >= 1) instead of failing."""
    peak_tflops: float = 0.0
    """Per device, dense bf16/fp16, for MFU; 0 = from the GPU's name (H100, H200, A100), none on CPU."""
    loss_chunk: int = 1024
    """Target tokens per chunk of the output projection + loss (bounds its memory)."""
    sequence_parallel: int = 1
    """Ulysses sequence parallelism: N consecutive ranks split every row along the sequence (the
    world is data_parallel x N; ift.sequence_parallel). 1: off."""
    tiled_mlp: bool = False
    """Compute the MLPs in tiles along the sequence (DeepSpeed's TiledMLP): less memory at long lengths."""

    def check(self, at: str) -> None:
        check_choices(self, at)
        for name in (
            "max_steps",
            "micro_batch_size",
            "grad_accum",
            "log_every",
            "loss_chunk",
            "dist_timeout_min",
            "host_timeout_min",
            "sequence_parallel",
        ):
            require(getattr(self, name) > 0, f"{at}.{name}", getattr(self, name), "must be > 0")
        require(self.epochs is None or self.epochs > 0, f"{at}.epochs", self.epochs, "must be > 0")
        require(math.isfinite(self.lr) and self.lr > 0, f"{at}.lr", self.lr, "must be > 0")
        for name in ("weight_decay", "warmup_steps", "save_every", "keep_every", "peak_tflops"):
            require(getattr(self, name) >= 0, f"{at}.{name}", getattr(self, name), "must be >= 0")
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            f"{at}.betas",
            self.betas,
            "must be two numbers in [0, 1)",
        )
        require(0 <= self.min_lr_ratio <= 1, f"{at}.min_lr_ratio", self.min_lr_ratio, "must be in [0, 1]")
        require(self.grad_clip >= 0, f"{at}.grad_clip", self.grad_clip, "must be >= 0 (0 disables clipping)")
        require(self.keep_last >= 1, f"{at}.keep_last", self.keep_last, "must be >= 1")


@dataclass
class DeepSpeedConfig:
    config_file: str | None = None
    """A DeepSpeed JSON config that replaces the generated one (it must agree with train and model)."""
    offload_optimizer: bool = False
    offload_param: bool = False
    extra: dict = field(default_factory=dict)
    """Merged into the generated config."""

    def check(self, at: str) -> None:
        if self.config_file is not None:
            require(
                os.path.isfile(self.config_file),
                f"{at}.config_file",
                self.config_file,
                "must be an existing JSON file",
            )


@dataclass
class WandbConfig:
    project: str = "ift"
    entity: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: Literal["offline", "online", "disabled"] = "offline"
    """offline (the default) needs no key."""

    def check(self, at: str) -> None:
        check_choices(self, at)


@dataclass
class TrackingConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def check(self, at: str) -> None:
        self.wandb.check(f"{at}.wandb")


@dataclass
class SlurmConfig:
    nodes: int = 1
    gpus_per_node: int = 8
    """Slurm tasks (ranks) per node."""
    cpus_per_task: int = 8
    mem_gb: int | None = None
    """--mem per node, in GB."""
    partition: str | None = None
    time_min: int = 60
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    extra_sbatch: list[str] = field(default_factory=list)
    """More "#SBATCH" lines, e.g. ["--exclusive"]."""
    max_requeues: int = 3
    """Time-outs that requeue the job."""
    max_failures: int = 2
    """Crashes (not user errors, exit 2) that requeue the job."""
    signal_delay_s: int = 180
    """USR2 this long before the time limit: save and requeue (an 8B save: ~30-90 s, README "On GPUs")."""
    folder: str | None = None
    """Submitit logs; default <run dir>/slurm."""
    gres: bool = True
    """Request --gpus-per-node; false on CPU-only clusters (gpus_per_node = tasks per node)."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run in the job before srun (module load, ...)."""
    python: str | None = None
    """The python command in the job; default: the interpreter running `ift submit`."""

    def check(self, at: str) -> None:
        for name in ("nodes", "gpus_per_node", "cpus_per_task", "time_min"):
            require(getattr(self, name) > 0, f"{at}.{name}", getattr(self, name), "must be > 0")
        for name in ("max_requeues", "max_failures"):
            require(getattr(self, name) >= 0, f"{at}.{name}", getattr(self, name), "must be >= 0")
        require(
            0 <= self.signal_delay_s < self.time_min * 60,
            f"{at}.signal_delay_s",
            self.signal_delay_s,
            f"must be in [0, {at}.time_min * 60 = {self.time_min * 60})",
        )
        for line in self.extra_sbatch:
            require(
                sbatch_option(line) is not None,
                f"{at}.extra_sbatch",
                line,
                "give a long option, e.g. --exclusive or --mail-type=END",
            )

    def sbatch_options(self) -> dict:
        """extra_sbatch entries ("--exclusive", "--mail-type=END", "#SBATCH --comment x") as
        submitit's additional_parameters {name: value or True}."""
        return dict(option for line in self.extra_sbatch if (option := sbatch_option(line)))


def sbatch_option(line: str) -> tuple[str, str | bool] | None:
    """`--mail-type=END` -> ("mail_type", "END"); None for anything but a long option."""
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    if not text.startswith("--") or len(text) < 3:
        return None
    key, _, value = text[2:].replace("=", " ", 1).partition(" ")
    return key.strip().replace("-", "_"), value.strip() or True


@dataclass
class EvalConfig:
    tasks: list[TaskSource] = field(default_factory=lambda: [TaskSource(builtin="heldout")])
    shots: int = 0
    """Exemplars per prompt."""
    max_new_tokens: int = 32
    limit: int | None = None
    """Examples per task (default: all)."""
    batch_size: int = 16
    every: int = 0
    """Evaluate the loss on a held-out sample every N steps and at the last step (0: off)."""
    generate_every: int = 0
    """Generate on eval.tasks (limit, shots, max_new_tokens, batch_size as above) every N steps and at
    the last step, examples sharded over the ranks, and log ROUGE-L / exact match per task (0: off)."""
    backend: str = "hf"
    """`ift eval`'s generation: hf (transformers, batched by prompt length) or vllm (vllm.LLM, one process)."""

    def check(self, at: str) -> None:
        for i, src in enumerate(self.tasks):
            src.check(f"{at}.tasks[{i}]")
        require(self.shots >= 0, f"{at}.shots", self.shots, "must be >= 0")
        require(self.max_new_tokens > 0, f"{at}.max_new_tokens", self.max_new_tokens, "must be > 0")
        require(self.limit is None or self.limit > 0, f"{at}.limit", self.limit, "must be > 0")
        require(self.batch_size > 0, f"{at}.batch_size", self.batch_size, "must be > 0")
        require(self.every >= 0, f"{at}.every", self.every, "must be >= 0")
        require(self.generate_every >= 0, f"{at}.generate_every", self.generate_every, "must be >= 0")
        require(self.backend in ("hf", "vllm"), f"{at}.backend", self.backend, "must be hf or vllm")


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


# --------------------------------------------------------------------------- loading, checking, saving


def load_config(path: str | None = None, overrides: tuple | list = ()) -> Config:
    """The config of a YAML file (none: the defaults) with `key.sub=value` overrides, validated."""
    raw = read_yaml(path) if path else {}
    for o in overrides:
        apply_override(Config, raw, o)
    cfg = build(Config, raw)
    if cfg.data.only_task:
        single_task(cfg, overrides)
    validate(cfg)
    return cfg


def single_task(cfg: Config, overrides) -> None:
    """The single-task baseline of a config (data.only_task): same model, optimizer, steps and global
    batch (so the same token budget with packing); only the mixture shrinks to one task. A saved
    run config loads to itself: its name already ends in the suffix."""
    cfg.data.mixture = MixtureConfig()
    suffix = f"-ft-{cfg.data.only_task}"
    if not any(o.startswith("run.name=") for o in overrides) and not cfg.run.name.endswith(suffix):
        cfg.run.name += suffix


def validate(cfg: Config) -> None:
    """Range and choice checks, section by section; types were checked while building."""
    for f in dataclasses.fields(cfg):
        getattr(cfg, f.name).check(f.name)
    require(
        not (cfg.eval.generate_every and cfg.train.sequence_parallel > 1),
        "eval.generate_every",
        cfg.eval.generate_every,
        "cannot run with train.sequence_parallel > 1 (each rank holds a slice of "
        "every sequence); set it to 0 and run `ift eval` on the checkpoints",
    )
    ds_file = check_deepspeed_file(cfg) if cfg.deepspeed.config_file else {}
    check_sequence_parallel(cfg, ds_file)


def check_sequence_parallel(cfg: Config, ds_file: dict) -> None:
    """What train.sequence_parallel and train.tiled_mlp need of the config; what they need of the
    world and the model's shape is checked where those are known (ift.sequence_parallel.check)."""
    t, d, sp = cfg.train, cfg.data, cfg.train.sequence_parallel
    if t.tiled_mlp and not d.packing:
        raise ConfigError(
            "train.tiled_mlp: needs data.packing=true (every row the same width, so every rank runs the same tiles)"
        )
    if sp == 1:
        return
    if t.zero_stage == 0:
        raise ConfigError(f"train.zero_stage=0: sequence parallelism (train.sequence_parallel={sp}) needs ZeRO 1-3")
    if d.packing and d.max_seq_len % sp:
        raise ConfigError(f"data.max_seq_len={d.max_seq_len}: must be divisible by train.sequence_parallel={sp}")
    zero = {**ds_file.get("zero_optimization", {}), **cfg.deepspeed.extra.get("zero_optimization", {})}
    if t.zero_stage == 3 and zero.get("reduce_scatter") is False:
        # without it ZeRO-3 divides some buckets by the world and others by the data-parallel size
        raise ConfigError(
            "deepspeed: zero_optimization.reduce_scatter=false with train.sequence_parallel > 1 at "
            "ZeRO-3 is not supported (DeepSpeed would scale gradients by bucket size); leave it on"
        )


def check_deepspeed_file(cfg: Config) -> dict:
    """deepspeed.config_file agrees with the typed config: batch, clipping, ZeRO stage and dtype are
    ours ("auto" in the file defers to them), and the optimizer and schedule are train.*. Returns
    the file's settings."""
    t, path = cfg.train, str(cfg.deepspeed.config_file)
    at = f"deepspeed.config_file {path}"
    try:
        with open(path) as f:  # DeepSpeedConfig.check: the file exists
            ds = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{at}:{e.lineno}: invalid JSON: {e.msg}") from None
    for key, field_name, value in (
        ("train_micro_batch_size_per_gpu", "train.micro_batch_size", t.micro_batch_size),
        ("gradient_accumulation_steps", "train.grad_accum", t.grad_accum),
        ("gradient_clipping", "train.grad_clip", t.grad_clip),
    ):
        if key in ds and ds[key] != "auto" and ds[key] != value:
            raise ConfigError(
                f'{at}: {key}={ds[key]} conflicts with {field_name}={value}; make them agree or set it to "auto"'
            )
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage != t.zero_stage:
        raise ConfigError(f"{at}: zero_optimization.stage={stage} conflicts with train.zero_stage={t.zero_stage}")
    dtype: str = cfg.model.dtype
    if dtype == "auto":  # what the trainer will resolve it to on this machine
        from ift.distributed import resolve_dtype

        dtype = resolve_dtype(dtype)
    for key in ("bf16", "fp16"):
        on = ds.get(key, {}).get("enabled")  # None when the file leaves it out
        if (on is True and dtype != key) or (on is False and dtype == key):
            raise ConfigError(f"{at}: {key}.enabled={on} conflicts with model.dtype={dtype}")
    for key in ("optimizer", "scheduler"):
        if key in ds:
            raise ConfigError(
                f"{at}: remove '{key}'; set it with train.* (lr, betas, weight_decay, warmup_steps, lr_schedule)"
            )
    return ds


def validate_source(t: TaskSource, path: str) -> None:
    t.check(path)


SECRET_WORDS = ("key", "token", "secret", "password")  # whole words of a key: api_key, hf_token


def to_dict(cfg: Config) -> dict:
    """The resolved config as plain data, with anything that looks like a secret removed."""

    def scrub(node):
        if isinstance(node, dict):
            return {
                k: (
                    "<redacted>"
                    if set(str(k).lower().split("_")) & set(SECRET_WORDS) and isinstance(v, str)
                    else scrub(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    return scrub(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str) -> None:
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
