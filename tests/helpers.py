"""Shared utilities for tests (and bench/) that run real `ift train` jobs: a tiny-run YAML
config written into a temporary folder, the `ift train` subprocess, and metrics.jsonl reading."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ift.launch.job import TORCH_ENV

REPO = Path(__file__).resolve().parents[1]

# A Llama small enough that a step takes milliseconds on one CPU core. vocab_size >= 259: the
# byte-level BPE trained for an inline model has 256 byte tokens + 3 specials before any merge.
TINY_MODEL = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "vocab_size": 320,
    "max_position_embeddings": 128,
}


# Different tasks and templates: examples of very different lengths and target counts, for the runs
# whose losses must agree across layouts (packing, micro-batches, ranks, sequence parallelism).
MIXED_DATA = {
    "tasks": [
        {"builtin": "reverse_word", "n": 32},
        {"builtin": "sort_ascending", "n": 32},
        {"builtin": "sentiment", "n": 32},
    ],
    "template": {"zero_shot": 0.5, "few_shot": 0.5},
    "pack_window": 16,
}


def tiny_llama(texts: list[str], *, seed: int = 0, **config):
    """(model, tokenizer): a random TINY_MODEL-shaped Llama seeded with `seed` (`config` overrides
    LlamaConfig fields) and a byte-level BPE trained on `texts`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ift.model import train_bpe_tokenizer

    tok = train_bpe_tokenizer(texts, vocab_size=300)
    shape = {k: v for k, v in TINY_MODEL.items() if k not in ("model_type", "vocab_size", "max_position_embeddings")}
    lm_config = LlamaConfig(
        **shape,
        **config,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(lm_config), tok


def save_tiny_llama(folder, texts: list[str], **config) -> Path:
    """tiny_llama saved as a plain Hugging Face folder: what `ift eval` and the harness read."""
    folder = Path(folder)
    model, tok = tiny_llama(texts, **config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_config(tmp_path, name: str = "tiny", *, cache_dir=None, **sections) -> dict:
    """A complete tiny-run config as a dict; keyword sections (run=..., train=...) are deep-merged."""
    tmp_path = Path(tmp_path)
    cfg = {
        "run": {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 0},
        "model": {"config": dict(TINY_MODEL)},
        "data": {
            "tasks": [{"builtin": "reverse_word", "n": 64}],
            "template": "zero_shot",
            "max_seq_len": 64,
            "cache_dir": str(cache_dir or tmp_path / "cache" / name),
        },
        "train": {
            "max_steps": 4,
            "micro_batch_size": 4,
            "grad_accum": 1,
            "lr": 1e-3,
            "warmup_steps": 0,
            "lr_schedule": "constant",
            "log_every": 1,
            "zero_stage": 2,
        },
        "tracking": {"wandb": {"mode": "disabled"}},
    }
    return _merge(cfg, sections)


def write_config(tmp_path, name: str = "tiny", **sections) -> Path:
    """Write tiny_config(...) to <tmp_path>/<name>.yaml and return its path."""
    cfg = tiny_config(tmp_path, name, **sections)
    path = Path(tmp_path) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_dir(config_path, only_task: str | None = None) -> Path:
    cfg = yaml.safe_load(Path(config_path).read_text())
    name = cfg["run"]["name"] + (f"-ft-{only_task}" if only_task else "")
    return Path(cfg["run"]["output_dir"]) / name


def train_env(threads: int = 1) -> dict:
    env = dict(os.environ)
    env.update(
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        WANDB_SILENT="true",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    for k in TORCH_ENV:
        env.pop(k, None)  # never inherit a launcher's world
    return env


def train_command(config_path, *overrides: str, nproc: int = 1, only_task: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "ift", "train", str(config_path), *overrides]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    if only_task:
        cmd += ["--only-task", only_task]
    return cmd


class TrainJob:
    """A started `ift train` subprocess; .wait() returns a CompletedProcess (stdout, stderr, returncode)."""

    def __init__(self, config_path, *overrides: str, nproc: int = 1, only_task: str | None = None, threads: int = 1):
        self.config_path, self.only_task = Path(config_path), only_task
        self.cmd = train_command(config_path, *overrides, nproc=nproc, only_task=only_task)
        # Output goes to files, not pipes: several jobs run at once and a full pipe would stall one.
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=str(REPO),
            env=train_env(threads),
            stdout=self._out,
            stderr=self._err,
            text=True,
            start_new_session=True,
        )
        self.result: subprocess.CompletedProcess | None = None

    @property
    def run_dir(self) -> Path:
        return run_dir(self.config_path, self.only_task)

    @staticmethod
    def _read(f) -> str:
        f.seek(0)
        text = f.read()
        f.close()
        return text

    def wait(self, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        if self.result is None:
            timed_out = False
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: torchrun and its workers
                self.proc.wait()
            out, err = self._read(self._out), self._read(self._err)
            if timed_out:
                raise AssertionError(f"{' '.join(self.cmd)} timed out after {timeout}s\n{err[-4000:]}")
            self.result = subprocess.CompletedProcess(self.cmd, self.proc.returncode, out, err)
        if check and self.result.returncode != 0:
            raise AssertionError(
                f"{' '.join(self.cmd)} exited {self.result.returncode}\n--- stdout\n"
                f"{self.result.stdout[-3000:]}\n--- stderr\n{self.result.stderr[-8000:]}"
            )
        return self.result


def run_train(
    config_path,
    *overrides: str,
    nproc: int = 1,
    only_task: str | None = None,
    check: bool = True,
    timeout: float = 900,
    threads: int = 1,
) -> subprocess.CompletedProcess:
    """`python -m ift train CONFIG [overrides] [--nproc-per-node N] [--only-task T]` in a subprocess.
    With check=True a non-zero exit fails with the tail of the output."""
    return TrainJob(config_path, *overrides, nproc=nproc, only_task=only_task, threads=threads).wait(timeout, check)


def run_concurrently(jobs: dict) -> dict:
    """Start every {name: (config_path, kwargs)} at once (subprocess start-up, mostly imports, dominates
    tiny runs) and wait for all; returns {name: TrainJob} without checking exit codes."""
    started = {name: TrainJob(path, **kwargs) for name, (path, kwargs) in jobs.items()}
    for job in started.values():
        job.wait(check=False)
    return started


def read_metrics(run: Path) -> list[dict]:
    with open(Path(run) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def final_checkpoint(run: Path) -> Path:
    ckpts = sorted(p for p in (Path(run) / "checkpoints").glob("step_*") if (p / "COMPLETE").exists())
    assert ckpts, f"no complete checkpoint under {run}/checkpoints"
    return ckpts[-1]


def consolidated_state(run: Path) -> dict:
    """fp32 state dict of the run's newest checkpoint, gathered from every ZeRO shard."""
    from ift.export import load_consolidated

    model, _ = load_consolidated(str(final_checkpoint(run)))
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


def pretrained_folder(path: Path) -> tuple[int, int]:
    """A tiny Llama + BPE tokenizer saved with save_pretrained. lm_head is all zeros, so a model
    that really loaded these weights starts at loss ln(vocab_size) exactly (uniform logits)."""
    import torch

    from ift.data import builtin

    texts = [
        f"{e['instruction']}\nInput: {e['input']}\nOutput: {e['output']}" for e in builtin.examples("reverse_word", 64)
    ]
    max_positions = TINY_MODEL["max_position_embeddings"]
    model, tok = tiny_llama(texts, seed=1, tie_word_embeddings=False, max_position_embeddings=max_positions)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return model.config.vocab_size, len(tok.get_vocab())


def submit_cmd() -> list[str]:
    return [sys.executable, "-m", "ift", "submit"]


def submit_main(argv: list[str]) -> subprocess.CompletedProcess:
    """`ift submit ...` in a subprocess, as a user runs it."""
    return subprocess.run([*submit_cmd(), *argv], capture_output=True, text=True, env=train_env(), timeout=120)


def dry_run(*argv) -> str:
    """The output of `ift submit ... --dry-run` (no cluster needed)."""
    done = submit_main([*argv, "--dry-run"])
    assert done.returncode == 0, done.stderr
    return done.stdout
