"""An in-process run of stages A-D of one secure aggregation, as the workflow and the
client mod drive them (the share records are handed over as the plaintext the mod gets
after unsealing; every check of the library runs)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from fedsilo.privacy.secagg.client import ClientAggregation
from fedsilo.privacy.secagg.encoding import FixedPoint, encode_update
from fedsilo.privacy.secagg.server import ServerAggregation
from fedsilo.privacy.secagg.spec import SecAggSpec

SESSION = "s-1"
ROUND = 3
Vector = npt.NDArray[np.uint64]


@dataclass
class Run:
    """One aggregation, stage by stage; ``drop`` ids vanish after their computation."""

    spec: SecAggSpec
    ids: list[str]
    clients: dict[str, ClientAggregation] = field(default_factory=dict)
    server: ServerAggregation | None = None
    u1: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    masked: dict[str, Vector] = field(default_factory=dict)
    replies: dict[str, dict[str, dict[str, str | int]]] = field(default_factory=dict)

    def keys(self, drop: Sequence[str] = ()) -> None:
        self.clients = {pid: ClientAggregation(SESSION, ROUND, pid, self.spec) for pid in self.ids}
        keys = {pid: c.keys()["mask_public_key"] for pid, c in self.clients.items()}
        self.u1 = {pid: key for pid, key in keys.items() if pid not in drop}
        self.server = ServerAggregation(SESSION, ROUND, self.spec, self.u1)

    def shares(self, drop: Sequence[str] = ()) -> None:
        assert self.server is not None
        self.records = {}
        for pid in self.u1:
            out = self.clients[pid].shares(self.u1, self.server.threshold)
            if pid not in drop:
                self.records[pid] = out
        self.survivors = sorted(self.records)

    def inbox(self, pid: str) -> dict[str, bytes]:
        return {owner: out[pid] for owner, out in self.records.items() if owner != pid}

    def mask(self, updates: Mapping[str, Vector], drop: Sequence[str] = ()) -> None:
        self.masked = {}
        for pid in self.survivors:
            self.clients[pid].receive(self.inbox(pid))
            vector = self.clients[pid].mask(updates[pid], self.survivors)
            if pid not in drop:
                self.masked[pid] = vector

    @property
    def senders(self) -> list[str]:
        return sorted(self.masked)

    @property
    def dropped(self) -> list[str]:
        return sorted(set(self.survivors) - set(self.masked))

    def unmask(self, drop: Sequence[str] = ()) -> None:
        self.replies = {
            pid: self.clients[pid].unmask(self.senders, self.dropped)
            for pid in self.senders
            if pid not in drop
        }

    def recover(self) -> Vector:
        assert self.server is not None
        return self.server.recover(self.masked, self.replies, self.survivors, self.senders)


RunProtocol = Callable[..., tuple[Run, Vector]]


def _run(
    spec: SecAggSpec,
    arrays: Mapping[str, Mapping[str, npt.NDArray[np.float64]]],
    weights: Mapping[str, int],
    drop_keys: Sequence[str] = (),
    drop_shares: Sequence[str] = (),
    drop_masked: Sequence[str] = (),
    drop_unmask: Sequence[str] = (),
) -> tuple[Run, Vector]:
    fixed = FixedPoint.from_spec(spec)
    state = Run(spec, sorted(arrays))
    state.keys(drop_keys)
    state.shares(drop_shares)
    updates = {pid: encode_update(fixed, arrays[pid], weights[pid]) for pid in arrays}
    state.mask(updates, drop_masked)
    state.unmask(drop_unmask)
    return state, state.recover()


@pytest.fixture
def run_protocol() -> RunProtocol:
    """``run_protocol(spec, arrays, weights, drop_keys=..., ...) -> (Run, total)``."""
    return _run


@pytest.fixture
def staged() -> Callable[[SecAggSpec, list[str]], Run]:
    """A :class:`Run` to drive stage by stage."""
    return Run
