"""The client process next to a silo's data: join a session, then serve its tasks.

One :class:`ClientRuntime` serves one participant of one session. It is the facade over the
client's parts::

    fetch_session ─> prepare: the package's binding loads and checks this silo's tables
                  │           (federation/binding.py; refused here, before joining)
                  ─> executor = package.executor(model_config, data_config, dataset, context)
                  ─> join with the public key (and the stored credential on a rejoin)
                  ─> serve: the task loop (loop.py) over the connection (connection.py),
                     each task through the mods (mods.py: release-once, ...)

Everything a participant must keep across restarts lives in its state directory
(``$FEDSILO_CLIENT_STATE_DIR`` or ``~/.fedsilo/client``): its X25519 key pair and the
credential of its first join (``keys/<session>/<client_name>.key`` / ``.credential``, mode
0600), and the replies it released (``<session>/<client_name>/``). A restarted client rejoins
as the same participant and answers a repeated question with the same bytes. With
``remove_after_complete`` that state is removed once the session completes. The runtime's log
of the session (``logs/<session>/<client_name>.log``, :mod:`fedsilo.client.sessionlog`) stays.

A client that refuses the session before joining (its data or the session's configuration
does not do here) tells the server in one line (:mod:`fedsilo.client.refusal`) and stops
with the full error.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fedsilo.client.connection import Connection, CredentialFile
from fedsilo.client.context import ClientContext
from fedsilo.client.keys import KeyPair
from fedsilo.client.loop import TaskLoop
from fedsilo.client.mods import Mod, client_mods
from fedsilo.client.policy import DataOwnerPolicy, PolicyGuard, PolicyRefusal
from fedsilo.client.refusal import refusal_reason
from fedsilo.client.replies import ReplyStore, default_state_dir
from fedsilo.client.sessionlog import ClientLog, log_path
from fedsilo.errors import ConfigError, ConflictError, DataError, FedsiloError, PermissionDenied
from fedsilo.federation import get_package
from fedsilo.federation.binding import NamedDatasetsConfig
from fedsilo.wire import (
    CLIENT_NAME_PATTERN,
    SESSION_ID_PATTERN,
    DatasetSummary,
    ParticipantJoin,
    ParticipantJoined,
    ParticipantRefusal,
    SessionEnded,
    SessionPublic,
    SessionStatus,
)

if TYPE_CHECKING:
    from pathlib import Path

    from fedsilo.data.dataset import LocalDataset
    from fedsilo.federation import Executor, ModelPackage
    from fedsilo.http import ApiClient

__all__ = ["ClientRuntime", "NamedDatasetsConfig", "PreparedData"]

logger = logging.getLogger("fedsilo.client")


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
        This participant's name; a restarted client with the same name and state directory
        rejoins as the same participant.
    train_path, test_path : str, optional
        The silo's training and test tables (local path or fsspec URL, parquet or CSV); the
        roles ``train`` and ``test`` of ``tables``. ``test_path`` may be None; the package
        then evaluates on the training data. With ``dataset_name``, ``train_path`` is the
        named dataset (role ``dataset``).
    batch_size : int
        Mini-batch size handed to the package's executor.
    tables : mapping of str to str, optional
        The tables by role, as the session's package declares them
        (:mod:`fedsilo.federation.binding`); instead of ``train_path`` / ``test_path``.
    poll_wait : float
        Seconds each long-poll for the next task may wait on the server.
    reconnect_timeout : float
        Seconds to keep retrying an unreachable server, counted from the last successful call.
    on_event : callable, optional
        Receives one human-readable progress line per event (joined, task received, reply sent,
        reconnects, session end). Default: the ``fedsilo.client`` logger at INFO.
    dataset_name : str, optional
        Join a session of named datasets (EDA) with the table as the dataset of this name.
    state_dir : Path, optional
        Keys, credential and released replies (see the module docstring). Default:
        ``$FEDSILO_CLIENT_STATE_DIR`` or ``~/.fedsilo/client``.
    mods : sequence of Mod, optional
        Middleware around the executor, outermost first, inside the runtime's release-once
        (see :mod:`fedsilo.client.mods`).
    log_interval : float
        Seconds between the routine per-task lines (task received, reply sent) passed to
        ``on_event``; 0 passes every one. Other lines (joined, failures, reconnects, the
        end) always pass, and the session's log file gets every line.
    remove_after_complete : bool
        Once the session completes, remove this participant's state for it (key pair,
        credential, released replies); its log stays. A failed or canceled session keeps
        its state, to debug or rejoin.
    package_options : mapping, optional
        Settings for the session's package, handed to its executor
        (``ExecutorContext.package_options``; VFL: ``storage_path``, ``raw_output``).
    policy : DataOwnerPolicy, optional
        The data owner's policy (:mod:`fedsilo.client.policy`): checked before joining and
        on every release; a refusal names its rule, to the server without data.

    Attributes
    ----------
    participant : ParticipantJoined or None
        Set once joined.
    ended : SessionEnded or None
        Set when the session is over: its final status and the server's reason.
    log : ClientLog
        This participant's log of the session (``log.path``).
    """

    def __init__(
        self,
        api: ApiClient,
        session_id: str,
        client_name: str,
        train_path: str | None = None,
        test_path: str | None = None,
        batch_size: int = 1024,
        *,
        tables: Mapping[str, str | None] | None = None,
        poll_wait: float = 30.0,
        reconnect_timeout: float = 300.0,
        on_event: Callable[[str], None] | None = None,
        dataset_name: str | None = None,
        state_dir: Path | None = None,
        mods: Sequence[Mod] = (),
        log_interval: float = 0.0,
        remove_after_complete: bool = False,
        package_options: Mapping[str, Any] | None = None,
        policy: DataOwnerPolicy | None = None,
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
        if log_interval < 0:
            raise ConfigError(f"The log interval must be >= 0 seconds. Got {log_interval}.")
        if tables is not None and (train_path is not None or test_path is not None):
            raise ConfigError(
                "Give the tables either by role (tables=) or as train_path/test_path, not both."
            )
        if tables is None:
            if train_path is None:
                raise ConfigError("No table given: pass train_path (or tables={role: path}).")
            first = "dataset" if dataset_name is not None else "train"
            tables = {first: train_path, "test": test_path}
        self.api = api
        self.session_id = session_id
        self.client_name = client_name
        self.tables: dict[str, str | None] = dict(tables)
        self.batch_size = batch_size
        self.dataset_name = dataset_name
        self._on_event = on_event
        self.participant: ParticipantJoined | None = None
        self.ended: SessionEnded | None = None
        self.state_dir = state_dir or default_state_dir()
        self.connection = Connection(
            api,
            session_id,
            poll_wait=poll_wait,
            reconnect_timeout=reconnect_timeout,
            emit=self._emit,
        )
        self._replies = ReplyStore(self.state_dir, session_id, client_name)
        keys_dir = self.state_dir / "keys" / session_id
        self._key_path = keys_dir / f"{client_name}.key"
        self._credentials = CredentialFile(keys_dir / f"{client_name}.credential")
        self._mods = list(mods)
        self.policy = policy
        self._guard: PolicyGuard | None = None
        self._context: ClientContext | None = None
        self.package_options = dict(package_options or {})
        self.log = ClientLog(log_path(self.state_dir, session_id, client_name))
        self.log_interval = log_interval
        self.remove_after_complete = remove_after_complete
        self._last_routine = -float("inf")
        self._routine_hidden = 0

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
            As for the constructor (``poll_wait``, ``reconnect_timeout``, ``on_event``, ...).
        """
        return cls(
            api,
            session_id,
            client_name if client_name is not None else dataset_name,
            # no mini-batches in analytics; the field only matters to training packages
            batch_size=options.pop("batch_size", 1),
            tables={"dataset": dataset_path},
            dataset_name=dataset_name,
            **options,
        )

    # ----------------------------------------------------------------- lifecycle

    @property
    def poll_wait(self) -> float:
        return self.connection.poll_wait

    @property
    def reconnect_timeout(self) -> float:
        return self.connection.reconnect_timeout

    @property
    def context(self) -> ClientContext:
        """What the executor is lent (its keys are made or loaded on first use)."""
        if self._context is None:
            keys = KeyPair.load_or_create(self._key_path)
            self._context = ClientContext(
                self.connection,
                self.client_name,
                keys,
                self._replies.folder / "executor",
                self.package_options,
            )
        return self._context

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
        PermissionDenied
            The client name is taken and this client holds no (or a wrong) credential for it.
        DataError
            The local data does not satisfy the session's data_config; nothing was sent
            but the one-line refusal (:meth:`refuse`).
        ConfigError
            The session's package or configs are unusable here, or the tables given are not
            the ones its package reads (refused likewise).
        ServerUnavailable
            The server stayed unreachable for ``reconnect_timeout`` seconds.
        """
        from fedsilo import __version__

        self.log.write(
            f"client {self.client_name!r} (fedsilo {__version__}) for session "
            f"{self.session_id} on {self.api.url}"
        )
        try:
            try:
                status = self._run()
            except BaseException as exc:  # the reason the client stopped, for `client log`
                self.log.write(f"stopped: {type(exc).__name__}: {exc}")
                raise
            finally:
                if self._context is not None:
                    self._context.abort.set()
                self._replies.close()
            if status is SessionStatus.completed and self.remove_after_complete:
                self.remove_state()
            return status
        finally:
            self.log.close()

    def _run(self) -> SessionStatus:
        session = self.fetch_session()
        try:
            if self.policy is not None:  # before the package's code is loaded
                self.policy.check_session(session)
            prepared = self.prepare(session)
            if self.policy is not None:
                self._guard = self._policy_guard(self.policy, prepared)
            executor = prepared.package.executor(
                prepared.model_config, prepared.data_config, prepared.dataset, self.context
            )
        except (DataError, ConfigError) as exc:
            self.refuse(exc)
            raise
        self.join(prepared.summary)
        return self.serve(executor)

    def _policy_guard(self, policy: DataOwnerPolicy, prepared: PreparedData) -> PolicyGuard:
        summary = prepared.summary
        frame = prepared.dataset.train
        read = [c.name for c in summary.columns if c.name in frame.columns]
        guard = policy.guard(
            prepared.model_config,
            {"train": summary.train_rows, "test": summary.test_rows},
            len(summary.columns),
            self.tables,
            self.state_dir,
            self._emit,
            column_values={name: int(frame[name].count()) for name in read},
        )
        self._emit(f"policy ok: releases need at least {guard.min_rows} row(s)")
        return guard

    def refuse(self, error: DataError | ConfigError) -> None:
        """Tell the server this client refuses the session, in one line without data.

        Best effort: when the server cannot record it, that is said in the progress lines
        and the caller stops with ``error`` all the same.
        """
        if isinstance(error, PolicyRefusal):  # its reason is written to be sent
            reason = error.reason
        else:
            reason = refusal_reason(error, self.tables)
        body = ParticipantRefusal(client_name=self.client_name, reason=reason)
        try:
            self.connection.refuse(body)
        except FedsiloError as exc:
            self._emit(f"refused the session; the server was not told ({exc})")
            return
        self._emit(f"refused the session; told the server: {body.reason}")

    def remove_state(self) -> None:
        """Remove this participant's local state for the session (``remove_after_complete``).

        Its key pair, credential and released replies go; the folders they were in go too
        when no other client of the session uses them. The log stays.
        """
        self._replies.close()
        shutil.rmtree(self._replies.folder, ignore_errors=True)
        self._key_path.unlink(missing_ok=True)
        self._credentials.path.unlink(missing_ok=True)
        for folder in (self._replies.folder.parent, self._key_path.parent):
            with contextlib.suppress(OSError):  # not empty: another client's state is there
                folder.rmdir()
        self._emit(
            f"removed the local state of session {self.session_id} for {self.client_name!r} "
            f"(--remove-after-complete); its log stays at {self.log.path}"
        )

    def fetch_session(self) -> SessionPublic:
        """The session as the server sees it; a clear :class:`NotFoundError` when unknown."""
        session = self.connection.fetch_session()
        self._emit(
            f"session {session.id} {session.name!r}: package {session.package_name}, "
            f"{session.num_rounds} round(s), status {session.status}"
        )
        return session

    def prepare(self, session: SessionPublic) -> PreparedData:
        """Check the session can be joined and load and validate this silo's data for it.

        Everything here happens before joining, so a session never sees a participant whose
        data it cannot use. Problems of every table are reported together.

        Raises
        ------
        ConflictError
            The session has ended.
        ConfigError
            The package is unknown, the session's configs do not parse, or the tables given
            are not the ones the package's binding declares.
        DataError
            Listing every problem of every table.
        """
        if session.status.ended:
            why = f" ({session.failure_reason})" if session.failure_reason else ""
            raise ConflictError(
                409, f"Cannot join session {session.id}: it is {session.status}{why}."
            )
        package = get_package(session.package_name)
        model_config = package.parse_model_config(session.model_config_)
        data_config = package.parse_data_config(session.data_config)
        bound = package.binding.bind(
            data_config,
            self.tables,
            dataset_name=self.dataset_name,
            batch_size=self.batch_size,
            where=f"Session {session.id} ({session.kind}, package {session.package_name})",
        )
        self._emit(
            f"data ok: {package.binding.describe(bound.dataset)}; "
            f"{len(bound.columns)} column(s) used"
        )
        return PreparedData(
            package=package,
            model_config=model_config,
            data_config=data_config,
            dataset=bound.dataset,
            summary=bound.summary,
        )

    def join(self, summary: DatasetSummary) -> ParticipantJoined:
        """Register as a participant, or rejoin with the credential kept in the state dir.

        Raises
        ------
        PermissionDenied
            The name is taken and the credential is missing or refused.
        """
        stored = self._credentials.load()
        body = ParticipantJoin(
            client_name=self.client_name, dataset=summary, public_key=self.context.keys.public_text
        )
        try:
            joined = self.connection.join(body, stored)
        except PermissionDenied as exc:
            held = (
                f"the credential stored at {self._credentials.path} was refused"
                if stored
                else f"no credential for it is stored at {self._credentials.path}"
            )
            raise PermissionDenied(
                403,
                f"Cannot join session {self.session_id} as {self.client_name!r}: a participant "
                f"of that name exists and {held}; rejoin from the state directory of its "
                f"first join or choose another --client-name. Server: {exc.detail}",
            ) from None
        if joined.credential:
            self._credentials.store(joined.credential)
        self.participant = joined
        verb = "rejoined" if joined.rejoined else "joined"
        self._emit(
            f"{verb} session {self.session_id} as {joined.client_name} (participant {joined.id})"
        )
        return joined

    def serve(self, executor: Executor) -> SessionStatus:
        """Serve tasks until the server says the session ended."""
        if self.participant is None:
            raise RuntimeError("Cannot serve tasks before joining: call join() first.")
        mods = client_mods(self._replies, self._mods, peer=self.context, policy=self._guard)
        loop = TaskLoop(
            self.connection, executor, mods, self.context.abort, self._emit, self._routine
        )
        ended = loop.serve()
        self.ended = ended
        why = f": {ended.reason}" if ended.reason else ""
        self._emit(f"session {self.session_id} {ended.status}{why}")
        return ended.status

    def _emit(self, line: str) -> None:
        self.log.write(line)
        if self._routine_hidden:
            line += f" ({self._hidden_note()})"
            self._routine_hidden = 0
        self._show(line)

    def _routine(self, line: str) -> None:
        """A per-task line: logged, and shown at most every ``log_interval`` seconds."""
        self.log.write(line)
        now = time.monotonic()
        if now - self._last_routine < self.log_interval:
            self._routine_hidden += 1
            return
        self._last_routine = now
        if self._routine_hidden:
            line += f" ({self._hidden_note()})"
            self._routine_hidden = 0
        self._show(line)

    def _hidden_note(self) -> str:
        return f"{self._routine_hidden} task line(s) not shown since; all are in {self.log.path}"

    def _show(self, line: str) -> None:
        if self._on_event is not None:
            self._on_event(line)
        else:
            logger.info(line)
