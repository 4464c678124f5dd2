"""The server half of prl: orchestrate the PSI, keep the alignment, never see an id.

1. ``prl_prepare`` to every client: row counts, the kind of each id column (integer,
   string, mixed) and keyed digests. The kinds are compared column by column: a silo
   holding integers where another holds strings would find no overlap, so the session fails
   naming them instead. Either every client brings a test table or none does.
2. ``keyed_hash``: the first client (in the data_config's order) draws the session secret
   and seals it to each other client (``prl_share_key``, forwarded as ``prl_receive_key``:
   the server relays ciphertexts sealed with the recipients' X25519 join keys); then every
   client sends BLAKE2b-128 keyed hashes of its ids (``prl_hash``) and the server
   intersects them (:func:`fedsilo.privacy.psi.intersect`), per table.
   ``ecdh``: the sealed hops of :mod:`fedsilo.packages.prl.client` (blinding and double
   blinding at both clients at once); the clients send the row positions they found, the
   server checks they are distinct rows and agree in length.
3. The :class:`~fedsilo.vfl.alignment.Alignment` is saved as the session's artifact and
   the overlap statistics recorded as round 1 (per client: ``train_n_records``,
   ``train_n_overlapped_records``, ``train_frac_overlapped``, the same for ``test``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Participant, Reply, SessionContext, Task
from fedsilo.packages.prl.client import (
    ECDH_BLIND,
    ECDH_DOUBLE,
    ECDH_FINISH,
    ECDH_POSITIONS,
    HASH,
    PREPARE,
    RECEIVE_KEY,
    SHARE_KEY,
)
from fedsilo.packages.prl.config import PrlDataConfig, PrlModelConfig
from fedsilo.privacy.psi import HASH_BYTES, RepeatedHashError, intersect
from fedsilo.vfl.alignment import TABLES, Alignment, ClientAlignment, TableAlignment

__all__ = ["run"]

ROUND = 1


def run(ctx: SessionContext, mc: PrlModelConfig, dc: PrlDataConfig) -> None:
    """Link the records of the data_config's clients; see the module docstring.

    Raises
    ------
    TaskError
        When a client not named in the data_config joined, a client fails, the id column
        kinds or the tables brought disagree, or a reply is malformed.
    """
    names = list(dc.clients)
    joined = ctx.wait_for_clients(max(ctx.session.min_num_clients, len(names)))
    clients = _in_config_order(joined, names)
    prepared = {
        reply.participant.client_name: reply.meta
        for reply in ctx.ask(clients, PREPARE, meta={}, round=ROUND, accept_failures=False)
    }
    tables = _agree(dc, prepared)
    keys = {
        p.id: str(prepared[p.client_name]["public_key"])
        for p in clients
        if prepared[p.client_name].get("public_key")
    }
    ctx.log(f"linking {len(clients)} clients on tables {tables} with protocol {dc.psi_protocol}")
    if dc.psi_protocol == "ecdh":
        positions = _ecdh(ctx, clients, keys, tables)
        _check_positions(positions, prepared)
    else:
        positions = _keyed_hash(ctx, clients, keys, tables, prepared)
    alignment = Alignment(
        protocol=dc.psi_protocol,
        clients={
            p.client_name: ClientAlignment(
                p.client_name,
                dc.id_columns_of(p.client_name),
                {
                    table: TableAlignment(
                        n_records=int(prepared[p.client_name]["tables"][table]["n_records"]),
                        digest=str(prepared[p.client_name]["tables"][table]["digest"]),
                        positions=positions[p.client_name][table],
                    )
                    for table in tables
                },
            )
            for p in clients
        },
    )
    overlap = alignment.overlap()
    ctx.record_round(
        ROUND,
        federated={},
        per_client={
            name: {
                f"{table}_{metric}": float(value)
                for table, stats in by_table.items()
                for metric, value in stats.items()
            }
            for name, by_table in overlap.items()
        },
    )
    shared = ", ".join(
        f"{table} {alignment.clients[names[0]].tables[table].n_overlapped}" for table in tables
    )
    ctx.log(f"shared records: {shared}")
    meta, arrays = alignment.to_payload()
    ctx.save_model(arrays, meta, ROUND)
    ctx.log("alignment saved")


def _in_config_order(joined: Sequence[Participant], names: list[str]) -> list[Participant]:
    by_name = {p.client_name: p for p in joined}
    unknown = sorted(set(by_name) - set(names))
    missing = [n for n in names if n not in by_name]
    if unknown or missing:
        raise TaskError(
            f"the PRL session links clients {names}; joined: {sorted(by_name)}"
            + (f" (not in the data_config: {unknown})" if unknown else "")
            + (f" (missing: {missing})" if missing else "")
        )
    return [by_name[n] for n in names]


def _agree(dc: PrlDataConfig, prepared: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The tables every client brings; the id column kinds must agree."""
    try:
        brought = {name: set(meta["tables"]) for name, meta in prepared.items()}
        kinds = {name: list(meta["tables"]["train"]["kinds"]) for name, meta in prepared.items()}
    except (KeyError, TypeError) as exc:
        raise TaskError(f"a client sent a malformed {PREPARE!r} reply: {exc!r}") from exc
    with_test = sorted(n for n, t in brought.items() if "test" in t)
    if with_test and len(with_test) != len(brought):
        without = sorted(set(brought) - set(with_test))
        raise TaskError(
            f"clients {with_test} brought a test table and {without} did not; either every "
            "client passes --test-path or none does"
        )
    width = len(next(iter(kinds.values())))
    for j in range(width):
        seen = {name: k[j] for name, k in kinds.items()}
        if "integer" in seen.values() and "string" in seen.values():
            columns = {name: dc.id_columns_of(name)[j] for name in seen}
            raise TaskError(
                f"id column {j + 1} holds integers at some clients and strings at others "
                f"({', '.join(f'{n}: {columns[n]!r} {seen[n]}' for n in seen)}); the same id "
                "as an integer and as a string does not match: cast one of them"
            )
    return [t for t in TABLES if all(t in b for b in brought.values())]


def _keying(ctx: SessionContext, to: Participant, keys: Mapping[str, str]) -> dict[str, Any]:
    """What a client without the runtime's sealing needs to seal (in-process runs)."""
    return {"session_id": ctx.session.id, "participant_id": to.id, "public_keys": dict(keys)}


def _one(ctx: SessionContext, task: Task) -> Reply:
    [reply] = ctx.send([task]).wait()
    return reply


def _keyed_hash(
    ctx: SessionContext,
    clients: list[Participant],
    keys: Mapping[str, str],
    tables: list[str],
    prepared: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, np.ndarray]]:
    leader, *others = clients
    sealed = []
    for peer in others:
        meta = {**_keying(ctx, leader, keys), "recipient": peer.id}
        reply = _one(ctx, Task(to=leader, kind=SHARE_KEY, meta=meta, round=ROUND))
        if reply.sealed is None:
            raise TaskError(f"client {leader.client_name!r} sent no sealed key for {peer.id}")
        sealed.append((peer, reply.sealed))
    ctx.send(
        [
            Task(to=peer, kind=RECEIVE_KEY, meta=_keying(ctx, peer, keys), sealed=s, round=ROUND)
            for peer, s in sealed
        ]
    ).wait()
    ctx.log(f"session key shared with {len(others)} client(s); hashing")
    replies = {
        r.participant.client_name: r
        for r in ctx.ask(clients, HASH, meta={}, round=ROUND, accept_failures=False)
    }
    ctx.log(f"hashes received from {len(replies)} clients; intersecting")
    positions: dict[str, dict[str, np.ndarray]] = {p.client_name: {} for p in clients}
    for table in tables:
        hashes = []
        for p in clients:
            rows = int(prepared[p.client_name]["tables"][table]["n_records"])
            hashes.append(_array(replies[p.client_name], table, (rows, HASH_BYTES), np.uint8))
        try:
            found = intersect(hashes)
        except RepeatedHashError as exc:
            who = clients[exc.party].client_name
            raise TaskError(
                f"client {who!r} sent repeated hashes in its {table} table: {exc}"
            ) from exc
        for p, rows_found in zip(clients, found, strict=True):
            positions[p.client_name][table] = rows_found
    return positions


def _ecdh(
    ctx: SessionContext, clients: list[Participant], keys: Mapping[str, str], tables: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Four hops, the first two at both clients at once (each uses its own core)."""
    first, second = clients
    pair = ((first, second), (second, first))
    blinded = {
        r.participant.id: _sealed(r)
        for r in ctx.send(
            [
                Task(
                    to=me,
                    kind=ECDH_BLIND,
                    meta={**_keying(ctx, me, keys), "recipient": peer.id},
                    round=ROUND,
                )
                for me, peer in pair
            ]
        ).wait()
    }
    ctx.log("ids blinded at both clients; blinding the peer's")
    doubled = {
        r.participant.id: r
        for r in ctx.send(
            [
                Task(
                    to=me,
                    kind=ECDH_DOUBLE,
                    meta={**_keying(ctx, me, keys), "keep": me is first},
                    sealed=blinded[peer.id],
                    round=ROUND,
                )
                for me, peer in pair
            ]
        ).wait()
    }
    ctx.log("ids blinded twice; intersecting")
    finished = _one(
        ctx,
        Task(
            to=first,
            kind=ECDH_FINISH,
            meta=_keying(ctx, first, keys),
            sealed=_sealed(doubled[second.id]),
            round=ROUND,
        ),
    )
    placed = _one(
        ctx,
        Task(
            to=second,
            kind=ECDH_POSITIONS,
            meta=_keying(ctx, second, keys),
            sealed=_sealed(finished),
            round=ROUND,
        ),
    )
    positions: dict[str, dict[str, np.ndarray]] = {first.client_name: {}, second.client_name: {}}
    for table in tables:
        mine = _array(finished, table, None, np.int64)
        theirs = _array(placed, table, (len(mine),), np.int64)
        positions[first.client_name][table] = mine
        positions[second.client_name][table] = theirs
    return positions


def _check_positions(
    positions: Mapping[str, Mapping[str, np.ndarray]], prepared: Mapping[str, Mapping[str, Any]]
) -> None:
    """Positions a client reported must be distinct rows of its table."""
    for name, by_table in positions.items():
        for table, rows in by_table.items():
            n = int(prepared[name]["tables"][table]["n_records"])
            if rows.size and (
                rows.min() < 0 or rows.max() >= n or len(np.unique(rows)) != rows.size
            ):
                raise TaskError(
                    f"client {name!r} reported {table} positions that are not distinct rows "
                    f"of its {n}-row table"
                )


def _sealed(reply: Reply) -> Any:
    if reply.sealed is None:
        raise TaskError(
            f"client {reply.participant.client_name!r} sent no sealed payload for {reply.kind!r}"
        )
    return reply.sealed


def _array(reply: Reply, name: str, shape: tuple[int, ...] | None, dtype: Any) -> np.ndarray:
    who = reply.participant.client_name
    array = reply.arrays.get(name)
    if array is None:
        raise TaskError(f"client {who!r} sent no {name!r} array in its {reply.kind!r} reply")
    if array.dtype != dtype or (shape is not None and array.shape != shape) or array.ndim < 1:
        raise TaskError(
            f"client {who!r} sent {name!r} of dtype {array.dtype} and shape {array.shape} in "
            f"its {reply.kind!r} reply; expected {np.dtype(dtype)}"
            + (f" of shape {shape}" if shape is not None else "")
        )
    return array
