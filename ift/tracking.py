"""Metrics: `metrics.jsonl` in the run directory and Weights & Biases (offline by default, so no
key is needed). Only rank 0 tracks. The W&B run id lives in the run directory so a resumed run,
and the evaluation of a run, continue the same W&B run."""
from __future__ import annotations

import json
import logging
import math
import os
import uuid

from ift.config import Config, to_dict

log = logging.getLogger(__name__)


def wandb_id_path(run_dir: str) -> str:
    return os.path.join(run_dir, "wandb_run_id")


class Tracker:
    def __init__(self, cfg: Config, run_dir: str, enabled: bool = True):
        self.enabled = enabled
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.wandb = None
        if not enabled:
            return
        w = cfg.tracking.wandb
        if w.mode != "disabled":
            import wandb

            id_path = wandb_id_path(run_dir)
            run_id = open(id_path).read().strip() if os.path.exists(id_path) else wandb.util.generate_id() if hasattr(wandb.util, "generate_id") else uuid.uuid4().hex[:8]
            with open(id_path, "w") as f:
                f.write(run_id)
            self.wandb = wandb.init(
                project=w.project, entity=w.entity, name=w.name or cfg.run.name, tags=list(w.tags),
                mode=w.mode, dir=run_dir, id=run_id, resume="allow", config=to_dict(cfg),
            )
            log.info("W&B run %s (%s) in %s", run_id, w.mode, os.path.join(run_dir, "wandb"))

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


def truncate_metrics(run_dir: str, after_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= after_step]
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)
