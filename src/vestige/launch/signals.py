"""Stop a training cleanly when SLURM is about to end its job, and put the job back in the queue.

SLURM warns a job ahead of its time limit or a preemption with the signal chosen by
`sbatch --signal=B:USR2@120` (USR2 is vestige's default) and ends it with SIGTERM, then SIGKILL
`KillWait` seconds later (30 s by default). On either signal the training finishes its current
step, writes a resume state and exits; the next run of the same config lands in the same run
directory and continues from there.

Only the warning requeues the job (`scontrol requeue $SLURM_JOB_ID`): SIGTERM comes both from
SLURM's own requeue or preemption, which put the job back themselves, and from `scancel`, which
must stay a cancel. Ctrl-C (SIGINT) stops the same clean way; a second Ctrl-C quits at once
(the run then continues from its previous resume state).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

WARNING_SIGNAL = signal.SIGUSR2
STOP_SIGNALS = (WARNING_SIGNAL, signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Remembers the first stop signal this process received; the loop asks `requested()`."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            log.warning("received %s: stopping after this step", self.received.name)
            if self.received == signal.SIGINT:
                print(
                    "Ctrl-C: finishing this step and saving a resume state "
                    "(Ctrl-C again quits at once)",
                    file=sys.stderr,
                    flush=True,
                )
        elif signum == signal.SIGINT and self.received == signal.SIGINT:
            print("Ctrl-C again: quitting now", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGINT)

    @property
    def interrupted(self) -> bool:
        """Stopped by the person at the terminal (Ctrl-C), not by the cluster."""
        return self.received == signal.SIGINT

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Catch the stop signals while the block runs; the previous handlers come back after."""
        previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def requeue(self) -> bool:
        """After SLURM's warning signal, put this job back in the queue; returns whether it did.

        The job must have been submitted with `--requeue` (or the cluster's default allows it).
        """
        job = os.environ.get("SLURM_JOB_ID")
        if self.received != WARNING_SIGNAL or job is None:
            return False
        result = subprocess.run(
            ["scontrol", "requeue", job], capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            log.error("scontrol requeue %s failed: %s", job, result.stderr.strip())
            return False
        log.info("requeued SLURM job %s", job)
        return True

    def exit_code(self, requeued: bool) -> int:
        """0 when the job is back in the queue; otherwise 128 + the signal, as a shell reports
        a process ended by it."""
        return 0 if requeued or self.received is None else 128 + self.received
