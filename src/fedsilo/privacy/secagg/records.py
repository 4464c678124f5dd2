"""The two layouts that carry shares: the sealed share record, and the unmask reply.

Share record (stage B, client ``u`` to client ``v``, sealed by ``fedsilo.client.keys``)
-----------------------------------------------------------------------------------
UTF-8 JSON, an object with exactly these keys (parsing JSON runs no code, unlike unpickling)::

    {"version": 1, "session": str, "round": int, "owner": u, "holder": v,
     "threshold": t, "keys_digest": b64, "index": i,
     "self_seed_share": b64 (66 bytes), "mask_key_share": b64 (66 bytes),
     "self_seed_digest": b64 (32 bytes)}

``index`` is the holder's evaluation point (its position in the sorted ids of U1, from 1).
``keys_digest`` is :func:`keys_digest` of the mask public keys ``u`` was given: the holder
compares it with its own, so a server that shows different keys to different clients (to
learn their pairwise seeds) is caught. ``self_seed_digest`` commits ``u`` to its self seed
(:func:`seed_digest`); the server checks the recovered seed against it.

Unmask reply (stage D, holder to server), JSON-ready
---------------------------------------------------
``{owner_id: {"secret": "self_seed", "index": i, "share": b64, "digest": b64}}`` for an
owner that sent masked input, ``{owner_id: {"secret": "mask_key", "index": i, "share": b64}}``
for an owner that dropped. Base64 is url-safe without padding, as fedsilo's wire keys.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedsilo.privacy.secagg.prg import context_bytes
from fedsilo.privacy.secagg.shamir import SHARE_BYTES
from fedsilo.privacy.secagg.spec import ShareError

__all__ = [
    "MASK_KEY",
    "SELF_SEED",
    "ShareRecord",
    "UnmaskShare",
    "b64decode",
    "b64encode",
    "keys_digest",
    "seed_digest",
]

SELF_SEED: Literal["self_seed"] = "self_seed"
MASK_KEY: Literal["mask_key"] = "mask_key"
_VERSION = 1
_DIGEST_BYTES = 32


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64decode(text: object, field: str, size: int) -> bytes:
    """``size`` bytes from url-safe base64 ``text``; :class:`ShareError` naming ``field``."""
    if not isinstance(text, str):
        raise ShareError(f"The {field!r} field must be a base64 string. Got {type(text).__name__}.")
    try:
        # validate=True: the lenient decoder would silently skip characters outside the
        # alphabet, so two different texts could decode to the same share.
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as exc:
        raise ShareError(f"The {field!r} field must be url-safe base64.") from exc
    if len(raw) != size:
        raise ShareError(f"The {field!r} field must hold {size} bytes. Got {len(raw)} bytes.")
    return raw


def keys_digest(session_id: str, server_round: int, keys: Mapping[str, str]) -> str:
    """SHA-256 of the round and of every (id, mask public key), in sorted id order."""
    parts: list[str | int] = ["fedsilo-secagg-keys-v1", session_id, server_round]
    for participant in sorted(keys):
        parts += [participant, keys[participant]]
    return b64encode(hashlib.sha256(context_bytes(*parts)).digest())


def seed_digest(session_id: str, server_round: int, owner: str, seed: bytes) -> str:
    """SHA-256 commitment of ``owner``'s self seed in this round (the seed is 256 random
    bits, so the digest reveals nothing of it)."""
    context = context_bytes("fedsilo-secagg-self-seed-v1", session_id, server_round, owner)
    return b64encode(hashlib.sha256(context + seed).digest())


@dataclass(frozen=True)
class ShareRecord:
    """One owner's shares for one holder (see the module docstring for the layout)."""

    session: str
    round: int
    owner: str
    holder: str
    threshold: int
    keys_digest: str
    index: int
    self_seed_share: str
    mask_key_share: str
    self_seed_digest: str

    def to_bytes(self) -> bytes:
        body = {"version": _VERSION, **asdict(self)}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> ShareRecord:
        """Parse and check a record's layout (its meaning is checked by the client).

        Raises
        ------
        ShareError
            Not JSON, a missing or extra key, a field of the wrong type or size.
        """
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ShareError("A share record must be UTF-8 JSON.") from exc
        if not isinstance(body, dict):
            raise ShareError(f"A share record must be a JSON object. Got {type(body).__name__}.")
        expected = {"version", *cls.__dataclass_fields__}
        if set(body) != expected:
            raise ShareError(
                f"A share record has keys {sorted(expected)}. Missing "
                f"{sorted(expected - set(body))}, unexpected {sorted(set(body) - expected)}."
            )
        if body["version"] != _VERSION:
            raise ShareError(f"Share record version must be {_VERSION}. Got {body['version']!r}.")
        for name in ("round", "threshold", "index"):
            _require_int(body[name], name)
        for name in ("session", "owner", "holder"):
            if not isinstance(body[name], str):
                raise ShareError(f"The {name!r} field of a share record must be a string.")
        b64decode(body["keys_digest"], "keys_digest", _DIGEST_BYTES)
        b64decode(body["self_seed_digest"], "self_seed_digest", _DIGEST_BYTES)
        b64decode(body["self_seed_share"], "self_seed_share", SHARE_BYTES)
        b64decode(body["mask_key_share"], "mask_key_share", SHARE_BYTES)
        del body["version"]
        return cls(**body)


@dataclass(frozen=True)
class UnmaskShare:
    """One share a holder reveals at unmask: of ``owner``'s self seed or of its mask key."""

    secret: Literal["self_seed", "mask_key"]
    index: int
    share: bytes
    digest: str | None = None

    def to_json(self) -> dict[str, str | int]:
        body: dict[str, str | int] = {
            "secret": self.secret,
            "index": self.index,
            "share": b64encode(self.share),
        }
        if self.digest is not None:
            body["digest"] = self.digest
        return body

    @classmethod
    def from_json(cls, body: object, holder: str, owner: str) -> UnmaskShare:
        """Parse one entry of ``holder``'s unmask reply; :class:`ShareError` names both."""
        where = f"holder {holder!r}'s share of {owner!r}"
        if not isinstance(body, dict):
            raise ShareError(f"{where} must be an object. Got {type(body).__name__}.")
        secret = body.get("secret")
        keys = {"secret", "index", "share"} | ({"digest"} if secret == SELF_SEED else set())
        if secret not in (SELF_SEED, MASK_KEY) or set(body) != keys:
            raise ShareError(
                f"{where} must have keys {sorted(keys)} with secret 'self_seed' or "
                f"'mask_key'. Got keys {sorted(body)}, secret {secret!r}."
            )
        index = _require_int(body["index"], f"{where}: index")
        share = b64decode(body["share"], f"{where}: share", SHARE_BYTES)
        digest: Any = body.get("digest")
        if digest is not None:
            b64decode(digest, f"{where}: digest", _DIGEST_BYTES)
        return cls(secret=secret, index=index, share=share, digest=digest)


def _require_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShareError(f"The {name!r} field must be an integer. Got {value!r}.")
    return value
