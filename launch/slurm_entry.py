#!/usr/bin/env python
"""One Slurm task of a training job (srun starts one per GPU): exports the torch environment
(MASTER_ADDR = first node, MASTER_PORT from the job id, RANK/WORLD_SIZE/LOCAL_RANK from SLURM_*)
and runs the `ift train` entry, ift.train.train.

    srun python launch/slurm_entry.py CONFIG [key.sub=value ...] [--only-task T]

Exit codes: 0 finished; 3 stopped early by SIGUSR2/SIGTERM with a checkpoint saved on all ranks
(slurm/train.sbatch then requeues the job); 2 a user error (never requeued); anything else a crash
(slurm/train.sbatch requeues it up to slurm.max_failures times, ift.launch.requeue). `ift submit`
runs the same code (ift.launch.job) through submitit instead of this file.
"""

import sys

from ift.cli import slurm_task_main

if __name__ == "__main__":
    sys.exit(slurm_task_main())
