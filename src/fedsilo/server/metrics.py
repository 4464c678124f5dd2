"""``GET /metrics``: the server's operating numbers in the Prometheus text format.

=====================================================  =========================================
``fedsilo_sessions{status}``                            sessions in the store by status (gauge,
                                                        read from the store at each scrape)
``fedsilo_rounds_completed_total``                      rounds recorded by this process
``fedsilo_task_latency_seconds{kind}``                  histogram: a task handed to its client
                                                        until its reply arrived
``fedsilo_replies_rejected_total{reason}``              replies that failed their task (see
                                                        :data:`REJECTION_REASONS`)
``fedsilo_authentication_failures_total``               requests whose token failed (a request
                                                        with no token at all is not counted)
=====================================================  =========================================

Counters and the histogram are this process's (they restart at 0 with the server, which
Prometheus' ``rate()`` expects); the sessions gauge is the store's. Each app has a registry of
its own, so several servers in one process (the tests) never mix their numbers.

Access: by default a token with ``read_all_session`` (or ``admin``): what the metrics show is
a summary of what that scope reads anyway, so a scraper's token needs no admin power. With the
setting ``metrics_public`` (``FEDSILO_METRICS_PUBLIC=true``) no token at all, for a scraper on
a trusted network that cannot send one.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from fedsilo.scopes import Scope
from fedsilo.server.access import allow, public
from fedsilo.server.auth import FailureLimiter
from fedsilo.wire import SessionStatus

if TYPE_CHECKING:
    from fedsilo.server.settings import Settings
    from fedsilo.server.state import StateStore

__all__ = [
    "REJECTION_REASONS",
    "CountingLimiter",
    "ServerMetrics",
    "metrics_router",
    "rejection_reason",
]

# No `<name>_created` series beside each counter: they double the exposition and Prometheus
# does not need them (process-wide, which is this server's alone).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

#: why a reply was rejected: ``frame`` (it did not decode), ``not_awaited`` (its task was no
#: longer in flight: late, or already answered), and the checks of
#: :func:`fedsilo.federation.expect.check_reply` -- ``missing_array``, ``unexpected_array``,
#: ``shape``, ``dtype``, ``non_finite``, ``count`` -- with ``other`` for a check added later
REJECTION_REASONS = (
    "frame",
    "not_awaited",
    "missing_array",
    "unexpected_array",
    "shape",
    "dtype",
    "non_finite",
    "count",
    "other",
)

# From a 10 ms evaluation on a small table to an hour-long epoch (the default task timeout).
_LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# The phrases check_reply's one-line reasons are made of, most specific first; the unit
# tests run every check through this, so a reworded check shows up as "other" there.
_REASON_PHRASES = (
    ("are missing", "missing_array"),
    ("are unexpected", "unexpected_array"),
    ("non-finite", "non_finite"),
    ("has shape", "shape"),
    ("has dtype", "dtype"),
    ("meta[", "count"),
)


def rejection_reason(failure_reason: str) -> str:
    """The :data:`REJECTION_REASONS` label of a ``"malformed"`` failure's reason line."""
    for phrase, reason in _REASON_PHRASES:
        if phrase in failure_reason:
            return reason
    return "other"


class _SessionsByStatus(Collector):
    """``fedsilo_sessions{status}`` from the store at scrape time (every status, 0 included)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        counts = Tally(record.status for record in self._store.list_sessions())
        family = GaugeMetricFamily(
            "fedsilo_sessions", "Sessions in the state store by status.", labels=["status"]
        )
        for status in SessionStatus:
            family.add_metric([str(status)], counts.get(status, 0))
        yield family

    def describe(self) -> Iterator[Metric]:
        # Said without reading the store, so registering it costs no query.
        yield GaugeMetricFamily(
            "fedsilo_sessions", "Sessions in the state store by status.", labels=["status"]
        )


class ServerMetrics:
    """One server's metrics and the registry that renders them.

    Parameters
    ----------
    store : StateStore, optional
        Where ``fedsilo_sessions`` is counted at each scrape; without it that gauge is absent.
    """

    def __init__(self, store: StateStore | None = None) -> None:
        self.registry = CollectorRegistry()
        self._rounds = Counter(
            "fedsilo_rounds_completed",
            "Rounds recorded by the sessions this server ran.",
            registry=self.registry,
        )
        self._task_latency = Histogram(
            "fedsilo_task_latency_seconds",
            "Seconds from a task's hand-out to its client until its reply arrived, by kind.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rejected = Counter(
            "fedsilo_replies_rejected",
            "Replies that failed their task, by reason.",
            ["reason"],
            registry=self.registry,
        )
        for reason in REJECTION_REASONS:
            self._rejected.labels(reason)  # present at 0, so a rate() has a series to start
        self._auth_failures = Counter(
            "fedsilo_authentication_failures",
            "Requests whose token failed authentication (malformed, invalid, revoked, "
            "expired, deleted user).",
            registry=self.registry,
        )
        if store is not None:
            self.registry.register(_SessionsByStatus(store))

    def round_completed(self) -> None:
        self._rounds.inc()

    def task_replied(self, kind: str, seconds: float) -> None:
        self._task_latency.labels(kind).observe(max(0.0, seconds))

    def reply_rejected(self, reason: str) -> None:
        """Count one rejected reply; ``reason`` is one of :data:`REJECTION_REASONS`."""
        self._rejected.labels(reason if reason in REJECTION_REASONS else "other").inc()

    def authentication_failed(self) -> None:
        self._auth_failures.inc()

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (the Prometheus text format, or OpenMetrics when ``accept`` asks
        for it) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class CountingLimiter(FailureLimiter):
    """The server's :class:`~fedsilo.server.auth.FailureLimiter`, counting each failure it
    is told of in ``fedsilo_authentication_failures_total`` (every 401 of
    :func:`~fedsilo.server.auth.authenticate` goes through :meth:`fail`)."""

    def __init__(self, metrics: ServerMetrics) -> None:
        super().__init__()
        self._metrics = metrics

    def fail(self, address: str, now: float) -> None:
        self._metrics.authentication_failed()
        super().fail(address, now)


def metrics_router(settings: Settings) -> APIRouter:
    """The ``GET /metrics`` route, public when ``settings.metrics_public``, else for a token
    with ``read_all_session`` (or ``admin``)."""
    from fedsilo.server.api.deps import ACCESS_RESPONSES

    requirement = public() if settings.metrics_public else allow(Scope.read_all_session)
    router = APIRouter(tags=["health"])

    @router.get(
        "/metrics",
        dependencies=[Depends(requirement)],
        response_class=Response,
        responses={
            200: {
                "description": "the metrics in the Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **({} if settings.metrics_public else ACCESS_RESPONSES),
        },
    )
    def metrics(request: Request) -> Response:
        """The server's metrics for a Prometheus scraper (sync: counting sessions reads
        the store, in the thread pool)."""
        server_metrics: ServerMetrics = request.app.state.metrics
        body, content_type = server_metrics.render(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    return router
