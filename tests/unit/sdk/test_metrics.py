"""SessionMetrics: the seed dict shape, the tidy frame and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from fedsilo.sdk.metrics import FEDERATED, SessionMetrics
from fedsilo.wire import SessionMetricsPublic

CLIENTS = ("silo0", "silo1")


def _public(n_rounds: int = 3) -> SessionMetricsPublic:
    federated = [{"loss": 0.7 - 0.05 * r, "accuracy": 0.5 + 0.05 * r} for r in range(n_rounds)]
    client_metrics = [
        {
            name: {
                "test_loss": 0.7 - 0.05 * r + 0.01 * i,
                "test_accuracy": 0.5 + 0.05 * r - 0.01 * i,
                "test_roc_auc": 0.6 + 0.02 * r,
                "test_num_examples": 4000.0,
            }
            for i, name in enumerate(CLIENTS)
        }
        for r in range(n_rounds)
    ]
    return SessionMetricsPublic(
        session_id="0123456789",
        federated_metrics=federated,
        client_metrics=client_metrics,
        latest_global_model_federated_loss=federated[-1]["loss"] if federated else None,
    )


def test_as_dict_has_the_seed_shape() -> None:
    public = _public()
    result = SessionMetrics(public).as_dict()

    assert list(result) == [
        "session_id",
        "federated_metrics",
        "client_metrics",
        "latest_global_model_federated_loss",
    ]
    assert result["session_id"] == "0123456789"
    assert len(result["federated_metrics"]) == 3
    assert all("loss" in entry for entry in result["federated_metrics"])
    assert len(result["client_metrics"]) == 3
    assert set(result["client_metrics"][0]) == set(CLIENTS)
    assert result["client_metrics"][2]["silo1"]["test_num_examples"] == 4000.0
    assert result["latest_global_model_federated_loss"] == pytest.approx(0.6)
    assert result == public.model_dump()


def test_as_dict_is_a_copy() -> None:
    metrics = SessionMetrics(_public())
    metrics.as_dict()["federated_metrics"][0]["loss"] = 99.0
    metrics.as_dict()["client_metrics"][0]["silo0"]["test_loss"] = 99.0
    assert metrics.federated_metrics[0]["loss"] == pytest.approx(0.7)
    assert metrics.client_metrics[0]["silo0"]["test_loss"] == pytest.approx(0.7)


def test_loss_properties() -> None:
    metrics = SessionMetrics(_public())
    assert metrics.federated_loss == pytest.approx([0.7, 0.65, 0.6])
    assert metrics.global_model_federated_loss == pytest.approx(0.6)
    assert metrics.num_rounds == 3
    assert "rounds=3" in repr(metrics)


def test_as_dataframe_is_tidy() -> None:
    frame = SessionMetrics(_public()).as_dataframe()

    assert list(frame.columns) == ["round", "client", "metric", "value"]
    # 3 rounds x (2 federated metrics + 2 clients x 4 metrics)
    assert frame.shape == (3 * (2 + 2 * 4), 4)
    assert str(frame["round"].dtype) == "int64"
    assert str(frame["value"].dtype) == "float64"
    assert sorted(frame["round"].unique().tolist()) == [1, 2, 3]
    assert set(frame["client"]) == {FEDERATED, *CLIENTS}

    def value(rnd: int, client: str, metric: str) -> float:
        selected = frame[
            (frame["round"] == rnd) & (frame["client"] == client) & (frame["metric"] == metric)
        ]
        assert len(selected) == 1
        return float(selected["value"].iloc[0])

    assert value(1, FEDERATED, "loss") == pytest.approx(0.7)
    assert value(3, "silo1", "test_accuracy") == pytest.approx(0.59)
    assert value(2, "silo0", "test_roc_auc") == pytest.approx(0.62)
    wide = frame.pivot_table(index="round", columns=["client", "metric"], values="value")
    assert wide.shape == (3, 10)


def test_as_dataframe_uses_a_round_key_when_present() -> None:
    public = SessionMetricsPublic(
        session_id="0123456789",
        federated_metrics=[{"round": 0.0, "loss": 0.69}, {"round": 1.0, "loss": 0.6}],
        client_metrics=[],
        latest_global_model_federated_loss=0.6,
    )
    frame = SessionMetrics(public).as_dataframe()
    assert frame["round"].tolist() == [0, 1]
    assert frame["metric"].tolist() == ["loss", "loss"]


def test_empty_metrics() -> None:
    metrics = SessionMetrics(_public(n_rounds=0))
    assert metrics.as_dict()["latest_global_model_federated_loss"] is None
    assert metrics.federated_loss == []
    assert metrics.global_model_federated_loss is None
    frame = metrics.as_dataframe()
    assert frame.shape == (0, 4)
    fig = metrics.plot()
    assert isinstance(fig, Figure)


def test_missing_loss_is_nan() -> None:
    public = SessionMetricsPublic(
        session_id="0123456789",
        federated_metrics=[{"accuracy": 0.5}],
        client_metrics=[],
        latest_global_model_federated_loss=None,
    )
    assert math.isnan(SessionMetrics(public).federated_loss[0])


def test_plot_has_one_panel_per_metric_and_a_line_per_client(tmp_path: Path) -> None:
    fig = SessionMetrics(_public()).plot()

    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    # federated loss first; counts (test_num_examples) are not plotted
    assert titles == [
        "federated loss",
        "federated accuracy",
        "test_loss",
        "test_accuracy",
        "test_roc_auc",
    ]
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert len(by_title["federated loss"].get_lines()) == 1
    loss_line = by_title["federated loss"].get_lines()[0]
    assert list(loss_line.get_xdata()) == [1, 2, 3]
    assert list(loss_line.get_ydata()) == pytest.approx([0.7, 0.65, 0.6])
    lines = by_title["test_accuracy"].get_lines()
    assert sorted(line.get_label() for line in lines) == list(CLIENTS)

    target = tmp_path / "metrics.png"
    fig.savefig(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
