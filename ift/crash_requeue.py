"""`python -m ift.crash_requeue`: the command Slurm batch scripts run after srun (see
ift.launch.requeue for what it decides, ift.cli.crash_requeue_main for its arguments)."""
import sys

from ift.cli import crash_requeue_main

if __name__ == "__main__":
    sys.exit(crash_requeue_main())
