"""Checkpoints written beside training: one thread serialises and writes them, so that a snapshot
or resume state costs the loop only its copy to host memory, not the disk.

The loop submits a job that owns its data (tensors already copied to host memory,
`checkpoint.host_copy`, so later in-place updates of the model or optimiser cannot reach the
file). Jobs run one at a time in the order submitted, each writing as train/checkpoint.py always
has: a temporary file, a rename, the checksum last; a kill at any moment leaves the previous file
or none, never a torn one with a valid checksum. At most `pending` jobs are unfinished at once,
each holding one host copy: a further `submit` waits (back-pressure) rather than dropping a state
or letting memory grow.

What reads a file just written (the manifest entry of a snapshot, the pruning of older resume
states, the links of a forkable state) is part of the same job, after the write, on this thread:
the queue orders it after the write without the loop ever waiting for the disk, as a flush before
each of them would. A failed job's error is raised in the training thread at the next `submit` or
at `close`, which waits for every pending job; the loop closes the writer however training ends
(finished, preempted, or failed), so a run never leaves a state it reported saved unwritten.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], object]


class CheckpointWriter:
    """One background thread running checkpoint jobs in order, at most `pending` unfinished."""

    def __init__(self, pending: int) -> None:
        self._slots = threading.Semaphore(pending)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`, waiting while `pending` jobs are unfinished; raises the error of a job
        that failed since the last submit (and then queues nothing)."""
        self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            self._raise_failure()
        self._jobs.put(job)

    def close(self) -> None:
        """Wait for every submitted job and end the thread; raises a failed job's error not yet
        raised. Closing again does nothing."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self._raise_failure()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _raise_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _work(self) -> None:
        for job in iter(self._jobs.get, None):
            try:
                job()
            except BaseException as err:  # noqa: BLE001 - raised in the training thread instead
                if self._failure is None:
                    self._failure = err
                else:  # the first error is raised; any later one is logged, never lost
                    log.error("writing a checkpoint failed too: %r", err)
            finally:
                self._slots.release()
            del job  # its host copy is freed now, not when the next job arrives
