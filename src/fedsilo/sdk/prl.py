"""A private record linkage session as the SDK hands it out: :class:`PrlSession`.

``client.create_prl_session(...)`` returns one. Its metrics are the seed's overlap
statistics::

    prl.metrics().as_dict()
    {"session_id": "07d0f8358d",
     "federated_metrics": [],
     "client_metrics": {"passive_client": {"train": {"n_records": 14400,
                                                     "n_overlapped_records": 12963,
                                                     "frac_overlapped": 0.9},
                                           "test": {...}},
                        "active_client": {...}}}

and :meth:`PrlSession.alignment` downloads the alignment itself (row positions per client
and table, in one common order).
"""

from __future__ import annotations

from typing import Any

from fedsilo.errors import NotFoundError
from fedsilo.sdk.metrics import SessionMetrics
from fedsilo.sdk.session import Session
from fedsilo.vfl.alignment import TABLES, Alignment
from fedsilo.wire import SessionMetricsPublic

__all__ = ["PrlMetrics", "PrlSession"]

_STATS = ("n_records", "n_overlapped_records", "frac_overlapped")


class PrlMetrics(SessionMetrics):
    """The overlap statistics of a PRL session (the seed's shape from :meth:`as_dict`)."""

    @property
    def overlap(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """``{client: {"train" | "test": {n_records, n_overlapped_records, frac_overlapped}}}``;
        empty until the session has linked the records."""
        rounds = self._public.client_metrics
        if not rounds:
            return {}
        found: dict[str, dict[str, dict[str, float | int]]] = {}
        for name, values in rounds[-1].items():
            tables: dict[str, dict[str, float | int]] = {}
            for table in TABLES:
                if f"{table}_n_records" not in values:
                    continue
                stats: dict[str, float | int] = {s: values[f"{table}_{s}"] for s in _STATS}
                stats["n_records"] = int(stats["n_records"])
                stats["n_overlapped_records"] = int(stats["n_overlapped_records"])
                tables[table] = stats
            found[name] = tables
        return found

    def as_dict(self) -> dict[str, Any]:
        """The seed's shape (see the module docstring); a fresh copy."""
        return {
            "session_id": self.session_id,
            "federated_metrics": [],
            "client_metrics": self.overlap,
        }


class PrlSession(Session):
    """A handle on a PRL session: a :class:`~fedsilo.sdk.session.Session` whose metrics are
    the overlap statistics and whose artifact is an alignment."""

    def start(self) -> PrlSession:
        """Start the session (see :meth:`Session.start`); returns this handle."""
        super().start()
        return self

    def _fetch_metrics(self) -> PrlMetrics:
        body = self._api.get_json(f"{self._path}/metrics")
        return PrlMetrics(SessionMetricsPublic.model_validate(body))

    def alignment(self) -> Alignment:
        """Download the alignment the session stored.

        Raises
        ------
        NotFoundError
            When the session has not completed (the alignment is saved at its end).
        """
        from fedsilo.wire import ModelMeta, decode_frame, parse_header

        try:
            response = self._api.request("GET", f"{self._path}/model")
        except NotFoundError as exc:
            if "no model" not in str(exc.detail).lower():
                raise
            raise NotFoundError(
                404,
                f"Session {self.id} has no alignment yet (it is {self.status}); it is saved "
                "when the session completes: call session.wait() first.",
            ) from exc
        arrays, header = decode_frame(response.content)
        meta = parse_header(ModelMeta, header, "PRL alignment frame header")
        return Alignment.from_payload(meta.meta, arrays)
