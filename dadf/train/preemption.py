"""Preemption: a signal sets a flag, the step loop saves at the next step boundary and stops.

SLURM (``--signal=USR2@N``), submitit and ``scancel --signal=USR2`` send SIGUSR2; schedulers, ``kill`` and the local
launcher send SIGTERM; Ctrl-C sends SIGINT (a second Ctrl-C stops at once). None may interrupt a step or a save
half-way, so the handler only records the signal. All ranks agree at the next step boundary (a max-reduce of the
flag, so one rank's signal stops them all at the same step), the trainer saves a checkpoint and raises
:class:`Preempted`. Whoever launched the cell decides what a preemption
means: the local launcher marks the cell for retry, the submitit job hands the signal back to submitit
(:meth:`Preempted.forward`), which calls the job's ``checkpoint()`` and requeues it.
"""
from __future__ import annotations

import signal

SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped at ``step`` after a checkpoint was saved, because of signal ``signum``."""

    def __init__(self, signum: int, step: int, previous_handler=None):
        self.signum, self.step, self.previous_handler = signum, step, previous_handler
        super().__init__(f"preempted by {signal.Signals(signum).name} at step {step}; "
                         f"the checkpoint of step {step} was saved and a rerun resumes from it")

    def forward(self) -> None:
        """Pass the signal to the handler that was installed before the trainer's (submitit's requeue handler)."""
        if callable(self.previous_handler):
            self.previous_handler(self.signum, None)


class PreemptionGuard:
    """Context manager: while inside, SIGUSR2/SIGTERM/SIGINT only set ``self.signum``; previous handlers come back
    after, and a signal still pending when the block ends normally is then delivered to them.

    Installable only from the main thread (Python's rule for signal handlers); elsewhere it stays inert.
    """

    def __init__(self):
        self.signum: int | None = None
        self.acted_on = False  # a Preempted was made of the signal: whoever catches it decides what comes next
        self.adopted = False  # the signal came from an enclosing guard, which has it too
        self.previous: dict[int, object] = {}

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        elif signum == signal.SIGINT:  # Ctrl-C again: the user does not want to wait for the checkpoint
            raise KeyboardInterrupt

    def __enter__(self) -> PreemptionGuard:
        try:
            for s in SIGNALS:
                self.previous[s] = signal.signal(s, self._handler)
        except ValueError:  # not the main thread
            self.previous.clear()
        # Nested in another guard (a local worker holds one for its whole life): a signal that guard caught before
        # this one existed concerns this cell too.
        outer = getattr(self.previous.get(signal.SIGTERM), "__self__", None)
        if isinstance(outer, PreemptionGuard) and outer.signum is not None and self.signum is None:
            self.signum, self.adopted = outer.signum, True
        return self

    def __exit__(self, exc_type, *exc) -> None:
        previous, self.previous = self.previous, {}
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        if exc_type is None and self.signum is not None and not self.acted_on and not self.adopted \
                and self.signum in previous:
            # Left normally with a signal nobody acted on (it came after the last step boundary, or there was no
            # step loop): it goes where it would have gone without the guard.
            handler = previous[self.signum]
            if callable(handler):
                handler(self.signum, None)
            elif handler in (signal.SIG_DFL, None):
                signal.raise_signal(self.signum)

    def preempted(self, signum: int, step: int) -> Preempted:
        self.acted_on = True
        return Preempted(signum, step, self.previous.get(signum))

