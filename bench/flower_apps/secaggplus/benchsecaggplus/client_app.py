"""ClientApp: returns a float32 update of ``params`` values, through ``secaggplus_mod``.

``timed_mod`` wraps Flower's ``secaggplus_mod`` (secure = 1) or the plain fit (secure = 0)
and appends one JSON line per message to ``<out>.clients.jsonl``: the stage, the wall and
CPU ms of the whole handler and of the fit inside it (so the SecAgg+ share is the
difference), and the serialized size of the reply's content
(``recorddict_to_proto(reply.content).ByteSize()``: what the SuperNode sends up, without the
message metadata and gRPC framing).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import recorddict_to_proto

from benchsecaggplus.settings import append_line, settings


class UpdateClient(NumPyClient):  # type: ignore[misc]
    """Adds small noise to the broadcast: a dense 1M-value update, no training cost."""

    def __init__(self, partition: int) -> None:
        self.partition = partition

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
        rng = np.random.default_rng(self.partition)
        noise = rng.normal(0.0, 0.01, parameters[0].shape).astype(np.float32)
        # The weight stays below the workflow's max_weight (1000) to avoid its overflow warning.
        return [parameters[0] + noise], 100 + self.partition, {}


def client_fn(context: Context) -> Any:
    return UpdateClient(int(context.node_config.get("partition-id", 0))).to_client()


def timed_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    cfg = settings(dict(context.run_config))
    secure = int(cfg.get("secure", 0)) == 1
    stage = "fit"
    if secure and "secaggplus_configs" in msg.content.config_records:
        stage = str(msg.content.config_records["secaggplus_configs"].get("stage", "?"))
    fit = {"wall": 0.0, "cpu": 0.0}

    def fit_timed(inner: Message, ctx: Context) -> Message:
        wall, cpu = time.perf_counter(), time.process_time()
        reply = call_next(inner, ctx)
        fit["wall"] += time.perf_counter() - wall
        fit["cpu"] += time.process_time() - cpu
        return reply

    wall, cpu = time.perf_counter(), time.process_time()
    reply = secaggplus_mod(msg, context, fit_timed) if secure else fit_timed(msg, context)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    append_line(
        str(cfg.get("out", "")) + ".clients.jsonl" if cfg.get("out") else "",
        {
            "node": int(msg.metadata.dst_node_id),
            "round": str(msg.metadata.group_id),
            "stage": stage,
            "wall_ms": round(1000 * wall, 3),
            "cpu_ms": round(1000 * cpu, 3),
            "fit_wall_ms": round(1000 * fit["wall"], 3),
            "fit_cpu_ms": round(1000 * fit["cpu"], 3),
            "reply_bytes": recorddict_to_proto(reply.content).ByteSize(),
        },
    )
    return reply


app = ClientApp(client_fn=client_fn, mods=[timed_mod])
