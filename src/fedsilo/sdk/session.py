"""One federated session, as the SDK user drives it.

A :class:`Session` is a handle on ``/sessions/{sid}``. Its lifecycle attributes
(:attr:`Session.status`, :attr:`Session.round`, :attr:`Session.failure_reason`) are read fresh
from the server on every access, because the seed tutorials poll them in a loop; the fixed
attributes (name, package, configs) come from the last answer the handle saw.

:attr:`Session.status` is an :class:`SdkSessionStatus`: it compares equal to the API's
lower-case values (``"running"``) and to the seed SDK's names (``"Running"``), so both
spellings of the tutorials' polling loops work. ``session.metrics`` works called
(``session.metrics().as_dict()``) and uncalled (``session.metrics.as_dict()``), see
:class:`~fedsilo.sdk.metrics.MetricsAccessor`.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from fedsilo.errors import (
    ConfigError,
    FedsiloError,
    NotFoundError,
    ServerUnavailable,
    SessionError,
    WaitTimeout,
)
from fedsilo.sdk.initial_model import InitialModelSource, initial_model_bytes
from fedsilo.sdk.metrics import MetricsAccessor, SessionMetrics
from fedsilo.sdk.model import Model
from fedsilo.wire import (
    InitialModelPublic,
    ParticipantPublic,
    SessionKind,
    SessionLogLine,
    SessionMetricsPublic,
    SessionPublic,
    SessionStatus,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from fedsilo.analytics.results import EdaResults
    from fedsilo.http import ApiClient
    from fedsilo.sdk.driver import DriverHistory
    from fedsilo.strategies import Strategy

__all__ = ["SdkSessionStatus", "Session"]

# A server restart (DESIGN principle 6: sessions resume) makes the server unreachable for a
# few seconds; wait() rides that out, but gives up after this long without any answer so a
# dead server does not hang a caller who passed no timeout.
_UNREACHABLE_GRACE_S = 30.0


class SdkSessionStatus(StrEnum):
    """A session's status as the SDK shows it: equal to either spelling of its name.

    The members and their values are the API's (:class:`~fedsilo.wire.SessionStatus`, e.g.
    ``"running"``; ``str()`` and JSON give that value). ``==`` and ``!=`` compare
    case-insensitively with any ``str``, so a status equals ``"running"``,
    ``SessionStatus.running`` and the seed SDK's ``"Running"`` alike; :attr:`label` is the
    seed's name. Constructing one accepts either spelling: ``SdkSessionStatus("Completed")``.

    Notes
    -----
    The hash is the hash of the lower-case value, as for the API's values and
    :class:`~fedsilo.wire.SessionStatus` members, so ``status in {"pending", "running"}``
    and dict lookups keyed by API values work. A set or dict of the *capitalised* names
    cannot find it: ``"Running"`` hashes differently from ``"running"``, and no hash can
    agree with both; use ``==`` or a tuple there (``status in ("Pending", "Running")``).
    """

    created = "created"
    pending = "pending"
    running = "running"
    completed = "completed"
    failed = "failed"
    canceled = "canceled"

    @property
    def label(self) -> str:
        """The seed SDK's name of this status (``"Running"``)."""
        return self.value.capitalize()

    @property
    def ended(self) -> bool:
        """Whether the session is over (completed, failed or canceled)."""
        return self in (
            SdkSessionStatus.completed,
            SdkSessionStatus.failed,
            SdkSessionStatus.canceled,
        )

    @classmethod
    def _missing_(cls, value: object) -> SdkSessionStatus | None:
        if isinstance(value, str):
            return cls._value2member_map_.get(value.lower())  # type: ignore[return-value]
        return None

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return self.value == other.lower()
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        # str defines its own __ne__, which would ignore the __eq__ above.
        if isinstance(other, str):
            return self.value != other.lower()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value)


class Session:
    """A handle on one session of a fedsilo server.

    Get one from :meth:`Client.create_fl_session <fedsilo.sdk.client.Client.create_fl_session>`,
    :meth:`Client.fl_session <fedsilo.sdk.client.Client.fl_session>` or
    :meth:`Client.sessions <fedsilo.sdk.client.Client.sessions>`.

    Parameters
    ----------
    api : ApiClient
        The connection the handle talks through (shared with its client).
    public : SessionPublic
        The server's description of the session.
    """

    def __init__(self, api: ApiClient, public: SessionPublic) -> None:
        self._api = api
        self._public = public

    # ------------------------------------------------------------------ fixed attributes

    @property
    def id(self) -> str:
        return self._public.id

    @property
    def name(self) -> str:
        return self._public.name

    @property
    def description(self) -> str:
        return self._public.description

    @property
    def package_name(self) -> str:
        return self._public.package_name

    @property
    def min_num_clients(self) -> int:
        return self._public.min_num_clients

    @property
    def num_rounds(self) -> int:
        return self._public.num_rounds

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self._public.model_config_)

    @property
    def data_config(self) -> dict[str, Any]:
        return dict(self._public.data_config)

    # ------------------------------------------------------------------ live attributes

    def refresh(self) -> SessionPublic:
        """Fetch the session from the server (``GET /sessions/{sid}``) and remember it."""
        self._public = SessionPublic.model_validate(self._api.get_json(self._path))
        return self._public

    @property
    def status(self) -> SdkSessionStatus:
        """The current status; fetched.

        Compare it with the API's value or the seed SDK's name: ``status == "running"`` and
        ``status == "Running"`` both hold while the session runs (see
        :class:`SdkSessionStatus`).
        """
        return SdkSessionStatus(self.refresh().status.value)

    @property
    def round(self) -> int:
        """The last completed round (0 before the first); fetched."""
        return self.refresh().round

    @property
    def failure_reason(self) -> str | None:
        """Why the session is in its status; fetched.

        For a failed or canceled session, why it ended; for a created or pending one, the
        latest client's refusal to join (``"client 'silo1' refused to join: ..."``), if any;
        None otherwise.
        """
        return self.refresh().failure_reason

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Session:
        """Start the session: it waits for ``min_num_clients`` clients, then trains.

        Returns
        -------
        Session
            This handle, so ``client.create_fl_session(...).start()`` reads naturally.

        Raises
        ------
        ConflictError
            When the session is not in ``created`` status.
        """
        self._public = SessionPublic.model_validate(self._api.post_json(f"{self._path}/start"))
        return self

    def upload_initial_model(self, source: InitialModelSource) -> InitialModelPublic:
        """Give the session (still ``created``) its initial model: a safetensors state dict.

        The workflow starts from it as from ``strategy.params.initial_parameters``; the
        server checks it against the package's model when the session starts (a tensor that
        does not fit fails the session naming it). A second upload replaces the first.

        Parameters
        ----------
        source : path, bytes or mapping of str to array
            A ``.safetensors`` file (e.g. ``safetensors.torch.save_file(module.state_dict(),
            path)``), its bytes, or the named arrays (a ``state_dict()``, numpy arrays).

        Returns
        -------
        InitialModelPublic
            What the server stored: ``sha256`` of the bytes, ``shapes``, ``dtypes``.

        Raises
        ------
        ConflictError
            When the session has started, or its model_config gives ``initial_parameters``.
        ValidationError
            When the bytes are not a numeric safetensors state dict (``detail`` says why) or
            the package takes no initial model.
        """
        response = self._api.request(
            "PUT", f"{self._path}/initial-model", content=initial_model_bytes(source)
        )
        return InitialModelPublic.model_validate(response.json())

    def cancel(self) -> Session:
        """Cancel the session; its clients are told it is over. Returns this handle."""
        self._public = SessionPublic.model_validate(self._api.post_json(f"{self._path}/cancel"))
        return self

    def delete(self) -> None:
        """Delete the session with its metrics and model.

        Raises
        ------
        ConflictError
            While the session is pending or running (cancel it first).
        """
        self._api.request("DELETE", self._path)

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float = 0.2,
        progress: bool | None = None,
    ) -> Session:
        """Block until the session ends.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; None waits as long as the session runs.
        poll_interval : float
            Seconds between status checks.
        progress : bool, optional
            Show a progress bar of rounds on stderr. By default it is shown only when stderr
            is a terminal.

        Returns
        -------
        Session
            This handle, once the session is ``completed``.

        Raises
        ------
        SessionError
            When the session ends ``failed`` or ``canceled``; ``.reason`` is the server's.
        WaitTimeout
            When ``timeout`` passes first (the session keeps running on the server).
        ServerUnavailable
            When the server stays unreachable for 30 s.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"The 'timeout' parameter must be >= 0 or None. Got {timeout}.")
        if poll_interval <= 0:
            raise ValueError(f"The 'poll_interval' parameter must be > 0. Got {poll_interval}.")
        show = sys.stderr.isatty() if progress is None else progress
        if not show:
            return self._poll_until_ended(timeout, poll_interval, None)

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rounds  {task.fields[status]}"),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(
                f"session {self.id}", total=self.num_rounds, status=str(self._public.status)
            )
            return self._poll_until_ended(timeout, poll_interval, (bar, task))

    def _poll_until_ended(
        self,
        timeout: float | None,
        poll_interval: float,
        bar: tuple[Progress, TaskID] | None,
    ) -> Session:
        started = time.monotonic()
        last_answer = started
        while True:
            now = time.monotonic()
            try:
                public = self.refresh()
                last_answer = now
            except ServerUnavailable:
                if now - last_answer > _UNREACHABLE_GRACE_S:
                    raise
                public = self._public
            if bar is not None:
                bar[0].update(bar[1], completed=public.round, status=str(public.status))
            if public.status == SessionStatus.completed:
                return self
            if public.status.ended:
                raise SessionError(self.id, str(public.status), public.failure_reason)
            if timeout is not None and now - started >= timeout:
                raise WaitTimeout(
                    self.id,
                    str(public.status),
                    f"still {public.status} at round {public.round}/{public.num_rounds} "
                    f"after waiting {timeout:g} s (the session keeps running on the server)",
                )
            time.sleep(poll_interval)

    # ------------------------------------------------------------------ results

    @property
    def metrics(self) -> MetricsAccessor:
        """The per-round metrics recorded so far (also while the session runs).

        ``session.metrics()`` is one snapshot (a :class:`SessionMetrics`);
        ``session.metrics.as_dict()``, ``.plot()`` ... fetch afresh for that call (see
        :class:`~fedsilo.sdk.metrics.MetricsAccessor`).
        """
        return MetricsAccessor(self._fetch_metrics)

    def _fetch_metrics(self) -> SessionMetrics:
        body = self._api.get_json(f"{self._path}/metrics")
        return SessionMetrics(SessionMetricsPublic.model_validate(body))

    def model(self) -> Model:
        """Download the session's model.

        Raises
        ------
        NotFoundError
            When the session has no model yet (it is saved once training completes) or
            does not exist.
        """
        try:
            response = self._api.request("GET", f"{self._path}/model")
        except NotFoundError as exc:
            if "no model" not in str(exc.detail).lower():
                raise  # the session itself does not exist; the server's detail says so
            raise NotFoundError(
                404,
                f"{exc.detail} A model is saved when training completes; "
                "call session.wait() before session.model().",
            ) from exc
        return Model.from_frame(response.content)

    def run(
        self, strategy: Strategy, num_rounds: int, *, seed: int = 23, timeout: float = 600.0
    ) -> DriverHistory:
        """Drive this session from this process with ``strategy`` (its hooks run here).

        The session must be of package ``arrays`` created with ``model_config={"driver":
        True}`` and started; this waits for its ``min_num_clients`` clients, runs
        ``num_rounds`` rounds (sampling, aggregation, ``evaluate_fn`` on data only this process
        holds), records each round's metrics on the server and saves the final arrays as the
        session's model (:mod:`fedsilo.sdk.driver`).

        Returns
        -------
        DriverHistory
            The final arrays and each round's federated and per-client metrics.
        """
        from fedsilo.sdk.driver import run_driver

        if self.package_name != "arrays" or self.model_config.get("driver") is not True:
            raise ConfigError(
                f"Session {self.id} is not driven: Session.run drives a session of package "
                "'arrays' created with model_config={'driver': True}. Got package "
                f"{self.package_name!r}, driver {self.model_config.get('driver')!r}."
            )
        return run_driver(
            self._api,
            self.id,
            strategy,
            num_rounds,
            min_num_clients=self.min_num_clients,
            seed=seed,
            timeout=timeout,
        )

    def results(self) -> EdaResults:
        """Download the results of an EDA session.

        Returns
        -------
        EdaResults
            ``results["dataset_one"]["x1"].mean()``, ``results.describe()``,
            ``results.pooled()``, ``.plot_hist()`` ... (see :mod:`fedsilo.analytics.results`).

        Raises
        ------
        FedsiloError
            When this is not an EDA session (a training session has ``model()`` instead).
        NotFoundError
            When the session has no results yet (they are saved when it completes).
        """
        if self._public.kind is not SessionKind.eda:
            raise FedsiloError(
                f"Session {self.id} is a {self._public.kind} session; results() reads the "
                "results of EDA sessions (client.create_eda_session). A training session's "
                "outcome is session.model()."
            )
        from fedsilo.analytics.results import EdaResults
        from fedsilo.wire import ModelMeta, decode_frame, parse_header

        try:
            response = self._api.request("GET", f"{self._path}/model")
        except NotFoundError as exc:
            if "no model" not in str(exc.detail).lower():
                raise  # the session itself does not exist; the server's detail says so
            raise NotFoundError(
                404,
                f"Session {self.id} has no results yet (it is {self.status}). Results are "
                "saved when the session completes; call session.wait() before "
                "session.results().",
            ) from exc
        arrays, header = decode_frame(response.content)
        meta = parse_header(ModelMeta, header, "EDA results frame header")
        return EdaResults.from_payload(meta.meta, arrays)

    def logs(self) -> list[SessionLogLine]:
        """What the server did in this session, oldest first (joins, resumes, failures)."""
        body = self._api.get_json(f"{self._path}/logs")
        return [SessionLogLine.model_validate(item) for item in body]

    def participants(self) -> list[ParticipantPublic]:
        """The clients that joined, with their dataset summaries (never values)."""
        body = self._api.get_json(f"{self._path}/participants")
        return [ParticipantPublic.model_validate(item) for item in body]

    # ------------------------------------------------------------------ plumbing

    @property
    def _path(self) -> str:
        return f"/sessions/{self.id}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return self.id == other.id and self._api.url == other._api.url

    def __hash__(self) -> int:
        return hash((self._api.url, self.id))

    def __repr__(self) -> str:
        # From the last answer, not a fresh GET: a repr must not fail or block.
        public = self._public
        return (
            f"Session(id={public.id!r}, name={public.name!r}, "
            f"package_name={public.package_name!r}, status={str(public.status)!r}, "
            f"round={public.round}/{public.num_rounds})"
        )
