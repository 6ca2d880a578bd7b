"""make sweep name=<sweeps/name.yaml>: run a sweep, or go on with it where it stopped (its finished
jobs are found by their results and skipped). The same as Hydra's own

    python -m ltd.cli.<job> --config-dir sweeps --config-name <name> [overrides]

where <job> is the job config the sweep file starts from. Overrides apply to every job, e.g.
`hydra/launcher=submitit_slurm hydra.launcher.partition=gpu` (docs/sweeps.md).
"""
import os
import sys

from ltd.cli.app import user_errors
from ltd.jobs.sweeps import SWEEPS, check_launcher, sweep_job


def main(argv: list[str]) -> None:
    with user_errors():
        job = sweep_job(argv[0] if argv else "")
        check_launcher(argv[0], argv[1:])
    os.execv(sys.executable, [sys.executable, "-m", f"ltd.cli.{job}", "--config-dir", str(SWEEPS),
                              "--config-name", argv[0], *argv[1:]])


if __name__ == "__main__":
    main(sys.argv[1:])
