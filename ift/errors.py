"""Two kinds of failure, so that a user can tell their mistake from ours.

- `UserError`: the input is wrong (a config field, a data file, a flag). The CLI prints one
  `error: <message>` line, no traceback, and exits 2; Slurm never requeues it.
- `RunError`: the run failed although the input was accepted (a library step such as DeepSpeed's
  checkpoint loader or ds_to_universal failed, the loss stopped being finite). The CLI logs the
  traceback, prints `failed: <message>` and exits 1; on Slurm it counts as a crash (requeued up to
  slurm.max_failures times).
"""


class UserError(Exception):
    """A mistake in the user's input: shown as `error: <message>` without a traceback (exit 2)."""


class RunError(Exception):
    """The run failed, not the input: the traceback goes to the log (exit 1)."""


EXIT_OK, EXIT_RUN_ERROR, EXIT_USER_ERROR = 0, 1, 2
