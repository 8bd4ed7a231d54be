"""The wall-clock budget of one ``fit`` (:class:`FitBudget`): where the seconds go, whether
an inner cross-validation may start another fold, and how many epochs a final member may
train in what is left.

The budget is a backstop: it decides from times measured in this very fit (the inner
CV's models, the members trained before, or a short timed probe when there is neither),
so what it cuts depends on the machine and its load; with ``seconds=None`` it cuts
nothing and the fit is the one the data's shape rules give. Every decision is recorded
(:meth:`FitBudget.record`).
"""

from __future__ import annotations

import math
import time
from typing import Any

from gatelab.train.fit import Callback

__all__ = [
    "MIN_EPOCH_FRACTION",
    "SELECTION_SHARE",
    "FitBudget",
    "StepClock",
    "check_budget",
    "epoch_steps",
]

SELECTION_SHARE = 0.5  # the inner CV may start a fold only if it ends within half the budget
MIN_EPOCH_FRACTION = 4  # a member trains at least ceil(planned epochs / 4) epochs


def check_budget(name: str, value) -> None:
    """``value`` must be None or a number > 0 (a ValueError naming ``name`` otherwise)."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if value is not None and (bad or not value > 0 or not math.isfinite(value)):
        raise ValueError(f"{name}={value!r}; expected a number of seconds > 0, or None")


class FitBudget:
    """The clock of one fit, started at ``start`` (``time.perf_counter()``), with a total
    of ``seconds`` (None: unbounded).

    Phases are timed by :meth:`lap` (the seconds since the previous lap, added to a
    phase); the rate of the model being trained (seconds per optimizer step) comes from
    :meth:`measured` (or :meth:`probed`) and sets :meth:`member_epochs`.
    """

    def __init__(self, seconds: float | None, start: float | None = None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter() if start is None else start
        self._mark = self.start
        self.phases: dict[str, float] = {}
        self.step_seconds: float | None = None  # of the architecture being fitted
        self.probe: dict[str, float] | None = None  # the timed probe's seconds and steps
        self.planned_epochs: int | None = None
        self.epochs: list[int] = []  # each member's
        self.member_seconds: list[float] = []
        self.selection_cut = False
        self.members_cut = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left of the budget (infinite without one; negative once overrun)."""
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def lap(self, phase: str) -> float:
        """Add the seconds since the previous lap to ``phase``; returns them."""
        now = time.perf_counter()
        spent, self._mark = now - self._mark, now
        self.phases[phase] = self.phases.get(phase, 0.0) + spent
        return spent

    def another_fold(self, fold_seconds: list[float], selection_left: float) -> bool:
        """Whether one more inner-CV fold, as long as the mean of ``fold_seconds``, ends
        within ``selection_left`` seconds and within :data:`SELECTION_SHARE` of the
        budget. A refusal marks the selection as cut."""
        need = sum(fold_seconds) / len(fold_seconds)
        left = selection_left
        if self.seconds is not None:
            left = min(left, SELECTION_SHARE * self.seconds - self.elapsed())
        ok = need <= left
        self.selection_cut = self.selection_cut or not ok
        return ok

    def measured(self, seconds: float, steps: int) -> None:
        """A model of the architecture being fitted took ``seconds`` for the ``steps``
        optimizer steps it ran (those that ran, not those planned: a member stopped early
        or resumed from a checkpoint runs fewer); none leaves the rate as it was."""
        if steps > 0:
            self.step_seconds = seconds / steps

    def needs_rate(self, planned: int, saved: int | None) -> bool:
        """Whether :meth:`member_epochs` could cut a member of ``planned`` epochs but has
        no rate to cut by (a budget, no measured rate, no checkpoint's epochs ``saved``,
        and fewer than ``planned`` epochs allowed): then a short timed probe measures one
        (:meth:`probed`)."""
        cut = math.ceil(planned / MIN_EPOCH_FRACTION) < planned
        return self.seconds is not None and self.step_seconds is None and saved is None and cut

    def probed(self, seconds: float, steps: int) -> None:
        """A probe (the first member trained briefly, then restored) took ``seconds`` for ``steps``
        optimizer steps: the rate, recorded as the probe's."""
        self.probe = {"seconds": seconds, "steps": steps}
        self.measured(seconds, steps)

    def member_epochs(
        self,
        planned: int,
        steps_per_epoch: int,
        members_left: int,
        overhead: float = 0.0,
        saved: int | None = None,
    ) -> int:
        """The epochs of the next member: ``planned``, or fewer so that it and the
        ``members_left - 1`` after it fit in what is left at the measured rate, each of
        those also paying ``overhead`` seconds before it trains (what this one's set-up
        took); at least ``ceil(planned / MIN_EPOCH_FRACTION)``. Without a budget or a
        measured rate: ``planned``. ``saved``: the epochs of the member's checkpoint
        being resumed, taken as they are (a checkpoint resumes only with its own
        settings)."""
        self.planned_epochs = planned
        epochs = planned
        if saved is not None:
            epochs = saved
        elif self.seconds is not None and self.step_seconds is not None:
            member = (self.left() - overhead * (members_left - 1)) / members_left
            fits = math.floor(member / (self.step_seconds * steps_per_epoch))
            epochs = min(planned, max(math.ceil(planned / MIN_EPOCH_FRACTION), fits))
        self.members_cut = self.members_cut or epochs < planned
        self.epochs.append(epochs)
        return epochs

    def agreed(self, epochs: int) -> int:
        """Replace the last member's epochs by ``epochs`` (rank 0's, under
        torch.distributed); returns them."""
        self.epochs[-1] = epochs
        self.members_cut = self.members_cut or epochs < (self.planned_epochs or epochs)
        return epochs

    def record(self) -> dict[str, Any]:
        """What the budget did: seconds per phase, each member's epochs and seconds,
        whether it cut the inner CV or the members, and the probe's seconds and steps
        (None: no probe ran) (JSON-ready)."""
        return {
            "time_budget": self.seconds,
            "seconds": {**self.phases, "total": self.elapsed()},
            "member_seconds": self.member_seconds,
            "planned_epochs": self.planned_epochs,
            "member_epochs": self.epochs,
            "selection_cut": self.selection_cut,
            "members_cut": self.members_cut,
            "probe": self.probe,
        }


class StepClock(Callback):
    """The seconds from the start of a ``fit``'s first epoch to the end of its last
    optimizer step, and the number of steps (not the set-up before them)."""

    def on_train_begin(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        self.start = self.end = time.perf_counter()
        self.steps = 0

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        self.end = time.perf_counter()
        self.steps += 1

    def seconds(self) -> float:
        return self.end - self.start


def epoch_steps(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``n`` series (``fit``'s batches)."""
    return math.ceil(n / batch_size)
