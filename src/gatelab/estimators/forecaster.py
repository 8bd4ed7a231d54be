"""The forecaster of a series, :class:`Forecaster`: a linear autoregressive part
(:mod:`gatelab.models.autoregressive`) plus an LSTM term kept as far as it helps."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import RegressorMixin

from gatelab.data import Scaler
from gatelab.errors import DataError
from gatelab.estimators.base import LSTMEstimator, read_artifact
from gatelab.estimators.ensemble import members
from gatelab.models.autoregressive import LINEAR_RULES, LinearForecast
from gatelab.train import runs
from gatelab.train.fit import Callback, TensorData, TrainConfig
from gatelab.train.runs import RunFolderError

__all__ = ["Forecaster"]

logger = logging.getLogger(__name__)


class Forecaster(RegressorMixin, LSTMEstimator):
    """Forecast the next ``horizon`` values of a series: a linear autoregressive part plus
    an LSTM term, the LSTM kept only as far as it helps on validation data.

    ``fit(series)`` takes a 1-D series. Its last part (``validation_fraction``; by default
    a fifth, at least ``horizon + 7`` values) validates; the rest fits:

    1. the season ``s`` is found from the data (:func:`gatelab.models.autoregressive.find_season`,
       the autocorrelation peak of the differences) unless ``season`` is given;
    2. the linear part is an AR(p) with a constant fitted by least squares, p by AICc, on
       the values, their first differences, their seasonal differences or both (and the
       same on logs for a positive series); the transform with the lowest validation
       RMSE wins (persistence and the seasonal naive forecast are among the candidates),
       and is refitted on the whole series; without validation values, the values or
       (where a KPSS test rejects level stationarity) their first differences;
    3. the LSTM learns what the linear part leaves: its input is the window's last
       ``network steps`` values minus the window's last value (a per-window level, so a
       trend never leaves the range the network saw) when the linear part differences,
       else standard-scaled values; its target is the linear part's error, scaled;
    4. the LSTM term is then multiplied by the weight in {0, 1/4, 1/2, 3/4, 1} that gives
       the lowest validation RMSE, so the forecaster is never worse than its linear part
       on the validation data (weight 0 drops the LSTM term).

    History, model size and epochs follow from the data when left to None (docs/models.md
    lists the rules). ``fit(X, y)`` with windows ``X (N, W)`` and ``y (N,)`` or
    ``(N, horizon)`` trains on given windows instead (scikit-learn style; the linear part
    is then a direct least-squares map from the window to the horizon).

    ``predict()`` forecasts the ``horizon`` values after the training series; ``predict(s)``
    with a 1-D series ``s`` (at least ``history_steps_`` long) those after ``s``; with windows
    ``X (N, history_steps_)`` it returns ``(N, horizon)`` (``(N,)`` when ``horizon == 1``).

    Args:
        history: past values each forecast reads (None: from the season, the horizon and
            the length, at least what the linear part needs). horizon: steps at once.
        season: the seasonal period (None: found from the data; 0: none).
        linear: fit the linear part (False: the LSTM alone, on standard-scaled values).
        highway: a linear skip inside the network from its last ``highway`` inputs (0 off;
            see :class:`gatelab.models.heads.ForecastNet`).
        hidden_size: None picks 8 to 64 from the number of training windows.
        epochs: None picks enough for about 1,500 optimizer steps, fewer when the network
            reads more than 24 values (10 to 300 epochs; see :meth:`_epochs`).
        patience: epochs without a better validation RMSE before stopping; None: a fifth
            of the epochs (at least 10).
        Other arguments as :class:`TextClassifier`.
    """

    task = "forecaster"
    kind = "forecaster"
    _GATE_WEIGHTS: ClassVar[tuple[float, ...]] = (0.0, 0.25, 0.5, 0.75, 1.0)
    # epochs=None: about 1,500 optimizer steps (fewer for long windows), 10 to 300 passes
    _EPOCHS = (10, 300, 1500)
    _STEP_VALUES = 24  # network steps up to which an epoch rule's 1,500 steps hold in full
    _VALIDATION_NONE_OK = True  # None: a fifth of the series (see _n_valid)

    def __init__(
        self,
        history: int | None = None,
        horizon: int = 1,
        season: int | None = None,
        linear: bool = True,
        embedding_dim: int = 0,
        hidden_size: int | None = None,
        num_layers: int = 1,
        bidirectional: bool = False,
        pooling: str = "last",
        variant: str = "standard",
        backend: str = "auto",
        dropout: float = 0.0,
        lstm_dropout: float = 0.0,
        highway: int = 0,
        epochs: int | None = None,
        batch_size: int = 32,
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        clip_norm: float | None = 1.0,
        patience: int | None = None,
        validation_fraction: float | None = None,
        n_models: int = 3,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self._store_params(locals())

    # --- arguments and the rules behind the defaults

    def _check_sizes(self) -> None:
        for name, minimum in (("horizon", 1), ("history", 1), ("season", 0)):
            v = getattr(self, name)
            if name != "horizon" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(
                    f"{name}={v!r}; expected an int >= {minimum}"
                    + ("" if name == "horizon" else " or None")
                )
        h = self.highway
        if isinstance(h, bool) or not isinstance(h, int) or h < 0:
            raise ValueError(f"highway={h!r}; expected an int >= 0")
        if self.history is not None and h > self.history:
            raise ValueError(f"highway={h!r}; expected an int in [0, history={self.history}]")
        if self.hidden_size is not None and (
            isinstance(self.hidden_size, bool)
            or not isinstance(self.hidden_size, int)
            or self.hidden_size < 1
        ):
            raise ValueError(f"hidden_size={self.hidden_size!r}; expected an int >= 1 or None")

    def _n_valid(self, n: int) -> int:
        """Values held out at the end of a series of ``n`` for validation: a fifth (at
        least ``horizon + 7``, so that 8 forecasts are scored), none when that would
        leave fewer than 16 to fit."""
        frac = 0.2 if self.validation_fraction is None else self.validation_fraction
        if frac == 0:
            return 0
        k = max(round(frac * n), self.horizon + 7)
        return k if n - k >= 16 else 0

    def _network_steps(self, season: int, n_fit: int) -> int:
        """Values the LSTM reads: two seasons (12 without one), at least 4 horizons,
        within [8, 48] and at most a quarter of the fitting part."""
        steps = max(2 * season if season else 12, 4 * self.horizon)
        return max(4, min(steps, 48, n_fit // 4))

    def _hidden(self, n_windows: int) -> int:
        """8 to 64 units: the power of two nearest 2 sqrt(windows) (32 for 250 windows)."""
        if self.hidden_size is not None:
            return self.hidden_size
        return int(min(64, max(8, 2 ** round(math.log2(2 * math.sqrt(max(n_windows, 1)))))))

    def _epochs(self, n_train: int) -> int:
        """``epochs``, or for None enough passes for about ``1,500 * 24 / max(24, steps)``
        optimizer steps, ``steps`` the values the network reads, within 10 to 300 passes.

        An optimizer step costs about as many LSTM steps as the network reads (batches of
        32 windows are too small for the batch size to matter on a CPU), so the rule keeps
        the work per model near 36,000 LSTM steps: a weekly series (48 steps) gets half
        the optimizer steps of a monthly one (24). Short series are bound by 300 passes."""
        if self.epochs is not None:
            return self.epochs
        low, high, target = self._EPOCHS
        target = target * self._STEP_VALUES / max(self._STEP_VALUES, self.network_steps_)
        steps = math.ceil(n_train / self.batch_size)
        return min(high, max(low, math.ceil(target / steps)))

    def _train_config(self, n_train: int) -> TrainConfig:
        config = super()._train_config(n_train)
        if self.patience is None:  # a fifth of the epochs, at least 10
            config = dataclasses.replace(config, patience=max(10, config.epochs // 5))
        return config

    # --- tensors

    def _windows_data(self, X: np.ndarray, Y: np.ndarray | None, linear=None) -> TensorData:
        """Network inputs ``(N, steps, 1)`` for raw windows ``X (N, >= steps)``; targets
        are the scaled errors of the linear part (``linear``, default the fitted one) when
        ``Y (N, horizon)`` is given."""
        X = np.asarray(X, dtype=np.float64)
        w = X[:, -self.network_steps_ :]
        z = np.log(np.maximum(w, 1e-12)) if self.input_["log"] else w
        if self.input_["mode"] == "level":
            z = z - z[:, -1:]
        else:
            z = z - self.input_["center"]
        x = torch.from_numpy((z / self.input_["scale"]).astype(np.float32))[..., None]
        if Y is None:
            y = torch.zeros(len(X), self.horizon)
        else:
            resid = np.asarray(Y, dtype=np.float64) - self._linear(X, linear)
            y = torch.from_numpy(self.scaler_.transform(resid).astype(np.float32))
        lengths = torch.full((len(X),), x.shape[1], dtype=torch.long)
        return TensorData(x, lengths, y)  # x (N, steps, 1), y (N, horizon)

    def _linear(self, X: np.ndarray, linear=None) -> np.ndarray:
        linear = linear if linear is not None else self.linear_
        if linear is None:
            return np.zeros((len(X), self.horizon))
        return linear.forecast(X, self.horizon)

    def _forecast(self, X: np.ndarray) -> np.ndarray:
        """``(N, horizon)`` forecasts of raw windows ``X (N, history_steps_)``."""
        out = self._outputs(self._windows_data(X, None)).numpy().astype(np.float64)
        return self._linear(X) + self.scaler_.inverse_transform(out)

    # --- fitting

    def fit(
        self,
        X,
        y=None,
        *,
        validation_data: tuple[Any, Any] | None = None,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        overwrite: bool = False,
        callbacks: Sequence[Callback] = (),
    ) -> Forecaster:
        """Train on a 1-D series ``X`` (``y`` None), or on windows ``X (N, W)`` with
        targets ``y``. ``validation_data``: a later series (or ``(windows, targets)``)
        to validate on instead of the end of ``X``. Other arguments as
        :meth:`TextClassifier.fit`."""
        self._check_common()
        self._check_sizes()
        X = _finite_array(X, "X")
        rules = _started_rules(run_dir, resume and not overwrite)
        if y is None:
            p = self._series_parts(X, validation_data, rules)
        else:
            p = self._window_parts(X, _finite_array(y, "y"), validation_data)
        self.linear_rules_ = rules
        n_train = p.n_train
        if n_train < 1:
            raise DataError(f"no training windows left after holding out {p.n_valid} values")
        if self.highway > p.steps:
            raise ValueError(
                f"highway={self.highway!r}; expected an int in [0, {p.steps}] (the values "
                "the network reads)"
            )
        self.history_steps_, self.season_, self.network_steps_ = p.history, p.season, p.steps
        # The network learns the errors of the linear part fitted without the validation
        # values; forecasts use the one refitted on every value (`final`).
        self.linear_ = p.final
        resid = p.targets[:n_train] - self._linear(p.windows[:n_train], p.linear)
        # without a linear part the network learns the values themselves: centre them
        centre = float(np.mean(resid)) if p.linear is None else 0.0
        self.scaler_ = Scaler.from_dict(
            {"type": "standard_scaler", "mean": centre, "scale": float(np.std(resid)) or 1.0}
        )
        train = self._windows_data(p.windows[:n_train], p.targets[:n_train], p.linear)
        if validation_data is not None:
            series = X if y is None else None
            vw, vt = self._validation_windows(series, 0, validation_data, p.history)
        else:
            vw, vt = p.windows[n_train:], p.targets[n_train:]
        valid = self._windows_data(vw, vt, p.linear) if len(vw) else None
        gate_windows = self._exact_windows(X, y, p, validation_data, (vw, vt))
        model_config = self._model_config(
            output_size=self.horizon,
            input_size=1,
            highway=self.highway,
            hidden_size=self._hidden(n_train),
        )
        run = {"run_dir": run_dir, "resume": resume, "overwrite": overwrite}
        self._fit_tensors(train, valid, model_config, callbacks=callbacks, **run)
        self.linear_table_ = p.table
        self.network_weight_ = self._gate(*gate_windows, p.linear)
        if run_dir is not None:
            self._write_results(Path(run_dir))
        return self

    def _series_parts(self, X: np.ndarray, validation_data, rules: int) -> _Parts:
        """Season, history, linear part and windows of a 1-D series ``X``; sets the input
        scaling ``input_`` and the window ``last_window_`` that ``predict()`` continues."""
        from gatelab.data import make_windows
        from gatelab.models.autoregressive import find_season

        if X.ndim != 1:
            raise DataError(f"fit(X) takes a 1-D series, got shape {X.shape}; or pass y")
        h = self.horizon
        n_valid = 0 if validation_data is not None else self._n_valid(len(X))
        fit_part = X[: len(X) - n_valid]
        season = self.season if self.season is not None else find_season(fit_part)
        steps = self._network_steps(season, len(fit_part))
        if self.history is not None:
            steps = min(steps, self.history)
        history = self.history if self.history is not None else steps
        linear, final, table, log, mode = None, None, [], False, "global"
        if self.linear:
            linear, final, table = self._fit_ar(X, n_valid, validation_data, season, steps, rules)
            history = max(history, linear.window, final.window)
            log, mode = linear.log, "level" if linear.d or linear.D else "global"
        if len(X) - n_valid < history + h:
            raise DataError(
                f"a series of {len(X)} values (holding out {n_valid} to validate) is too "
                f"short for history={history} + horizon={h}"
            )
        windows, targets = make_windows(X, history, h)  # float32: see _exact_windows
        self.last_window_ = X[-history:].astype(np.float64)
        z = np.log(np.maximum(fit_part, 1e-12)) if log else fit_part
        scale = float(np.std(np.diff(z)) if mode == "level" else np.std(z)) or 1.0
        self.input_ = {"mode": mode, "log": log, "center": float(np.mean(z)), "scale": scale}
        return _Parts(
            windows=windows.astype(np.float64),
            targets=targets.astype(np.float64),
            n_train=len(fit_part) - history - h + 1,
            n_valid=n_valid,
            history=history,
            season=season,
            steps=steps,
            linear=linear,
            final=final,
            table=table,
        )

    def _fit_ar(
        self, X: np.ndarray, n_valid: int, validation_data, season: int, steps: int, rules: int
    ):
        """``(linear, final, table)``: the AR part on ``X`` less its last ``n_valid``
        values, its transform chosen on the validation windows (with ``table`` the scores
        of every candidate; without validation, d by a KPSS test), and the same refitted
        on all of ``X``; by the linear ``rules`` (:data:`LINEAR_RULES`)."""
        from gatelab.models.autoregressive import fit_ar, needs_differences, select_linear

        fit_part = X[: len(X) - n_valid]
        max_window = self.history or max(steps, min(len(fit_part) // 3, 64))
        p_max = min(max(12, season + 1), max_window)
        new = rules >= 2
        criterion = "aicc" if new else "aic"
        table = []
        if n_valid or validation_data is not None:
            vw, vt = self._validation_windows(X, n_valid, validation_data, max_window, np.float64)
            vw = vw[:, -max_window:]
            (log, d, D), table = select_linear(
                fit_part, vw, vt, season=season, max_window=max_window, p_max=p_max,
                criterion=criterion,
            )  # fmt: skip
        else:  # nothing to validate on: d by a KPSS test (rules 2), else the values
            log, d, D = False, int(new and needs_differences(fit_part)), 0
        p_max = min(p_max, max_window - d - season * D)
        kw = dict(log=log, d=d, D=D, season=season, p_max=p_max, criterion=criterion)
        return fit_ar(fit_part, **kw), fit_ar(X, **kw), table

    def _window_parts(self, windows: np.ndarray, targets: np.ndarray, validation_data) -> _Parts:
        """The parts of given windows ``(N, W)`` and targets ``(N,)`` or ``(N, horizon)``:
        a direct linear map; sets ``input_`` and ``last_window_`` (the last window)."""
        from gatelab.models.autoregressive import fit_direct

        h = self.horizon
        targets = targets[:, None] if targets.ndim == 1 else targets
        if windows.ndim != 2 or (self.history is not None and windows.shape[1] != self.history):
            raise DataError(
                f"X has shape {windows.shape}; expected (N, {self.history or 'W'}) windows"
            )
        if targets.shape != (len(windows), h):
            raise DataError(
                f"y has shape {targets.shape}; expected ({len(windows)},) or ({len(windows)}, {h})"
            )
        n_valid = 0 if validation_data is not None else self._n_valid(len(windows))
        n_train = len(windows) - n_valid
        self.last_window_ = windows[-1].astype(np.float64)
        part = windows[:n_train]
        self.input_ = {
            "mode": "global",
            "log": False,
            "center": float(part.mean()),
            "scale": float(part.std()) or 1.0,
        }
        return _Parts(
            windows=windows,
            targets=targets,
            n_train=n_train,
            n_valid=n_valid,
            history=windows.shape[1],
            season=0,
            steps=windows.shape[1],
            linear=fit_direct(part, targets[:n_train]) if self.linear else None,
            final=fit_direct(windows, targets) if self.linear else None,
            table=[],
        )

    def _exact_windows(self, X, y, p: _Parts, validation_data, network):
        """The validation windows and targets in float64, for the gate: ``network``
        (the network's, from a series) were cut in float32, as they always were, so that
        the fingerprints of the network's tensors (config.json's ``inputs``), and with
        them resuming a run folder started before, stay as they were; float32 rounds a
        series at 12 million to whole units, which the linear part's scores must not."""
        if y is not None and validation_data is None:
            return network  # given windows: never rounded
        if validation_data is not None:
            series = X if y is None else None
            return self._validation_windows(series, 0, validation_data, p.history, np.float64)
        from gatelab.data import make_windows

        w, t = make_windows(X, p.history, self.horizon, np.float64)
        return w[p.n_train :], t[p.n_train :]

    def _validation_windows(self, X, n_valid: int, validation_data, width: int, dtype=np.float32):
        """``(windows (N, width), targets (N, horizon))``: those of ``X`` whose targets lie
        in its last ``n_valid`` values, or those of ``validation_data`` (a later series,
        continued from the end of ``X``, or ``(windows, targets)``); windows cut from a
        series are ``dtype`` values (float32 for the network), returned as float64."""
        from gatelab.data import make_windows

        if validation_data is None:
            w, t = make_windows(X, width, self.horizon, dtype)
            first = len(X) - n_valid - width  # the window whose target is value n - n_valid
            return w[first:].astype(np.float64), t[first:].astype(np.float64)
        if isinstance(validation_data, tuple):
            vx, vy = validation_data
        else:
            vx, vy = validation_data, None
        vx = _finite_array(vx, "validation X")
        if vx.ndim == 1:
            joined = vx if X is None else np.concatenate([X[-width:], vx])
            w, t = make_windows(joined, width, self.horizon, dtype)
            return w.astype(np.float64), t.astype(np.float64)
        vy = _finite_array(vy, "validation y")
        return vx, (vy[:, None] if vy.ndim == 1 else vy)

    def _gate(self, vw: np.ndarray, vt: np.ndarray, linear) -> float:
        """Scale the LSTM term by the weight with the lowest validation RMSE (exactly:
        the heads' weights and biases are multiplied). Without a linear part
        (``linear=False``) the network is the whole forecast: 1.0, and
        ``validation_metrics_`` holds its ``rmse`` and ``mae`` only. Without validation
        data, 1.0 when ``validation_fraction=0`` asked for none, and 0 (the linear part
        alone) when the default rule found the series too short to hold any out
        (:meth:`_n_valid`): nothing shows that the LSTM term helps (ungated, 300 epochs
        on a dozen windows without early stopping, it was worse than the linear part
        alone on 18 of 32 synthetic series of 18-22 values, 0.50x to 1.81x)."""
        from gatelab.train.metrics import regression_metrics

        if not len(vw):
            self.validation_metrics_ = None
            if linear is None or self.validation_fraction is not None:
                return 1.0
            logger.info("no validation values (a short series): the linear part alone")
            self._scale_network(0.0)
            return 0.0
        net = self.scaler_.inverse_transform(
            self._outputs(self._windows_data(vw, None)).numpy().astype(np.float64)
        )
        if linear is None:  # the network alone: nothing to gate, no linear part to report
            self.validation_metrics_ = regression_metrics(vt, net)
            return 1.0
        lin = self._linear(vw, linear)
        scores = {a: float(np.sqrt(np.mean((lin + a * net - vt) ** 2))) for a in self._GATE_WEIGHTS}
        best = min(scores, key=lambda a: (scores[a], a))  # a tie drops the LSTM term
        self._scale_network(best)
        self.validation_metrics_ = {
            **regression_metrics(vt, lin + best * net),
            "linear_rmse": scores[0.0],
            "network_weight": best,
        }
        logger.info(
            "validation RMSE: linear %.4g, with the LSTM term %.4g; LSTM weight %.2f",
            scores[0.0],
            scores[1.0],
            best,
        )
        return best

    def _scale_network(self, weight: float) -> None:
        """Multiply the LSTM term by ``weight``: every member's head (and highway)."""
        with torch.no_grad():
            for m in members(self.model_):
                m.head.weight.mul_(weight)
                m.head.bias.mul_(weight)
                if self.highway:
                    m.highway.weight.mul_(weight)
                    m.highway.bias.mul_(weight)

    def predict(self, X=None) -> np.ndarray:
        """Forecasts: ``(horizon,)`` after the training series (``X`` None) or after a 1-D
        series ``X``; ``(N, horizon)`` for windows ``X (N, history_steps_)`` (``(N,)`` if
        ``horizon == 1``)."""
        self._check_fitted()
        if X is None:
            X = self.last_window_
        X = _finite_array(X, "X")
        single = X.ndim == 1
        if single:
            if len(X) < self.history_steps_:
                raise DataError(
                    f"the series has {len(X)} values; forecasting needs the last "
                    f"history={self.history_steps_}"
                )
            X = X[None, -self.history_steps_ :]
        if X.ndim != 2 or X.shape[1] != self.history_steps_:
            raise DataError(f"X has shape {X.shape}; expected (N, {self.history_steps_}) or 1-D")
        out = self._forecast(X)
        if single:
            return out[0]
        return out[:, 0] if self.horizon == 1 else out

    def _artifacts(self) -> dict[str, Any]:
        return {
            "scaler.json": self.scaler_.to_dict(),
            "window.json": {"type": "series_tail", "values": self.last_window_.tolist()},
            "forecast.json": {
                "type": "forecast_parts",
                "history": self.history_steps_,
                "season": self.season_,
                "network_steps": self.network_steps_,
                "input": self.input_,
                "linear": None if self.linear_ is None else self.linear_.to_dict(),
                **({"linear_rules": self.linear_rules_} if self.linear_rules_ != 1 else {}),
            },
        }

    def _load_artifacts(self, run: Path) -> None:
        self.scaler_ = read_artifact(run, "scaler.json", Scaler.from_dict)

        def parts(d):
            if not isinstance(d, dict) or d.get("type") != "forecast_parts":
                raise ValueError("expected {'type': 'forecast_parts', ...}")
            linear = None if d["linear"] is None else LinearForecast.from_dict(d["linear"])
            sizes = int(d["history"]), int(d["season"]), int(d["network_steps"])
            return *sizes, d["input"], linear, int(d.get("linear_rules", 1))

        (
            self.history_steps_,
            self.season_,
            self.network_steps_,
            self.input_,
            self.linear_,
            self.linear_rules_,
        ) = read_artifact(run, "forecast.json", parts)

        def tail(d):
            if not isinstance(d, dict) or d.get("type") != "series_tail":
                raise ValueError("expected {'type': 'series_tail', 'values': [...]}")
            values = np.asarray(d["values"], dtype=np.float64)
            if values.shape != (self.history_steps_,):
                raise ValueError(f"expected {self.history_steps_} values, got shape {values.shape}")
            return values

        self.last_window_ = read_artifact(run, "window.json", tail)


@dataclasses.dataclass
class _Parts:
    """What :meth:`Forecaster.fit` prepares from a series or from windows."""

    windows: np.ndarray  # (N, history)
    targets: np.ndarray  # (N, horizon)
    n_train: int  # the first n_train windows fit, the others validate
    n_valid: int  # values held out to validate
    history: int  # values one forecast reads
    season: int
    steps: int  # values the network reads
    linear: LinearForecast | None  # fitted without the validation values
    final: LinearForecast | None  # the same refitted on every value
    table: list  # the validation scores of the linear candidates


def _started_rules(run_dir, resume: bool) -> int:
    """The linear rules of a fit: a resumed run folder's (its forecast.json, written when
    the run started, before config.json, which marks a run; absent key: 1), else
    :data:`LINEAR_RULES`."""
    run = Path(run_dir) if run_dir is not None else None
    path = run / "forecast.json" if run is not None else None
    if not resume or path is None or not path.is_file() or not (run / runs.CONFIG_FILE).is_file():
        return LINEAR_RULES
    saved = runs.read_json(path, "forecast.json")
    rules = saved.get("linear_rules", 1) if isinstance(saved, dict) else LINEAR_RULES
    if rules not in (1, LINEAR_RULES):
        raise RunFolderError(
            f"cannot resume '{run_dir}': its forecast.json has linear_rules={rules!r}; this "
            f"gatelab knows 1 and {LINEAR_RULES}"
        )
    return rules


def _finite_array(X, what: str) -> np.ndarray:
    try:
        a = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(f"{what} must be numbers ({err})") from None
    if a.size == 0:
        raise DataError(f"{what} is empty; expected numbers")
    bad = np.argwhere(~(np.abs(a) <= np.finfo(np.float32).max))  # the network reads float32
    if len(bad):
        raise DataError(
            f"{what} has a missing or infinite value, or one beyond float32's 3.4e38, at index "
            f"{tuple(int(i) for i in bad[0])} ({len(bad)} in all); fill or rescale them first"
        )
    return a
