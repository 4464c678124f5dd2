"""The client process next to a silo's data: join a session, then poll, execute and reply.

One :class:`ClientRuntime` serves one participant of one session. A training session reads a
training (and optional test) table; a session whose data_config names datasets (EDA, see
:class:`NamedDatasetsConfig`) reads one table as the dataset it names
(:meth:`ClientRuntime.for_dataset`)::

    fetch_session ─> prepare (load + validate both files; refuse here, before joining)
                  ─> join ─> loop: tasks/next ─┬─ 200 task  -> executor.handle -> reply
                                               ├─ 204 none  -> poll again
                                               └─ 410 ended -> return the final status

Every connection is made by the client (principle 2 of the design): the server wakes a
long-poll when it queues a task, so a round costs milliseconds of latency, not a poll interval.
Connection failures are retried with capped exponential backoff, so a client survives a server
restart: the participant id is persisted by the server and stays valid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from fedsilo.client.replies import ReplyStore, default_state_dir, question_digest
from fedsilo.data.loading import load_table
from fedsilo.data.validation import find_problems, summarize
from fedsilo.errors import (
    APIError,
    ConfigError,
    ConflictError,
    DataError,
    FedsiloError,
    NotFoundError,
    ServerUnavailable,
)
from fedsilo.federation import get_package
from fedsilo.wire import (
    CLIENT_NAME_PATTERN,
    SESSION_ID_PATTERN,
    Arrays,
    DatasetSummary,
    ParticipantJoin,
    ParticipantPublic,
    ReplyEnvelope,
    SessionEnded,
    SessionPublic,
    SessionStatus,
    TaskEnvelope,
    decode_frame,
    encode_frame,
    parse_header,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    import pandas as pd

    from fedsilo.data.dataset import LocalDataset
    from fedsilo.federation import Executor, ModelPackage
    from fedsilo.http import ApiClient

__all__ = ["ClientRuntime", "NamedDatasetsConfig", "PreparedData"]

logger = logging.getLogger("fedsilo.client")

_T = TypeVar("_T")

# Backoff while the server is unreachable: the first retry comes quickly (a restart on the same
# host takes about a second), later ones at most every 2 s so a returning server is found fast
# without hammering a host that is down for longer.
_BACKOFF_START = 0.1
_BACKOFF_CAP = 2.0
# A reverse proxy in front of a restarting server answers these instead of refusing the
# connection; they mean the same thing.
_UNAVAILABLE_STATUSES = (502, 503, 504)
# Added to the long-poll's `wait` for the read timeout, so a slow answer is not mistaken for a
# dead server.
_POLL_GRACE = 10.0


@runtime_checkable
class NamedDatasetsConfig(Protocol):
    """A data_config that maps dataset names to the columns each dataset contributes.

    Sessions with such a config (EDA) are joined with one dataset and its name
    (:meth:`ClientRuntime.for_dataset`); the config says which of its columns are read.
    """

    def columns_for(self, dataset_name: str, available: Sequence[str]) -> list[str]:
        """The columns read from dataset ``dataset_name`` with columns ``available``;
        raises :class:`~fedsilo.errors.DataError` listing what is missing."""
        ...


@dataclass(frozen=True)
class PreparedData:
    """A session's package and configs with this silo's validated data, ready to join.

    Attributes
    ----------
    package : ModelPackage
    model_config : the package's parsed model_config
    data_config : the package's parsed data_config
    dataset : LocalDataset
    summary : DatasetSummary
        What the join request tells the server (row counts, the columns the session reads).
    """

    package: ModelPackage[Any, Any]
    model_config: Any
    data_config: Any
    dataset: LocalDataset
    summary: DatasetSummary


class ClientRuntime:
    """Join one session as one participant and work on its tasks until the session ends.

    Parameters
    ----------
    api : ApiClient
        Authenticated client for the server.
    session_id : str
        The session to join (10 hex characters).
    client_name : str
        This participant's name; joining again under the same name (after a client restart)
        resumes the same participant.
    train_path, test_path : str
        The silo's training and test tables (local path or fsspec URL, parquet or CSV).
        ``test_path`` may be None; the package then evaluates on the training data.
    batch_size : int
        Mini-batch size handed to the package's executor.
    poll_wait : float
        Seconds each long-poll for the next task may wait on the server.
    reconnect_timeout : float
        Seconds to keep retrying an unreachable server, counted from the last successful call.
    on_event : callable, optional
        Receives one human-readable progress line per event (joined, task received, reply sent,
        reconnects, session end). Default: the ``fedsilo.client`` logger at INFO.
    dataset_name : str, optional
        Join a session of named datasets (EDA) with ``train_path`` as the dataset of this
        name; ``test_path`` must then be None. See :meth:`for_dataset`.
    state_dir : Path, optional
        Where the replies already released are kept, so a restarted client answers a repeated
        question with the same reply (see :mod:`fedsilo.client.replies`). Default:
        ``$FEDSILO_CLIENT_STATE_DIR`` or ``~/.fedsilo/client``.

    Attributes
    ----------
    participant : ParticipantPublic or None
        Set once joined.
    ended : SessionEnded or None
        Set when the session is over: its final status and the server's reason.
    """

    def __init__(
        self,
        api: ApiClient,
        session_id: str,
        client_name: str,
        train_path: str,
        test_path: str | None,
        batch_size: int,
        *,
        poll_wait: float = 30.0,
        reconnect_timeout: float = 300.0,
        on_event: Callable[[str], None] | None = None,
        dataset_name: str | None = None,
        state_dir: Path | None = None,
    ) -> None:
        if not SESSION_ID_PATTERN.match(session_id):
            raise ConfigError(
                f"The session id must be 10 lowercase hex characters (e.g. '3f9a0c12de'). "
                f"Got {session_id!r}."
            )
        # First: the client name defaults to the dataset name, so name the field given.
        if dataset_name is not None:
            if not CLIENT_NAME_PATTERN.match(dataset_name):
                raise ConfigError(
                    "The dataset name must start with a letter or digit and contain only "
                    f"letters, digits and '_.@:-' (at most 128 characters). Got {dataset_name!r}."
                )
            if test_path is not None:
                raise ConfigError(
                    f"A named dataset is one table; got a test path ({test_path!r}) as well."
                )
        if not CLIENT_NAME_PATTERN.match(client_name):
            raise ConfigError(
                "The client name must start with a letter or digit and contain only letters, "
                f"digits and '_.@:-' (at most 128 characters). Got {client_name!r}."
            )
        if batch_size < 1:
            raise ConfigError(f"The batch size must be >= 1. Got {batch_size}.")
        if poll_wait <= 0:
            raise ConfigError(f"The poll wait must be > 0 seconds. Got {poll_wait}.")
        if reconnect_timeout < 0:
            raise ConfigError(
                f"The reconnect timeout must be >= 0 seconds. Got {reconnect_timeout}."
            )
        self.api = api
        self.session_id = session_id
        self.client_name = client_name
        self.train_path = train_path
        self.test_path = test_path
        self.batch_size = batch_size
        self.dataset_name = dataset_name
        self.poll_wait = poll_wait
        self.reconnect_timeout = reconnect_timeout
        self._on_event = on_event
        self.participant: ParticipantPublic | None = None
        self.ended: SessionEnded | None = None
        self._last_success = time.monotonic()
        self._outage_started: float | None = None
        self._replies = ReplyStore(state_dir or default_state_dir(), session_id, client_name)

    @classmethod
    def for_dataset(
        cls,
        api: ApiClient,
        session_id: str,
        dataset_path: str,
        dataset_name: str,
        client_name: str | None = None,
        **options: Any,
    ) -> ClientRuntime:
        """A runtime that joins a session of named datasets (EDA) with one dataset.

        Parameters
        ----------
        dataset_path : str
            The dataset's table (local path or fsspec URL, parquet or CSV).
        dataset_name : str
            Its name; the session's data_config says which columns it contributes.
        client_name : str, optional
            Defaults to ``dataset_name``.
        **options
            ``poll_wait``, ``reconnect_timeout``, ``on_event`` as for the constructor.
        """
        return cls(
            api,
            session_id,
            client_name if client_name is not None else dataset_name,
            dataset_path,
            None,
            1,  # no mini-batches in analytics; the field only matters to training packages
            dataset_name=dataset_name,
            **options,
        )

    # ----------------------------------------------------------------- lifecycle

    def run(self) -> SessionStatus:
        """Fetch the session, prepare the data, join, and serve tasks until the session ends.

        Returns
        -------
        SessionStatus
            ``completed``, ``failed`` or ``canceled``; :attr:`ended` holds the server's reason.

        Raises
        ------
        NotFoundError
            The session does not exist.
        ConflictError
            The session has already ended (or the server refuses the join).
        DataError
            The local data does not satisfy the session's data_config; nothing was sent.
        ConfigError
            The session's package or configs are unusable here.
        ServerUnavailable
            The server stayed unreachable for ``reconnect_timeout`` seconds.
        """
        self._last_success = time.monotonic()
        session = self.fetch_session()
        prepared = self.prepare(session)
        executor = prepared.package.executor(
            prepared.model_config, prepared.data_config, prepared.dataset
        )
        self.join(prepared.summary)
        return self.serve(executor)

    def fetch_session(self) -> SessionPublic:
        """The session as the server sees it; a clear :class:`NotFoundError` when unknown."""
        try:
            body = self._call(lambda: self.api.get_json(f"/sessions/{self.session_id}"))
        except NotFoundError:
            raise NotFoundError(
                404, f"Session {self.session_id} does not exist on {self.api.url}."
            ) from None
        session = parse_header(SessionPublic, body, f"session {self.session_id}")
        self._emit(
            f"session {session.id} {session.name!r}: package {session.package_name}, "
            f"{session.num_rounds} round(s), status {session.status}"
        )
        return session

    def prepare(self, session: SessionPublic) -> PreparedData:
        """Check the session can be joined and load and validate this silo's data for it.

        Everything here happens before joining, so a session never sees a participant whose
        data it cannot use. Problems of the training and the test file are reported together.

        Raises
        ------
        ConflictError
            The session has ended.
        ConfigError
            The package is unknown or the session's configs do not parse.
        DataError
            Listing every problem of both files.
        """
        if session.status.ended:
            why = f" ({session.failure_reason})" if session.failure_reason else ""
            raise ConflictError(
                409, f"Cannot join session {session.id}: it is {session.status}{why}."
            )
        package = get_package(session.package_name)
        model_config = package.parse_model_config(session.model_config_)
        data_config = package.parse_data_config(session.data_config)
        named = isinstance(data_config, NamedDatasetsConfig)
        if named and self.dataset_name is None:
            raise ConfigError(
                f"Session {session.id} ({session.kind}, package {session.package_name}) "
                "analyses named datasets: join it with `fedsilo client eda --dataset-path P "
                "--dataset-name NAME`."
            )
        if self.dataset_name is not None:
            if not named:
                raise ConfigError(
                    f"Session {session.id} ({session.kind}, package {session.package_name}) "
                    "does not take named datasets: join it with `fedsilo client train "
                    "--train-path P`."
                )
            return self._prepare_dataset(self.dataset_name, package, model_config, data_config)
        required: list[str] = list(data_config.required_columns())

        problems: list[str] = []
        train = self._load(self.train_path, "--train-path", required, problems)
        test = (
            self._load(self.test_path, "--test-path", required, problems)
            if self.test_path is not None
            else None
        )
        if problems or train is None:
            raise DataError(problems, source="the local data")

        from fedsilo.data.dataset import LocalDataset

        dataset = LocalDataset(train=train, test=test, batch_size=self.batch_size)
        test_rows = f", test {len(test)} rows" if test is not None else ", no test set"
        self._emit(f"data ok: train {len(train)} rows{test_rows}; {len(required)} column(s) used")
        return PreparedData(
            package=package,
            model_config=model_config,
            data_config=data_config,
            dataset=dataset,
            summary=summarize(train, test, columns=required),
        )

    def join(self, summary: DatasetSummary) -> ParticipantPublic:
        """Register as a participant (or resume the participant of the same name)."""
        body = ParticipantJoin(client_name=self.client_name, dataset=summary)
        answer = self._call(
            lambda: self.api.post_json(
                f"/sessions/{self.session_id}/participants", body.model_dump(mode="json")
            )
        )
        participant = parse_header(ParticipantPublic, answer, "join answer")
        self.participant = participant
        verb = "rejoined" if participant.rejoined else "joined"
        self._emit(
            f"{verb} session {self.session_id} as {participant.client_name} "
            f"(participant {participant.id})"
        )
        return participant

    def serve(self, executor: Executor) -> SessionStatus:
        """Poll for tasks, execute them and reply, until the server says the session ended."""
        if self.participant is None:
            raise RuntimeError("Cannot serve tasks before joining: call join() first.")
        base = f"/sessions/{self.session_id}/participants/{self.participant.id}/tasks"
        while True:
            response = self._call(
                lambda: self.api.request(
                    "GET",
                    f"{base}/next",
                    # `:g` sends 30 rather than 30.0, which an integer query parameter accepts.
                    params={"wait": f"{self.poll_wait:g}"},
                    timeout=self.poll_wait + _POLL_GRACE,
                    ok=(200, 204, 410),
                )
            )
            if response.status_code == 204:
                continue
            if response.status_code == 410:
                ended = parse_header(SessionEnded, response.json(), "session-ended answer")
                self.ended = ended
                why = f": {ended.reason}" if ended.reason else ""
                self._emit(f"session {self.session_id} {ended.status}{why}")
                return ended.status
            self._handle_task(base, response.content, executor)

    def _prepare_dataset(
        self,
        dataset_name: str,
        package: ModelPackage[Any, Any],
        model_config: Any,
        data_config: Any,
    ) -> PreparedData:
        """Load the one named dataset; the package's executor checks it further (its policy
        on row counts, the values of the columns) before anything is sent."""
        frame = load_table(self.train_path, "--dataset-path")
        columns = data_config.columns_for(dataset_name, [str(c) for c in frame.columns])

        from fedsilo.data.dataset import LocalDataset

        dataset = LocalDataset(
            train=frame, test=None, batch_size=self.batch_size, name=dataset_name
        )
        self._emit(
            f"data loaded: dataset {dataset_name!r} {len(frame)} rows; "
            f"{len(columns)} column(s) selected"
        )
        return PreparedData(
            package=package,
            model_config=model_config,
            data_config=data_config,
            dataset=dataset,
            summary=summarize(frame, None, columns=columns),
        )

    # ------------------------------------------------------------------- helpers

    def _load(
        self, path: str, field: str, required: list[str], problems: list[str]
    ) -> pd.DataFrame | None:
        try:
            frame = load_table(path, field)
        except DataError as exc:
            problems.extend(exc.problems)
            return None
        problems.extend(find_problems(frame, required, f"{field} {path!r}"))
        return frame

    def _handle_task(self, base: str, content: bytes, executor: Executor) -> None:
        started = time.perf_counter()
        try:
            arrays, header = decode_frame(content)
            task = parse_header(TaskEnvelope, header, "task frame header")
        except FedsiloError as exc:
            # Without a readable envelope there is no task id to answer; the server's task
            # timeout and failure policy take care of it.
            self._emit(f"ignored an unreadable task frame: {exc}")
            return
        label = f"task {task.id} ({task.kind}, round {task.round})"
        self._emit(f"{label} received")
        digest = question_digest(task.kind, task.round, task.meta, arrays)
        released = self._replies.get(task.kind, digest)
        if released is not None:
            # Asked again (the server restarted): the same answer, never a second release.
            self._emit(f"{label} was answered before; sending the same reply again")
            frame, status = released, "ok"
        else:
            frame, status = self._execute(label, task, arrays, executor)
            if status == "ok":
                self._replies.put(task.kind, digest, frame)
        response = self._call(
            lambda: self.api.request(
                "POST", f"{base}/{task.id}/reply", content=frame, ok=(200, 409, 410)
            )
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            # 409: the server no longer awaits this task (it restarted, or the task timed
            # out); 410: the session ended meanwhile. The next poll tells what comes next.
            self._emit(f"{label} reply not accepted ({response.status_code}: {_detail(response)})")
            return
        self._emit(f"{label} replied {status} in {elapsed_ms:.0f} ms")

    def _execute(
        self, label: str, task: TaskEnvelope, arrays: Arrays, executor: Executor
    ) -> tuple[bytes, str]:
        try:
            meta, out_arrays = executor.handle(task.kind, dict(task.meta), arrays)
            # Encoding is inside the guard: a reply meta that is not JSON-able is the
            # package's failure too, and must not take the client down.
            return encode_frame(out_arrays, ReplyEnvelope(status="ok", meta=meta)), "ok"
        except Exception as exc:  # the package's failure is reported, the server decides
            logger.debug("%s failed", label, exc_info=True)
            message = str(exc) or type(exc).__name__
            self._emit(f"{label} failed: {message}")
            return encode_frame({}, ReplyEnvelope(status="error", error=message)), "error"

    def _call(self, request: Callable[[], _T]) -> _T:
        """Run ``request``, retrying while the server is unreachable.

        Retries use exponential backoff from 0.1 s capped at 2 s, until ``reconnect_timeout``
        seconds have passed since the last successful call.
        """
        delay = _BACKOFF_START
        while True:
            try:
                result = request()
            except (ServerUnavailable, APIError) as exc:
                if isinstance(exc, APIError) and exc.status_code not in _UNAVAILABLE_STATUSES:
                    raise
                now = time.monotonic()
                waited = now - self._last_success
                if waited >= self.reconnect_timeout:
                    raise ServerUnavailable(
                        f"{exc} (gave up after {waited:.0f} s without reaching the server; "
                        f"reconnect timeout {self.reconnect_timeout:g} s)"
                    ) from exc
                if self._outage_started is None:
                    self._outage_started = now
                    self._emit(
                        f"server unreachable ({exc}); retrying for up to "
                        f"{self.reconnect_timeout - waited:.0f} s"
                    )
                time.sleep(min(delay, self.reconnect_timeout - waited))
                delay = min(delay * 2, _BACKOFF_CAP)
                continue
            self._last_success = time.monotonic()
            if self._outage_started is not None:
                self._emit(f"reconnected after {self._last_success - self._outage_started:.1f} s")
                self._outage_started = None
            return result

    def _emit(self, line: str) -> None:
        if self._on_event is not None:
            self._on_event(line)
        else:
            logger.info(line)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return str(response.text)
