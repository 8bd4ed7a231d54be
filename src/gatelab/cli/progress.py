"""Progress on the terminal: the ``rich`` display of the training loops' callbacks.

The library never prints; it reports progress to callbacks
(:class:`gatelab.train.fit.Callback`, the ``on_epoch``/``on_step`` hooks of
:func:`gatelab.train.tbptt.fit_loop`). This is the command line's callback.
"""

from __future__ import annotations

from gatelab.train.fit import Callback, History

__all__ = ["RichProgress"]


class RichProgress(Callback):
    """A ``rich`` progress bar with the running loss and metric, and one line per epoch.

    Args:
        console: a ``rich.console.Console`` (default: a new one on stderr).
        description: the label in front of the bar.
    """

    def __init__(self, console=None, description: str = "train") -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.description = description
        self._progress = None
        self._task = None

    def on_train_begin(self, epochs: int, steps_per_epoch: int, start_epoch: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.epochs, self.steps = epochs, steps_per_epoch
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        if start_epoch:
            self.console.print(f"resuming after epoch {start_epoch}/{epochs}")

    def on_epoch_begin(self, epoch: int) -> None:
        self._task = self._progress.add_task(
            f"{self.description} {epoch + 1}/{self.epochs}", total=self.steps, stats=""
        )

    def on_batch_end(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        stats = "  ".join(f"{k} {v:.4f}" for k, v in logs.items())
        self._progress.update(self._task, completed=step + 1, stats=stats)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        self._progress.remove_task(self._task)
        stats = "  ".join(f"{k} {v:.4g}" for k, v in logs.items())
        self.console.print(f"epoch {epoch + 1}/{self.epochs}  {stats}")

    def on_train_end(self, history: History) -> None:
        if self._progress is not None:
            self._progress.stop()
        if history.best_epoch is not None:
            self.console.print(
                f"best epoch {history.best_epoch + 1}: {history.monitor} "
                f"{history.best_score:.4f}" + ("  (stopped early)" if history.stopped_early else "")
            )
