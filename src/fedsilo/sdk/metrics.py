"""A session's training metrics, as the seed documentation shows them.

:class:`SessionMetrics` wraps ``GET /sessions/{sid}/metrics``
(:class:`~fedsilo.wire.SessionMetricsPublic`) and offers three views of the same numbers: the
documented dictionary (:meth:`SessionMetrics.as_dict`), a tidy data frame
(:meth:`SessionMetrics.as_dataframe`) and a figure (:meth:`SessionMetrics.plot`).

``session.metrics`` is a :class:`MetricsAccessor`: called, ``session.metrics()`` fetches one
:class:`SessionMetrics` snapshot; used directly, ``session.metrics.as_dict()`` (the spelling of
the seed's Evaluation metrics section) fetches afresh for that one call.

pandas and matplotlib are imported inside the methods that need them, so ``import fedsilo``
stays light.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedsilo.wire import SessionMetricsPublic

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["FEDERATED", "MetricsAccessor", "SessionMetrics"]

#: ``client`` of the federated (server-aggregated) rows of :meth:`SessionMetrics.as_dataframe`.
FEDERATED = "federated"

# Counts such as ``test_num_examples`` are bookkeeping, not model quality; a panel of flat
# lines would only crowd the figure, so plot() leaves them out (as_dict/as_dataframe keep them).
_COUNT_SUFFIX = "num_examples"


class SessionMetrics:
    """Per-round metrics of one session.

    Parameters
    ----------
    public : SessionMetricsPublic
        The server's answer to ``GET /sessions/{sid}/metrics``.

    Notes
    -----
    Rounds are numbered from 1 by their position in ``federated_metrics`` (and in
    ``client_metrics``), unless an entry carries its own ``"round"`` key, which wins.
    """

    def __init__(self, public: SessionMetricsPublic) -> None:
        self._public = public

    # ------------------------------------------------------------------ the seed view

    @property
    def session_id(self) -> str:
        return self._public.session_id

    @property
    def federated_metrics(self) -> list[dict[str, float]]:
        """One dict per round of server-aggregated metrics (at least ``'loss'``); a copy."""
        return copy.deepcopy(self._public.federated_metrics)

    @property
    def client_metrics(self) -> list[dict[str, dict[str, float]]]:
        """One dict per round, keyed by client name, of that client's metrics; a copy."""
        return copy.deepcopy(self._public.client_metrics)

    @property
    def federated_loss(self) -> list[float]:
        """The federated loss of each round, in round order.

        Returns
        -------
        list of float, length n_rounds_recorded
            ``nan`` for a round whose entry has no ``'loss'``.
        """
        return [float(entry.get("loss", math.nan)) for entry in self._public.federated_metrics]

    @property
    def global_model_federated_loss(self) -> float | None:
        """The federated loss of the latest global model (None before the first round)."""
        return self._public.latest_global_model_federated_loss

    @property
    def num_rounds(self) -> int:
        """How many rounds have recorded metrics so far."""
        return max(len(self._public.federated_metrics), len(self._public.client_metrics))

    def as_dict(self) -> dict[str, Any]:
        """The metrics in the seed documentation's shape.

        Returns
        -------
        dict
            ``{"session_id": str,
            "federated_metrics": [{"loss": float, ...}, ...]  # one per round,
            "client_metrics": [{client_name: {"test_loss": float, ...}}, ...]  # one per round,
            "latest_global_model_federated_loss": float | None}``.
            A fresh copy: mutating it does not change this object.
        """
        return {
            "session_id": self.session_id,
            "federated_metrics": self.federated_metrics,
            "client_metrics": self.client_metrics,
            "latest_global_model_federated_loss": self.global_model_federated_loss,
        }

    # ------------------------------------------------------------------ other views

    def as_dataframe(self) -> pd.DataFrame:
        """The metrics as one tidy (long) table.

        Returns
        -------
        DataFrame of shape (n_values, 4)
            Columns ``round`` (int, from 1), ``client`` (str), ``metric`` (str) and
            ``value`` (float): one row per round per client per metric, plus the
            server-aggregated rows whose ``client`` is ``"federated"``
            (:data:`FEDERATED`). Federated rows come first, then client rows, each in
            round order. Pivot for a wide view, e.g.
            ``df.pivot_table(index="round", columns=["client", "metric"], values="value")``.
        """
        import pandas as pd

        rows: list[tuple[int, str, str, float]] = []
        for position, entry in enumerate(self._public.federated_metrics, start=1):
            rnd = _round_of(entry, position)
            rows.extend(
                (rnd, FEDERATED, name, float(value))
                for name, value in entry.items()
                if name != "round"
            )
        for position, per_client in enumerate(self._public.client_metrics, start=1):
            for client, values in per_client.items():
                rnd = _round_of(values, position)
                rows.extend(
                    (rnd, client, name, float(value))
                    for name, value in values.items()
                    if name != "round"
                )
        frame = pd.DataFrame(rows, columns=["round", "client", "metric", "value"])
        return frame.astype({"round": "int64", "value": "float64"})

    def plot(self) -> Figure:
        """Plot every metric against the round.

        The first panels hold the federated metrics (loss first); then one panel per client
        metric with one line per client. Counts (``*num_examples``) are not plotted.

        Returns
        -------
        matplotlib.figure.Figure
            Built without pyplot, so no display or backend is needed; save it with
            ``fig.savefig("metrics.png")`` or show it in a notebook by evaluating it.
        """
        from matplotlib.figure import Figure

        frame = self.as_dataframe()
        frame = frame[~frame["metric"].str.endswith(_COUNT_SUFFIX)]
        federated = frame[frame["client"] == FEDERATED]
        clients = frame[frame["client"] != FEDERATED]
        panels: list[tuple[str, pd.DataFrame]] = [
            (f"federated {metric}", federated[federated["metric"] == metric])
            for metric in _ordered(federated["metric"].unique().tolist())
        ]
        panels += [
            (metric, clients[clients["metric"] == metric])
            for metric in _ordered(clients["metric"].unique().tolist())
        ]

        ncols = min(3, max(1, len(panels)))
        nrows = max(1, math.ceil(len(panels) / ncols))
        fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        fig.suptitle(f"session {self.session_id}")
        if not panels:
            axes[0].text(0.5, 0.5, "no metrics recorded yet", ha="center", va="center")
            axes[0].set_axis_off()
        for ax, (title, data) in zip(axes, panels, strict=False):
            for client, series in data.groupby("client", sort=True):
                ax.plot(series["round"], series["value"], marker="o", label=str(client))
            ax.set_title(title)
            ax.set_xlabel("round")
            # Rounds are whole numbers; integer ticks avoid "1.5".
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.3)
            if data["client"].nunique() > 1:
                ax.legend(fontsize="small")
        for ax in axes[len(panels) :]:
            ax.set_axis_off()
        return fig

    def __repr__(self) -> str:
        loss = self.global_model_federated_loss
        shown = "None" if loss is None else f"{loss:.6g}"
        return (
            f"SessionMetrics(session_id={self.session_id!r}, rounds={self.num_rounds}, "
            f"latest_global_model_federated_loss={shown})"
        )


class MetricsAccessor:
    """``session.metrics``: callable for a snapshot, or used as the metrics themselves.

    The seed documentation spells it both ways: ``session.metrics().as_dict()`` in the
    tutorials and ``session.metrics.as_dict()`` in its Evaluation metrics section. Calling the
    accessor fetches ``GET /sessions/{sid}/metrics`` once and returns a
    :class:`SessionMetrics` whose views all describe that one answer. Every attribute of
    :class:`SessionMetrics` is also available here; each access fetches afresh, so two
    accesses while the session runs may see different rounds (call it once and keep the
    snapshot to compare views of one moment).

    Parameters
    ----------
    fetch : callable
        Returns the server's current answer for the session.
    """

    def __init__(self, fetch: Callable[[], SessionMetrics]) -> None:
        self._fetch = fetch

    def __call__(self) -> SessionMetrics:
        """One snapshot of the metrics recorded so far (also while the session runs)."""
        return self._fetch()

    @property
    def session_id(self) -> str:
        return self._fetch().session_id

    @property
    def federated_metrics(self) -> list[dict[str, float]]:
        """See :attr:`SessionMetrics.federated_metrics`; fetched."""
        return self._fetch().federated_metrics

    @property
    def client_metrics(self) -> list[dict[str, dict[str, float]]]:
        """See :attr:`SessionMetrics.client_metrics`; fetched."""
        return self._fetch().client_metrics

    @property
    def federated_loss(self) -> list[float]:
        """See :attr:`SessionMetrics.federated_loss`; fetched."""
        return self._fetch().federated_loss

    @property
    def global_model_federated_loss(self) -> float | None:
        """See :attr:`SessionMetrics.global_model_federated_loss`; fetched."""
        return self._fetch().global_model_federated_loss

    @property
    def num_rounds(self) -> int:
        """See :attr:`SessionMetrics.num_rounds`; fetched."""
        return self._fetch().num_rounds

    def as_dict(self) -> dict[str, Any]:
        """See :meth:`SessionMetrics.as_dict`; fetched."""
        return self._fetch().as_dict()

    def as_dataframe(self) -> pd.DataFrame:
        """See :meth:`SessionMetrics.as_dataframe`; fetched."""
        return self._fetch().as_dataframe()

    def plot(self) -> Figure:
        """See :meth:`SessionMetrics.plot`; fetched."""
        return self._fetch().plot()

    def __repr__(self) -> str:
        # A repr must not fail or block on the network (notebooks show it on every cell).
        return "MetricsAccessor(call it, or use .as_dict() / .as_dataframe() / .plot())"


def _round_of(entry: dict[str, Any], position: int) -> int:
    value = entry.get("round")
    return int(value) if value is not None else position


def _ordered(metrics: list[str]) -> list[str]:
    """Loss-like metrics first (they are what a user looks at first), then alphabetical."""
    return sorted(metrics, key=lambda name: ("loss" not in name, name))
