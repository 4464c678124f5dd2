"""The alignment a PRL session stores, and how a later session reads and checks it.

A private record linkage session (package ``prl``) ends with an :class:`Alignment`, saved
as the session's artifact (``ctx.save_model``; ``GET /sessions/{sid}/model`` serves it):

* per client and per table (``train``, ``test``): the row positions of the shared records,
  all clients' lists in **one common order** -- entry ``i`` of every client's ``train``
  positions is the same person -- plus the table's row count;
* per client and table, a keyed digest of its id columns in row order
  (:func:`fedsilo.privacy.psi.records_digest`), so a later session (VFL train or predict,
  EDA intersect) can check that a client brings the same table: the client recomputes the
  digest with the key it kept from the PRL session (:func:`digest_key_path`) and the
  server compares (:meth:`Alignment.check_digest`).

The digest key is drawn by the PRL session's parties (derived from their shared secret)
and never reaches the server; without it the server cannot confirm a guessed id list.
Each party keeps it in its PRL state directory; a silo that removed that state
(``--remove-after-complete``) cannot prove its table and must run PRL again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.errors import DataError
from fedsilo.wire import Arrays

__all__ = [
    "DIGEST_KEY_FILE",
    "TABLES",
    "Alignment",
    "ClientAlignment",
    "TableAlignment",
    "digest_key_path",
]

#: the tables a PRL session aligns, in order
TABLES = ("train", "test")
#: the file, in a PRL participant's executor state directory, holding its digest key
DIGEST_KEY_FILE = "prl-digest.key"
_SAFE = re.compile(r"[^A-Za-z0-9_.@:-]")  # as the client's reply store names its folders


def digest_key_path(state_root: Path, prl_session_id: str, client_name: str) -> Path:
    """Where the client runtime with state directory ``state_root`` keeps the digest key
    of its participation ``client_name`` in PRL session ``prl_session_id``.

    Mirrors :class:`fedsilo.client.runtime.ClientRuntime`'s layout: the executor state
    directory is ``<root>/<session>/<client_name>/executor``.
    """
    return (
        state_root
        / _SAFE.sub("_", prl_session_id)
        / _SAFE.sub("_", client_name)
        / "executor"
        / DIGEST_KEY_FILE
    )


@dataclass(frozen=True)
class TableAlignment:
    """One client's table in the alignment.

    Attributes
    ----------
    n_records : int
        Rows of the table.
    digest : str
        Keyed digest of its id columns (hex).
    positions : ndarray of shape (n_shared,), dtype int64
        Row positions (0-based, ``DataFrame.iloc``) of the shared records, in the common
        order.
    """

    n_records: int
    digest: str
    positions: np.ndarray

    @property
    def n_overlapped(self) -> int:
        return len(self.positions)

    @property
    def frac_overlapped(self) -> float:
        """Shared records over rows (0.0 for an empty table)."""
        return self.n_overlapped / self.n_records if self.n_records else 0.0


@dataclass(frozen=True)
class ClientAlignment:
    """One client of a PRL session: its id columns and its aligned tables."""

    client_name: str
    id_columns: list[str]
    tables: dict[str, TableAlignment] = field(default_factory=dict)


@dataclass(frozen=True)
class Alignment:
    """What a PRL session found (see the module docstring).

    Attributes
    ----------
    protocol : str
        ``"keyed_hash"`` or ``"ecdh"``.
    clients : dict of str to ClientAlignment
        In the data_config's order.
    """

    protocol: str
    clients: dict[str, ClientAlignment]

    def positions(self, client_name: str, table: str = "train") -> np.ndarray:
        """The shared rows of ``client_name``'s ``table``, in the common order.

        Raises
        ------
        KeyError
            Naming the client or table the alignment does not hold, and those it does.
        """
        client = self.clients.get(client_name)
        if client is None:
            raise KeyError(
                f"The PRL alignment has no client {client_name!r}; it has {sorted(self.clients)}."
            )
        aligned = client.tables.get(table)
        if aligned is None:
            raise KeyError(
                f"The PRL alignment has no {table!r} table for {client_name!r}; it has "
                f"{sorted(client.tables)}."
            )
        return aligned.positions

    def overlap(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """``{client: {table: {n_records, n_overlapped_records, frac_overlapped}}}`` (the
        seed's ``client_metrics`` of a PRL session)."""
        return {
            name: {
                table: {
                    "n_records": aligned.n_records,
                    "n_overlapped_records": aligned.n_overlapped,
                    "frac_overlapped": aligned.frac_overlapped,
                }
                for table, aligned in client.tables.items()
            }
            for name, client in self.clients.items()
        }

    def check_digest(self, client_name: str, table: str, digest: str) -> None:
        """Refuse a client whose table is not the one it linked in the PRL session.

        Raises
        ------
        DataError
            When the digests differ (or the alignment lacks that client or table), saying
            what to do.
        """
        client = self.clients.get(client_name)
        aligned = client.tables.get(table) if client is not None else None
        if aligned is None:
            raise DataError(
                [f"the PRL session aligned no {table!r} table for client {client_name!r}"],
                source=f"the {table} table",
            )
        if aligned.digest != digest:
            raise DataError(
                [
                    f"the {table} table's id columns {client.id_columns} (client "  # type: ignore[union-attr]
                    f"{client_name!r}) differ from those linked in the PRL session (its "
                    f"{aligned.n_records} rows, in the same order): bring the same table, "
                    "or run a new PRL session on this one"
                ],
                source=f"the {table} table",
            )

    # ------------------------------------------------------------------ payload

    def to_payload(self) -> tuple[dict[str, Any], Arrays]:
        """``(meta, arrays)`` for ``ctx.save_model``: positions as ``<client>/<table>``."""
        arrays: Arrays = {}
        clients: dict[str, Any] = {}
        for name, client in self.clients.items():
            tables = {}
            for table, aligned in client.tables.items():
                arrays[f"{name}/{table}"] = np.asarray(aligned.positions, dtype=np.int64)
                tables[table] = {"n_records": aligned.n_records, "digest": aligned.digest}
            clients[name] = {"id_columns": list(client.id_columns), "tables": tables}
        meta = {"artifact": "prl_alignment", "protocol": self.protocol, "clients": clients}
        return meta, arrays

    @classmethod
    def from_payload(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Alignment:
        """The inverse of :meth:`to_payload`.

        Raises
        ------
        ValueError
            When the payload is not a PRL alignment.
        """
        if meta.get("artifact") != "prl_alignment":
            raise ValueError(
                f"The artifact is not a PRL alignment (artifact {meta.get('artifact')!r}); "
                "pass the id of a completed PRL session."
            )
        clients = {}
        for name, entry in meta["clients"].items():
            tables = {
                table: TableAlignment(
                    n_records=int(info["n_records"]),
                    digest=str(info["digest"]),
                    positions=np.asarray(arrays[f"{name}/{table}"], dtype=np.int64),
                )
                for table, info in entry["tables"].items()
            }
            clients[name] = ClientAlignment(name, [str(c) for c in entry["id_columns"]], tables)
        return cls(protocol=str(meta["protocol"]), clients=clients)
