"""Sealed per-batch messages between the parties of a split network.

Embeddings (passive -> active) and their gradients (active -> passive) travel over the fast
exchange (:class:`~fedsilo.federation.FastExchange`: the server's memory, never its
database), each one a codec frame sealed to its recipient with the participants' X25519 join
keys (:meth:`~fedsilo.federation.ExecutorContext.seal`), so the server relays bytes it
cannot read. The frame's header -- inside the seal, so authenticated -- names what the
message is (``kind``, ``round``, ``batch``); the exchange's tag repeats it in the clear only
for logs, and is never trusted.

A message of an earlier round (left over from a round the server resent after a failure)
is dropped; one of a later step than awaited is kept until it is awaited.

Lock step in one request: a send that is always answered (an embedding by its gradient, a
batch's last gradient by the next embedding) asks the exchange for this party's next message
in the same request when the exchange offers it (:class:`RoundTrip`, the HTTP one does);
the message that comes back waits in the channel for :meth:`PeerChannel.receive`. Nothing
about what is sent, or in which order it is used, changes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from fedsilo.errors import TaskError, WaitTimeout
from fedsilo.federation import ExecutorContext, Sealed
from fedsilo.wire import Arrays, decode_frame, encode_frame

__all__ = ["RECEIVE_TIMEOUT_S", "PeerChannel", "RoundAbandoned", "RoundTrip"]

#: seconds a party waits for a peer's message before the round fails: covers a peer's
#: slowest batch (a wide embedding on a busy CPU) with a wide margin, yet shows a dead peer
RECEIVE_TIMEOUT_S = 600.0
# Each receive long-polls at most this long, so an aborted session is noticed promptly.
_POLL_S = 2.0

Key = tuple[str, str, int, int]  # (sender, kind, attempt, batch)


@runtime_checkable
class RoundTrip(Protocol):
    """A fast exchange that sends and waits for the sender's next message in one call
    (:meth:`fedsilo.client.exchange.HttpExchange.send_and_receive`)."""

    def send_and_receive(
        self,
        to: str,
        payload: bytes,
        tag: str = "",
        wait: float = 2.0,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[str, str, bytes] | None: ...


class RoundAbandoned(TaskError):
    """This party's attempt of a round cannot finish: a peer restarted it or moved on to a
    resent one. The task fails; the workflow resends the round to every party."""


class PeerChannel:
    """One party's sealed messages to and from the others, for one session.

    Parameters
    ----------
    context : ExecutorContext
        The client runtime's: sealing, the exchange, the abort signal.
    timeout : float
        Seconds :meth:`receive` waits for the messages it awaits.
    """

    def __init__(self, context: ExecutorContext, timeout: float = RECEIVE_TIMEOUT_S) -> None:
        self._context = context
        self.timeout = timeout
        self._held: dict[Key, Arrays] = {}
        #: the attempt being served and the messages of it received so far
        self._attempt = -1
        self._seen: set[Key] = set()
        #: messages (sender, payload) a send brought back, not yet opened by `receive`
        self._inbox: deque[tuple[str, bytes]] = deque()
        #: bytes sent and received (sealed payloads), for the bench and the logs
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(
        self,
        to: str,
        kind: str,
        attempt: int,
        batch: int,
        arrays: Mapping[str, Any],
        *,
        answered: bool = False,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Seal ``arrays`` to participant ``to`` and send them.

        With ``answered`` (this party's next step is :meth:`receive`, and the message it
        awaits comes in answer to this one), the same request waits a moment for this
        party's next message, kept for :meth:`receive`. ``meanwhile`` runs once the message
        is on its way (while the peer works on it), before this call returns.
        """
        frame = encode_frame(dict(arrays), {"kind": kind, "attempt": attempt, "batch": batch})
        sealed = self._context.seal(to, frame)
        exchange = self._context.exchange
        tag = f"{kind}:{attempt}:{batch}"
        if answered and isinstance(exchange, RoundTrip):
            got = exchange.send_and_receive(
                to, sealed.ciphertext, tag=tag, wait=_POLL_S, meanwhile=meanwhile
            )
            if got is not None:
                self._inbox.append((got[0], got[2]))
        else:
            exchange.send(to, sealed.ciphertext, tag=tag)
            if meanwhile is not None:
                meanwhile()
        self.bytes_sent += len(sealed.ciphertext)

    def receive(
        self, senders: Sequence[str], kind: str, attempt: int, batch: int
    ) -> dict[str, Arrays]:
        """The message ``(kind, attempt, batch)`` of each of ``senders``.

        Raises
        ------
        RoundAbandoned
            A peer is on a later attempt (the round was resent: this task is stale), or sent
            a message of this attempt a second time (it restarted the attempt): this party's
            task fails, and the workflow resends the round to everyone.
        TaskError
            When a message does not come within :attr:`timeout` seconds, the session is
            aborted, or a message cannot be opened (not sealed to this party by that sender).
        """
        if attempt != self._attempt:
            self._attempt, self._seen = attempt, set()
            self._held = {k: v for k, v in self._held.items() if k[2] >= attempt}
        wanted = {(s, kind, attempt, batch) for s in senders}
        found = {key[0]: self._held.pop(key) for key in list(wanted) if key in self._held}
        deadline = time.monotonic() + self.timeout
        while len(found) < len(wanted):
            if self._context.abort.is_set():
                raise TaskError("the session ended while waiting for a peer's message")
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(set(senders) - set(found))
                raise TaskError(
                    f"no {kind!r} message of batch {batch} (attempt {attempt}) from "
                    f"participant(s) {missing} within {self.timeout:g} s"
                )
            if self._inbox:
                sender, payload = self._inbox.popleft()
            else:
                try:
                    exchange = self._context.exchange
                    sender, _, payload = exchange.receive(timeout=min(_POLL_S, left))
                except WaitTimeout:
                    continue
            self.bytes_received += len(payload)
            arrays, header = self._open(sender, payload)
            key = (sender, str(header["kind"]), int(header["attempt"]), int(header["batch"]))
            if key[2] < attempt:
                continue  # of an earlier attempt (a task since resent): dropped
            if key[2] > attempt:
                self._held[key] = arrays  # for the task of that attempt, next
                raise RoundAbandoned(
                    f"participant {sender} is on a later attempt of the round: this one was resent"
                )
            if key in self._seen:
                raise RoundAbandoned(
                    f"participant {sender} sent {key[1]!r} of batch {key[3]} again: it "
                    "restarted the round"
                )
            self._seen.add(key)
            if key in wanted:
                found[sender] = arrays
            else:
                self._held[key] = arrays
        return found

    def _open(self, sender: str, payload: bytes) -> tuple[Arrays, dict[str, Any]]:
        try:
            plaintext = self._context.open(Sealed(sender=sender, ciphertext=payload))
            arrays, header = decode_frame(plaintext)
        except Exception as exc:
            raise TaskError(
                f"a fast-exchange message from participant {sender} could not be opened: {exc}"
            ) from exc
        if not isinstance(header, dict) or not {"kind", "attempt", "batch"} <= set(header):
            raise TaskError(f"a message from participant {sender} has no kind, attempt, batch")
        return arrays, header
