"""An EDA session's results on its portal page: the describe table of each dataset and the
histogram of each continuous column, from the results the API serves as the session's model
(so only a token that may download it sees them, and each view is audited as a download)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from markupsafe import Markup

from fedsilo.analytics.describe import DESCRIBE_ROWS
from fedsilo.analytics.results import EdaResults
from fedsilo.server.access import SessionGrant
from fedsilo.server.api import sessions
from fedsilo.server.portal.plots import histogram
from fedsilo.server.state import ArtifactStore, StateStore
from fedsilo.wire import ModelMeta, decode_frame, parse_header

__all__ = ["EdaDatasetView", "eda_results"]


@dataclass(frozen=True)
class EdaDatasetView:
    """One dataset: its describe table (statistic x column) and its histograms."""

    name: str
    columns: list[str]
    rows: list[tuple[str, list[Any]]]
    histograms: list[Markup]


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return value


def eda_results(
    request: Request, store: StateStore, artifacts: ArtifactStore, grant: SessionGrant
) -> list[EdaDatasetView]:
    """Each dataset's view, the pooled one last (when there are several)."""
    response = sessions.session_model(grant.session.id, request, store, artifacts, grant)
    arrays, header = decode_frame(bytes(response.body))
    meta = parse_header(ModelMeta, header, "EDA results frame header")
    results = EdaResults.from_payload(meta.meta, arrays)
    datasets = list(results)
    if len(datasets) > 1:
        datasets.append(results.pooled())
    views = []
    for dataset in datasets:
        table = dataset.describe()
        rows = [(str(stat), [_cell(v) for v in table.loc[stat]]) for stat in DESCRIBE_ROWS]
        plots = []
        for column in dataset:
            stats = column.stats
            if stats.kind != "continuous" or stats.edges is None or stats.histogram is None:
                continue
            # A count the privacy policy withheld (NaN) is drawn as no bar.
            counts = [0.0 if math.isnan(c) else max(float(c), 0.0) for c in stats.histogram]
            edges = [float(e) for e in stats.edges]
            plots.append(histogram(edges, counts, f"{dataset.name}: {column.name}"))
        views.append(EdaDatasetView(dataset.name, dataset.columns, rows, plots))
    return views
