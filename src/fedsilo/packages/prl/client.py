"""The client half of prl: canonical ids checked before joining, then the PSI protocol.

Built before the client joins, the executor reads its id columns (from the data_config,
under its client name) from the train and the optional test table and checks them
(:func:`fedsilo.privacy.psi.canonical_ids`): missing columns, nulls, refused types and
repeated ids are all reported at once, and the client refuses the session with that list
(the runtime's one-line refusal) before the session ever sees it.

Task kinds (:data:`KINDS`), in the order the workflow sends them:

``prl_prepare``
    Row counts, id column kinds and keyed digests of the id columns (never values).
``prl_share_key`` / ``prl_receive_key`` (keyed_hash)
    The first client draws the session secret and seals it to each other client; each
    opens it. The server relays ciphertexts it cannot open.
``prl_hash`` (keyed_hash)
    BLAKE2b-128 of each record under the secret, per table.
``prl_ecdh_blind`` / ``prl_ecdh_double`` / ``prl_ecdh_finish`` / ``prl_ecdh_positions`` (ecdh)
    Both clients blind their own ids (shuffled) at once and exchange them; both blind the
    other's again at once (A keeps B's, B returns A's); A intersects the double-blinded sets
    and tells B which entries of its shuffled list matched. Every payload is sealed to the
    other client; A's and B's row positions reach the server, nothing else.

Secrets (the session key, the ECDH scalar and shuffle, the digest key) live in the
executor state directory (mode 0600) so a restarted client continues the same protocol;
the digest key stays there for later sessions (:func:`fedsilo.vfl.alignment.digest_key_path`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.client.keys import KeyPair, decode_public_key, open_sealed, seal
from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, DataError, TaskError
from fedsilo.federation import ExecutorContext, Sealed, incoming_sealed, sealed_arrays
from fedsilo.packages.prl.config import PrlDataConfig, PrlModelConfig
from fedsilo.privacy import ecdh
from fedsilo.privacy.psi import CanonicalIds, canonical_ids, intersect, keyed_hashes, records_digest
from fedsilo.vfl.alignment import DIGEST_KEY_FILE
from fedsilo.wire import Arrays, decode_frame, encode_frame

__all__ = [
    "ECDH_BLIND",
    "ECDH_DOUBLE",
    "ECDH_FINISH",
    "ECDH_POSITIONS",
    "HASH",
    "KINDS",
    "PREPARE",
    "RECEIVE_KEY",
    "SHARE_KEY",
    "PrlExecutor",
]

PREPARE = "prl_prepare"
SHARE_KEY = "prl_share_key"
RECEIVE_KEY = "prl_receive_key"
HASH = "prl_hash"
ECDH_BLIND = "prl_ecdh_blind"
ECDH_DOUBLE = "prl_ecdh_double"
ECDH_FINISH = "prl_ecdh_finish"
ECDH_POSITIONS = "prl_ecdh_positions"
KINDS = (
    PREPARE,
    SHARE_KEY,
    RECEIVE_KEY,
    HASH,
    ECDH_BLIND,
    ECDH_DOUBLE,
    ECDH_FINISH,
    ECDH_POSITIONS,
)
_SECRET_BYTES = 32
_OPTIONS = {"train": "--train-path", "test": "--test-path"}


class _Secrets:
    """Named random secrets, kept in a 0600 file each when there is a state directory."""

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._held: dict[str, bytes] = {}

    def get(self, name: str, *, create: bool = True) -> bytes:
        if name in self._held:
            return self._held[name]
        path = self._folder / name if self._folder is not None else None
        if path is not None and path.exists():
            value = path.read_bytes()
        elif not create:
            raise TaskError(f"the secret {name!r} has not been agreed yet")
        else:
            value = os.urandom(_SECRET_BYTES)
            self.put(name, value)
        self._held[name] = value
        return value

    def put(self, name: str, value: bytes) -> None:
        self._held[name] = value
        if self._folder is None:
            return
        self._folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._folder / name
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(value)
        os.replace(tmp, path)


class _Keyring:
    """Sealing to a peer: with the client runtime's join keys when there is a context, else
    (in-process runs) with a key pair of this executor whose public half it announces in
    its ``prl_prepare`` reply, the workflow passing the peers' back in task meta."""

    def __init__(self, context: ExecutorContext | None) -> None:
        self._context = context
        self._own = KeyPair.generate() if context is None else None

    @property
    def announced(self) -> str:
        return self._own.public_text if self._own is not None else ""

    def seal(self, recipient: str, plaintext: bytes, meta: Mapping[str, Any]) -> Arrays:
        if self._context is not None:
            return sealed_arrays(self._context.seal(recipient, plaintext))
        assert self._own is not None
        ciphertext = seal(
            self._own,
            _peer_key(meta, recipient),
            plaintext,
            session_id=str(meta["session_id"]),
            sender_id=str(meta["participant_id"]),
            recipient_id=recipient,
        )
        return sealed_arrays(Sealed(sender=str(meta["participant_id"]), ciphertext=ciphertext))

    def open(self, meta: Mapping[str, Any], arrays: Arrays, kind: str) -> bytes:
        sealed = incoming_sealed(meta, arrays)
        if sealed is None:
            raise TaskError(f"task {kind!r} must carry a sealed payload from a peer; got none")
        if self._context is not None:
            return self._context.open(sealed)
        assert self._own is not None
        return open_sealed(
            self._own,
            _peer_key(meta, sealed.sender),
            sealed.ciphertext,
            session_id=str(meta["session_id"]),
            sender_id=sealed.sender,
            recipient_id=str(meta["participant_id"]),
        )


def _peer_key(meta: Mapping[str, Any], participant_id: str) -> bytes:
    keys = meta.get("public_keys") or {}
    if participant_id not in keys:
        raise TaskError(f"no public key for participant {participant_id!r} in the task")
    return decode_public_key(str(keys[participant_id]))


def _pack(arrays: Mapping[str, np.ndarray]) -> bytes:
    return encode_frame(dict(arrays), {})


def _unpack(payload: bytes) -> Arrays:
    arrays, _ = decode_frame(payload)
    return arrays


class PrlExecutor:
    """One silo's side of a PRL session (see the module docstring).

    Parameters
    ----------
    model_config : PrlModelConfig
    data_config : PrlDataConfig
    dataset : LocalDataset
        ``train`` and optional ``test`` tables.
    context : ExecutorContext, optional
        The client runtime's (its name, state directory and sealing). Without one
        (in-process runs) the client name is ``dataset.name``.

    Raises
    ------
    ConfigError
        When the client name is not one of the data_config's clients.
    DataError
        Every problem of the id columns of every table, together.
    """

    def __init__(
        self,
        model_config: PrlModelConfig,
        data_config: PrlDataConfig,
        dataset: LocalDataset,
        context: ExecutorContext | None = None,
    ) -> None:
        name = context.client_name if context is not None else dataset.name
        if name is None:
            raise ConfigError(
                "A PRL client must know its client name (one of the data_config's clients) "
                "to find its id columns; none was given."
            )
        try:
            self.id_columns = data_config.id_columns_of(name)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None
        self.client_name = name
        self.protocol = data_config.psi_protocol
        tables = {"train": dataset.train, "test": dataset.test}
        found: dict[str, CanonicalIds] = {}
        problems: list[str] = []
        for table, frame in tables.items():
            if frame is None:
                continue
            try:
                found[table] = canonical_ids(frame, self.id_columns, _OPTIONS[table])
            except DataError as exc:
                problems.extend(exc.problems)
        if problems:
            raise DataError(problems, source="the local data")
        self.ids = found
        self._keys = _Keyring(context)
        self._secrets = _Secrets(context.state_dir if context is not None else None)
        self._doubled: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ dispatch

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        handlers = {
            PREPARE: self._prepare,
            SHARE_KEY: self._share_key,
            RECEIVE_KEY: self._receive_key,
            HASH: self._hash,
            ECDH_BLIND: self._ecdh_blind,
            ECDH_DOUBLE: self._ecdh_double,
            ECDH_FINISH: self._ecdh_finish,
            ECDH_POSITIONS: self._ecdh_positions,
        }
        handler = handlers.get(kind)
        if handler is None:
            raise TaskError(f"prl clients handle task kinds {list(KINDS)}; got {kind!r}")
        return handler(meta, arrays)

    def _prepare(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        key = self._secrets.get(DIGEST_KEY_FILE)
        tables = {
            table: {
                "n_records": len(ids.records),
                "kinds": ids.kinds,
                "digest": records_digest(ids, key),
            }
            for table, ids in self.ids.items()
        }
        return {
            "client_name": self.client_name,
            "tables": tables,
            "public_key": self._keys.announced,
        }, {}

    # ---------------------------------------------------------------- keyed hash

    def _share_key(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        secret = self._secrets.get("prl-session.key")
        recipient = str(meta["recipient"])
        return {"sealed_for": recipient}, self._keys.seal(recipient, secret, meta)

    def _receive_key(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        secret = self._keys.open(meta, arrays, RECEIVE_KEY)
        if len(secret) != _SECRET_BYTES:
            raise TaskError(f"the session key is {_SECRET_BYTES} bytes; got {len(secret)}")
        self._secrets.put("prl-session.key", secret)
        return {}, {}

    def _hash(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        secret = self._secrets.get("prl-session.key", create=False)
        return {}, {table: keyed_hashes(ids.records, secret) for table, ids in self.ids.items()}

    # ---------------------------------------------------------------------- ecdh

    def _scalar(self) -> bytes:
        # Derived from a stored seed, so a restarted client blinds with the same scalar.
        seed = self._secrets.get("prl-ecdh.seed")
        return ecdh.scalar_from_seed(seed)

    def _shuffle(self, table: str, n: int) -> np.ndarray:
        seed = self._secrets.get("prl-ecdh.seed")
        rng = np.random.default_rng(np.frombuffer(seed + table.encode(), dtype=np.uint8))
        return rng.permutation(n)

    def _ecdh_blind(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        # Shuffled, so the peer cannot tell which of our rows a match is.
        scalar = self._scalar()
        blinded = {
            table: ecdh.blind(ecdh.hash_to_group(ids.records), scalar)[
                self._shuffle(table, len(ids.records))
            ]
            for table, ids in self.ids.items()
        }
        recipient = str(meta["recipient"])
        return {"sealed_for": recipient}, self._keys.seal(recipient, _pack(blinded), meta)

    def _ecdh_double(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        theirs = _unpack(self._keys.open(meta, arrays, ECDH_DOUBLE))
        scalar = self._scalar()
        doubled = {t: ecdh.blind(theirs[t], scalar) for t in self.ids if t in theirs}
        if meta.get("keep"):
            # The intersecting client keeps the peer's double-blinded ids for prl_ecdh_finish.
            self._doubled = doubled
            return {}, {}
        sender = str(meta["sealed_from"])
        return {"sealed_for": sender}, self._keys.seal(sender, _pack(doubled), meta)

    def _ecdh_finish(self, meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        mine = _unpack(self._keys.open(meta, arrays, ECDH_FINISH))
        if self._doubled is None:
            raise TaskError(
                "the ECDH exchange lost its state (this client restarted between "
                f"{ECDH_DOUBLE!r} and {ECDH_FINISH!r}); run the PRL session again"
            )
        positions: dict[str, np.ndarray] = {}
        matched: dict[str, np.ndarray] = {}
        for table, ids in self.ids.items():
            if table not in mine or table not in self._doubled:
                continue
            # a*b*H(x) of our rows and of the peer's, each in its owner's shuffled order:
            # equal points are shared ids, sorted by point value.
            ours, theirs = intersect([mine[table], self._doubled[table]])
            positions[table] = self._shuffle(table, len(ids.records))[ours]
            matched[table] = theirs
        recipient = str(meta["sealed_from"])
        sealed = self._keys.seal(recipient, _pack(matched), meta)
        return {"sealed_for": recipient}, {**positions, **sealed}

    def _ecdh_positions(
        self, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        matched = _unpack(self._keys.open(meta, arrays, ECDH_POSITIONS))
        positions = {}
        for table, ids in self.ids.items():
            if table in matched:
                order = self._shuffle(table, len(ids.records))
                positions[table] = order[np.asarray(matched[table], dtype=np.int64)]
        return {}, positions
