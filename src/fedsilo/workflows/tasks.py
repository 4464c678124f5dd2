"""The task-level steps of a workflow: a group's replies under a strategy's failure policy
(:func:`stream`), and the first global model from a client (:func:`ask_initial_arrays`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Failure, Participant, Reply, SessionContext, Task, TaskGroup
from fedsilo.federation.expect import ReplySpec
from fedsilo.wire import Arrays

__all__ = ["ask_initial_arrays", "stream"]


def stream(
    ctx: SessionContext, group: TaskGroup, accept_failures: bool, min_replies: int
) -> Iterator[Reply]:
    """A group's successful replies as they arrive, under a strategy's failure policy.

    A failure raises at once when ``accept_failures`` is false (the outstanding tasks are
    withdrawn); otherwise it is logged once the group is done. Fewer than ``min_replies``
    replies raise after the last one, before a consumer could aggregate too few.

    Raises
    ------
    TaskError
        As above; the message names the round, the task kind and every failure.
    """
    kind = group.tasks[0].kind if group.tasks else "?"
    server_round = group.tasks[0].round if group.tasks else 0
    count = 0
    for outcome in group.outcomes():
        if isinstance(outcome, Failure):
            if not accept_failures:
                group.cancel("an earlier task of the round failed")
                raise TaskError(
                    f"round {server_round}: task {kind!r} failed and accept_failures is "
                    f"false: {outcome}"
                )
            continue
        count += 1
        yield outcome
    listed = "; ".join(str(f) for f in group.failures)
    if group.failures:
        ctx.log(
            f"round {server_round}: task {kind!r} failed on {len(group.failures)} client(s): "
            f"{listed}"
        )
    if count < min_replies:
        raise TaskError(
            f"round {server_round}: task {kind!r} got {count} successful replies; at least "
            f"{min_replies} needed" + (f" ({listed})" if listed else "")
        )


def ask_initial_arrays(
    ctx: SessionContext, participants: Sequence[Participant], template: Arrays | None = None
) -> Arrays:
    """The first global model, built by one client (an ``init`` task, as Flower asks one
    client for its initial parameters).

    The server then never builds the model itself: it needs no deep-learning framework for
    a workflow that only averages arrays, nor to run code it was not given.

    Parameters
    ----------
    template : dict of str to ndarray, optional
        Names and shapes the reply must have (dtypes follow the client).

    Raises
    ------
    TaskError
        When the client fails, or its arrays do not match ``template``.
    """
    if not participants:
        raise TaskError("Cannot ask for the initial model: no participant joined.")
    group = ctx.send([Task(to=participants[0], kind="init", round=0, expect=ReplySpec())])
    reply = group.wait(min_replies=1)[0]
    arrays = dict(reply.arrays)
    if template is not None:
        got = {name: np.shape(a) for name, a in arrays.items()}
        expected = {name: np.shape(a) for name, a in template.items()}
        if got != expected:
            raise TaskError(
                f"The init reply of client {reply.participant.client_name!r} does not match "
                f"the model: arrays {got}, expected {expected}."
            )
    return arrays
