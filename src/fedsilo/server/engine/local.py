"""The engine's participant side without HTTP: join, take a task, reply, in one process.

The in-process runner (:mod:`fedsilo.runners.inprocess`) drives local executors as
participants of a real :class:`~fedsilo.server.engine.runner.SessionEngine` over the memory
store. These are the steps a client's HTTP calls make the server take -- a first join that
returns a credential (stored hashed), the credential checked on every task and reply, the
task taken from the hub, the reply handed to :meth:`SessionEngine.accept_reply` and a failure
recorded on the task -- minus the transport: no sockets, no request parsing, no long-poll.

:class:`LocalEngine` is the engine with one addition: a session whose workflow runs on the
caller's thread (a test calling ``package.workflow(context, ...)``) is attached to it, so
replies find their context as they find a worker's on the server.
"""

from __future__ import annotations

import hmac
import math
import weakref
from typing import TYPE_CHECKING

from fedsilo.errors import FedsiloError
from fedsilo.federation import Failure
from fedsilo.server.auth import hash_token
from fedsilo.server.engine.gate import Slot
from fedsilo.server.engine.hub import PendingTask
from fedsilo.server.engine.runner import Accepted, ReplyRejected, SessionEngine
from fedsilo.server.settings import Settings
from fedsilo.server.state import ArtifactStore, ParticipantRecord, StateStore, utcnow
from fedsilo.wire import DatasetSummary

if TYPE_CHECKING:
    from fedsilo.server.engine.context import EngineContext

__all__ = ["LocalEngine", "LocalParticipant", "ParticipantRefused"]


class ParticipantRefused(FedsiloError):
    """A local participant's call the server would answer 403, 404 or 409."""


class LocalEngine(SessionEngine):
    """A :class:`SessionEngine` that also knows contexts whose workflow runs elsewhere.

    The attached context is held weakly: the engine's liveness thread keeps the engine
    alive, and must not keep a dropped context (and its checkpoints) alive with it.
    """

    def __init__(self, state: StateStore, artifacts: ArtifactStore, settings: Settings) -> None:
        #: session id -> its attached context
        self._attached: dict[str, weakref.ref[EngineContext]] = {}
        super().__init__(state, artifacts, settings)

    def attach(self, context: EngineContext) -> None:
        """Make ``context`` the running context of its session (replies reach it)."""
        self._attached[context.session.id] = weakref.ref(context)

    def context_of(self, session_id: str) -> EngineContext | None:
        ref = self._attached.get(session_id)
        context = ref() if ref is not None else None
        return context if context is not None else super().context_of(session_id)

    def is_running(self, session_id: str) -> bool:
        return self.context_of(session_id) is not None or super().is_running(session_id)


class LocalParticipant:
    """One participant of a session on a :class:`LocalEngine`, joined as a client joins.

    Parameters
    ----------
    engine : LocalEngine
    session_id : str
    client_name : str
    dataset : DatasetSummary
        What it declares on joining.
    public_key : str
        Its X25519 public key (:attr:`fedsilo.client.keys.KeyPair.public_text`).
    """

    def __init__(
        self,
        engine: LocalEngine,
        session_id: str,
        client_name: str,
        dataset: DatasetSummary,
        public_key: str,
    ) -> None:
        self._engine = engine
        self.session_id = session_id
        # The join route's first join: a fresh credential, stored hashed, logged, live.
        joined = engine.first_join(session_id, client_name, dataset, public_key)
        if joined is None:
            raise ParticipantRefused(
                f"client_name: {client_name!r} already joined session {session_id}; "
                "a local participant joins once"
            )
        self.record: ParticipantRecord
        self.record, self._credential = joined
        #: the credential hash as stored, once read
        self._stored: str | None = None
        self.poll()

    @property
    def id(self) -> str:
        return self.record.id

    def _authorize(self) -> None:
        """The credential check of every ``tasks/next`` and reply call, against the stored
        hash read once (as the route's participant cache does)."""
        if self._stored is None:
            record = self._engine.state.get_participant(self.id)
            if record is None or record.session_id != self.session_id:
                raise ParticipantRefused(
                    f"Participant {self.id} not found in session {self.session_id}."
                )
            self._stored = record.credential_hash
        if not hmac.compare_digest(hash_token(self._credential), self._stored):
            raise ParticipantRefused(f"participant credential: not the one of {self.id}")

    def poll(self) -> None:
        """A sign of life: an in-process participant always listens (a poll that never ends),
        so it never goes offline while its context is alive."""
        self._engine.liveness.seen(self.id, self.session_id, wait=math.inf)

    def next_task(self) -> PendingTask | None:
        """The participant's oldest task in flight, marked delivered (``tasks/next``)."""
        self._authorize()
        self.poll()
        pending = self._engine.hub.peek(self.id)
        if pending is not None and pending.delivered_at is None:
            pending.delivered_at = utcnow()
        return pending

    def reply(self, task_id: str, frame: bytes) -> Accepted:
        """Post a reply frame to a task (the reply route, without its body's transport).

        In-process replies skip the session's reply gate: the caller drives every
        participant before the workflow reads an outcome, so the gate's bound (received,
        unconsumed large replies) cannot hold here.

        Raises
        ------
        ReplyRejected
            As the route's 409 or 422 (a malformed frame's failure is recorded first).
        """
        self._authorize()
        engine = self._engine
        try:
            accepted = engine.accept_reply(self.session_id, self.id, task_id, frame, Slot(None))
        except ReplyRejected as exc:
            if exc.failure is not None:
                engine.record_task_failure(self.session_id, task_id, exc.failure.reason)
            raise
        if isinstance(accepted.outcome, Failure):
            engine.record_task_failure(
                self.session_id, task_id, accepted.outcome.reason, accepted.reply_meta
            )
        return accepted
