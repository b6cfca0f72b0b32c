"""Checkpoint on preemption, time-out or Ctrl-C, then hand the signal back.

SLURM (through submitit) warns a job with SIGUSR2 before its time limit or preemption, and SIGTERM ends
it; Ctrl-C sends SIGINT (a second Ctrl-C stops at once, losing the steps since the last checkpoint).
While training runs, `PreemptionGuard` only records such a signal. After every optimizer step the
ranks agree (all-reduce of the signal number) on whether any of them got one, so all of them stop at the
same step, save the same checkpoint and stop. `hand_over` then calls the handler installed before ours
(submitit's, which requeues the job) or exits with 128 + the signal number. The stage is never marked
complete on that path, and the next run resumes from the checkpoint.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from meds1.training.distributed import any_rank

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped early on a signal after saving a checkpoint at `step`."""

    def __init__(self, signum: int, step: int, previous_handler):
        super().__init__(f"stopped by {signal.Signals(signum).name} after saving a checkpoint at step {step}")
        self.signum = signum
        self.step = step
        self.previous_handler = previous_handler

    def hand_over(self) -> None:
        """Give the signal to the handler that was there before training (or exit non-zero)."""
        if callable(self.previous_handler):
            log.info("handing %s over to the previous handler", signal.Signals(self.signum).name)
            self.previous_handler(self.signum, None)
        sys.exit(128 + self.signum)


class PreemptionGuard:
    """Records SIGUSR2/SIGTERM/SIGINT while training; restores the previous handlers on exit."""

    def __init__(self, signals: tuple[int, ...] = SIGNALS):
        self.signals = signals
        self.received = 0
        self.previous: dict[int, object] = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT == self.received:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now
        first, self.received = not self.received, signum
        if first:
            again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
            log.warning("%s received: checkpointing at the next step%s", signal.Signals(signum).name, again)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is not threading.main_thread():
            log.warning("training outside the main thread: SIGUSR2/SIGTERM/SIGINT will not checkpoint first")
            return self
        for signum in self.signals:
            self.previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def agreed_signal(self) -> int:
        """The signal any rank received so far (0 if none); the same answer on every rank."""
        return any_rank(self.received)

    def preempted(self, signum: int, step: int) -> Preempted:
        return Preempted(signum, step, self.previous.get(signum))


def stop_on_signal_callback(guard: PreemptionGuard):
    """A TrainerCallback that saves a checkpoint and stops training at the first step after a signal."""
    from transformers import TrainerCallback

    class StopOnSignal(TrainerCallback):
        signum = 0
        step = None

        def on_step_end(self, args, state, control, **kwargs):
            signum = guard.agreed_signal()
            # At the last step training ends anyway: finish it normally (the stage then completes).
            if signum and not self.signum and state.global_step < state.max_steps:
                self.signum, self.step = signum, state.global_step
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopOnSignal()
