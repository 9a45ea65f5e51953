"""Metrics: `metrics.jsonl` in the run directory and Weights & Biases (offline by default, so no
key is needed). Only rank 0 tracks. The W&B run id lives in the run directory so a resumed run,
and the evaluation of a run, continue the same W&B run."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid

from ift.atomic import write_text
from ift.config import Config, to_dict
from ift.rundir import RunDir

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, cfg: Config, run_dir: str, enabled: bool = True):
        run = RunDir(run_dir)
        self.enabled = enabled
        self.metrics_path = run.metrics
        self.wandb = None
        if not enabled:
            return
        w = cfg.tracking.wandb
        if w.mode != "disabled":
            import wandb

            run_id = run.read_wandb_id() or uuid.uuid4().hex[:8]
            run.write_wandb_id(run_id)
            self.wandb = wandb.init(
                project=w.project,
                entity=w.entity,
                name=w.name or cfg.run.name,
                tags=list(w.tags),
                mode=w.mode,
                dir=run_dir,
                id=run_id,
                resume="allow",
                config=to_dict(cfg),
            )
            log.info("W&B run %s (%s) in %s", run_id, w.mode, run.wandb)

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def table(self, name: str, rows: list[dict]) -> None:
        if self.enabled and self.wandb is not None and rows:
            import wandb

            columns = list(rows[0])
            self.wandb.log({name: wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})

    def finish(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def truncate_metrics(run: RunDir, after_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    try:
        with open(run.metrics) as f:
            keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= after_step]
    except FileNotFoundError:
        return
    write_text(run.metrics, "".join(keep))


def continue_run(run: RunDir, step: int, wandb_id: str | None) -> None:
    """On resume (rank 0): metrics.jsonl as it was at the checkpoint, and the same W&B run."""
    truncate_metrics(run, step)
    if wandb_id and not os.path.exists(run.wandb_id):
        run.write_wandb_id(wandb_id)
