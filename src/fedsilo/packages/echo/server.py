"""Server half of ``echo``: broadcast, collect, average; one checkpoint per round."""

from __future__ import annotations

import time

import numpy as np

from fedsilo.federation import SessionContext
from fedsilo.packages.echo.config import EchoDataConfig, EchoModelConfig


def run(ctx: SessionContext, mc: EchoModelConfig, dc: EchoDataConfig) -> None:
    participants = ctx.wait_for_clients(ctx.session.min_num_clients)
    checkpoint = ctx.restore()
    if checkpoint is not None:
        state, start = checkpoint.arrays["x"], checkpoint.round + 1
    else:
        state, start = np.zeros(mc.payload_size, dtype=np.float32), 1
    for server_round in range(start, ctx.session.num_rounds + 1):
        began = time.perf_counter()
        replies = ctx.ask(
            participants,
            "echo",
            arrays={"x": state},
            round=server_round,
            timeout=mc.task_timeout,
            accept_failures=mc.accept_failures,
            min_replies=mc.min_replies,
        )
        total = np.zeros(mc.payload_size, dtype=np.float64)
        for reply in replies:
            total += reply.arrays["x"]
        state = (total / len(replies) + 1.0).astype(np.float32)
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        ctx.record_round(
            server_round,
            federated={"loss": 0.0, "round_ms": elapsed_ms, "replies": float(len(replies))},
            per_client={
                r.participant.client_name: {"num_examples": r.meta["num_examples"]} for r in replies
            },
        )
        ctx.checkpoint(server_round, {"x": state}, {})
    ctx.save_model({"x": state}, {"rounds": ctx.session.num_rounds}, ctx.session.num_rounds)
