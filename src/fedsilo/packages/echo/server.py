"""Server half of ``echo``: broadcast, fold the replies in as they arrive, average; one
checkpoint per round. The server holds the broadcast, one running sum and the reply being
folded in, never the round's replies together."""

from __future__ import annotations

import time

import numpy as np

from fedsilo.federation import SessionContext, Task
from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig
from fedsilo.workflows import stream


def run(ctx: SessionContext, mc: EchoModelConfig, dc: EchoDataConfig) -> None:
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    checkpoint = ctx.restore()
    if checkpoint is not None:
        state, start = checkpoint.arrays["x"], checkpoint.round + 1
    else:
        state, start = np.zeros(mc.payload_size, dtype=np.float32), 1
    for server_round in range(start, ctx.session.num_rounds + 1):
        began = time.perf_counter()
        broadcast = {"x": state}
        group = ctx.send(
            [Task(to=p, kind="echo", arrays=broadcast, round=server_round) for p in participants],
            timeout=mc.task_timeout,
        )
        del state, broadcast  # the broadcast frame is the one copy the round keeps
        total = np.zeros(mc.payload_size, dtype=np.float64)
        per_client: dict[str, dict[str, float]] = {}
        for reply in stream(ctx, group, mc.accept_failures, mc.min_replies):
            total += reply.arrays["x"]
            per_client[reply.participant.client_name] = {
                "num_examples": float(reply.meta["num_examples"])
            }
            del reply
        state = (total / len(per_client) + 1.0).astype(np.float32)
        del total
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        ctx.record_round(
            server_round,
            federated={"loss": 0.0, "round_ms": elapsed_ms, "replies": float(len(per_client))},
            per_client=per_client,
        )
        ctx.checkpoint(server_round, {"x": state}, {})
    ctx.save_model({"x": state}, {"rounds": ctx.session.num_rounds}, ctx.session.num_rounds)
