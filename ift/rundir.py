"""The run directory: every file a run keeps, by name, and "a run directory or a checkpoint".

<output_dir>/<run.name>/
    config.yaml       the resolved config (secrets redacted)        ift.train
    mixture.json      tasks, examples, rates, skipped records       ift.train; read by ift compare
    metrics.jsonl     one line per logging step                     ift.tracking
    tokenizer/        the tokenizer the run trained with            ift.train
    checkpoints/      step_<8 digits>/ (see ift.checkpoint), latest
    wandb_run_id      the W&B run id: a resume and `ift eval` continue the same W&B run
    wandb/            offline W&B runs
    requeues.jsonl    one line per Slurm stop or crash that requeued (or did not requeue) the job
    eval/             <name>.json and <name>.md of `ift eval`
    export/           the Hugging Face folder of train.export_final
    slurm/            submitit's scripts and logs of `ift submit`
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ift.errors import UserError

# ift.checkpoint (torch) is imported where it is needed: `ift compare` reads a run without torch.


@dataclass(frozen=True)
class RunDir:
    path: str

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    config = property(lambda self: self._join("config.yaml"))
    mixture = property(lambda self: self._join("mixture.json"))
    metrics = property(lambda self: self._join("metrics.jsonl"))
    tokenizer = property(lambda self: self._join("tokenizer"))
    checkpoints = property(lambda self: self._join("checkpoints"))
    wandb_id = property(lambda self: self._join("wandb_run_id"))
    wandb = property(lambda self: self._join("wandb"))
    requeues = property(lambda self: self._join("requeues.jsonl"))
    eval = property(lambda self: self._join("eval"))
    export = property(lambda self: self._join("export"))
    slurm = property(lambda self: self._join("slurm"))

    def read_wandb_id(self) -> str | None:
        if not os.path.isfile(self.wandb_id):
            return None
        with open(self.wandb_id) as f:
            return f.read().strip() or None

    def write_wandb_id(self, run_id: str) -> None:
        with open(self.wandb_id, "w") as f:
            f.write(run_id)

    def newest_checkpoint(self) -> int | None:
        """The step of the newest checkpoint with its completion marker (not verified)."""
        from ift import checkpoint

        done = checkpoint.complete_checkpoints(self.checkpoints)
        return done[-1][0] if done else None


def of_checkpoint(ckpt: str) -> RunDir:
    """The run directory a checkpoint folder belongs to (<run dir>/checkpoints/step_N)."""
    return RunDir(os.path.dirname(os.path.dirname(os.path.abspath(ckpt).rstrip("/"))))


def is_run_dir(path: str) -> bool:
    return os.path.isdir(RunDir(path).checkpoints)


def is_run_or_checkpoint(path: str) -> bool:
    from ift import checkpoint

    return is_run_dir(path) or checkpoint.is_complete(path)


def resolve(path: str, verify: str = "full", what: str | None = None) -> tuple[RunDir, str]:
    """(run directory, checkpoint) of a run directory (its newest valid checkpoint; damaged newer
    ones are set aside) or of a checkpoint folder (which must pass verification). `what` prefixes
    the error messages (a config field or a verb's argument)."""
    from ift import checkpoint

    path = os.path.abspath(os.path.expanduser(path))
    where = f"{what}: " if what else ""
    if is_run_dir(path):
        run = RunDir(path)
        found = checkpoint.newest_valid(run.checkpoints, verify)
        if not found:
            raise UserError(f"{where}{path}: no valid complete checkpoint in {run.checkpoints}")
        return run, found
    if not checkpoint.is_complete(path):
        raise UserError(
            f"{where}{path}: not a run directory (no checkpoints/) or a complete checkpoint "
            f"(no {checkpoint.DONE_FILE} marker)"
        )
    from ift import distributed

    # one rank reads the files (an 8B checkpoint is ~100 GB), every rank gets its verdict
    problems = distributed.broadcast_object(
        checkpoint.verify_checkpoint(path, verify) if distributed.rank() == 0 else None
    )
    if problems:
        raise UserError(f"{where}{path}: damaged checkpoint: {problems[0]}")
    return of_checkpoint(path), path


def resume_checkpoint(resume: str, run: RunDir, verify: str = "full") -> str | None:
    """What train.resume names: `auto` = the run's newest valid checkpoint (or none), `never`, or a
    run directory or checkpoint folder (which must hold a valid one)."""
    from ift import checkpoint

    if resume == "never":
        return None
    if resume == "auto":
        return checkpoint.newest_valid(run.checkpoints, verify)
    return resolve(resume, verify, what="train.resume")[1]
