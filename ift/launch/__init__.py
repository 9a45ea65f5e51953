"""Getting a training run onto processes: `local` (N local processes with restarts, torchrun),
`submit` (planning and submitting Slurm jobs with submitit), `job` (the runtime inside a Slurm job:
the torch world from SLURM_*, signals to checkpoint and requeue), `requeue` (after a failed job
step: requeue or say why not)."""
