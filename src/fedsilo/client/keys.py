"""A participant's X25519 key pair, and payloads sealed from one participant to another.

Each participant has a key pair of its own, made when it first joins a session and kept in its
state directory (``keys/<session>/<client_name>.key``, mode 0600); only the public half is sent
to the server, which lists it to the session's peers. A restarted client loads the same pair.

Sealing (:func:`seal`) gives confidentiality against the server that relays the payload and
authenticates the sender to the recipient:

* an ephemeral X25519 key ``e`` per sender, recipient and session, made at the sender's first
  payload to that recipient in this process (a restarted sender makes a new one);
* ``k = HKDF-SHA256(DH(e, R) || DH(S, R), info = version | session | sender | recipient)``,
  where ``S`` is the sender's static key and ``R`` the recipient's public key: only the holder
  of ``R``'s private key can derive ``k``, and only the holder of ``S``'s private key can
  have made it (the static-static term), so a server that swaps keys or payloads is caught;
* ChaCha20-Poly1305 under ``k``; the nonce is a 96-bit counter of the payloads sealed under
  that ``k``, so it never repeats (``k`` is new with every ``e``, and ``e`` is replaced long
  before the counter could wrap); the associated data binds the version, the ephemeral key and
  the three ids, so a payload cannot be replayed into another session or to another recipient.

Why an ephemeral key per pair and not per payload: a SplitNN batch seals two payloads in lock
step, and two X25519 exchanges plus an HKDF per payload (and as many to open it) cost more than
the rest of the batch's arithmetic. The recipient keeps the ``k`` it derived for a sender's
``e`` (a bounded cache, filled only by payloads that opened), so it derives once per sender too.
The cost: forward secrecy is per sender process rather than per payload -- a recipient's
static key stolen later opens what that process sealed to it, as before; an ephemeral key
stolen from a running sender's memory opens that process's payloads to that recipient.

Layout: ``version (1) | ephemeral public key (32) | nonce (12) | ciphertext + tag (16)``.
All primitives come from the ``cryptography`` package; nothing here is hand-rolled maths.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsilo.errors import SealError

__all__ = [
    "SEAL_OVERHEAD",
    "KeyPair",
    "decode_public_key",
    "encode_public_key",
    "open_sealed",
    "seal",
]

_VERSION = b"\x01"
_NONCE = 12
_TAG = 16
_KEY = 32
#: bytes a sealed payload adds to its plaintext
SEAL_OVERHEAD = 1 + _KEY + _NONCE + _TAG
#: payloads sealed under one ephemeral key before a fresh one replaces it (far below the
#: 2**96 counter values a nonce can take; it also bounds what one stolen key opens)
_PER_EPHEMERAL = 2**32
#: derived keys a recipient keeps (one per sender process that sealed to it)
_OPENERS = 256


@dataclass
class _Outgoing:
    """A sender's state towards one recipient in one session: its ephemeral key, the AEAD
    under the derived key, and how many payloads it sealed (the next nonce)."""

    ephemeral_public: bytes
    aead: ChaCha20Poly1305
    sealed: int = 0


def encode_public_key(raw: bytes) -> str:
    """32 raw bytes as url-safe base64 without padding (43 characters), as the wire has it."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_public_key(text: str) -> bytes:
    """The inverse of :func:`encode_public_key`; raises :class:`SealError` when malformed."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise SealError(f"A public key must be url-safe base64. Got {text!r}.") from exc
    if len(raw) != _KEY:
        raise SealError(f"An X25519 public key is 32 bytes. Got {len(raw)} bytes.")
    return raw


@dataclass(frozen=True)
class KeyPair:
    """One participant's X25519 key pair."""

    private: X25519PrivateKey
    # Derived-key caches (see the module docstring); never compared, shown or persisted.
    _outgoing: dict[tuple[bytes, bytes], _Outgoing] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    _incoming: OrderedDict[tuple[bytes, bytes, bytes], ChaCha20Poly1305] = field(
        default_factory=OrderedDict, init=False, compare=False, repr=False
    )
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, compare=False, repr=False
    )

    @classmethod
    def generate(cls) -> KeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> KeyPair:
        """The pair stored at ``path``, made (mode 0600) if absent."""
        if path.exists():
            raw = path.read_bytes()
            if len(raw) != _KEY:
                raise SealError(f"The key file {path} is {len(raw)} bytes; expected {_KEY}.")
            return cls(X25519PrivateKey.from_private_bytes(raw))
        pair = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = pair.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        # Written to a 0600 temporary and renamed, so no reader ever sees a partial key.
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        os.replace(tmp, path)
        return pair

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_text(self) -> str:
        """The public key as the join request carries it."""
        return encode_public_key(self.public_bytes)


def _context(session_id: str, sender_id: str, recipient_id: str) -> bytes:
    return b"|".join(
        [b"fedsilo-sealed", _VERSION, *(x.encode() for x in (session_id, sender_id, recipient_id))]
    )


def _derive(ephemeral_secret: bytes, static_secret: bytes, context: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=None, info=context)
    return hkdf.derive(ephemeral_secret + static_secret)


def seal(
    sender: KeyPair,
    recipient_public: bytes,
    plaintext: bytes,
    *,
    session_id: str,
    sender_id: str,
    recipient_id: str,
) -> bytes:
    """Encrypt ``plaintext`` from ``sender`` to the holder of ``recipient_public``.

    Parameters
    ----------
    sender : KeyPair
        The sending participant's own pair.
    recipient_public : bytes
        The recipient's 32-byte X25519 public key.
    plaintext : bytes
    session_id, sender_id, recipient_id : str
        Bound into the key and the associated data.

    Returns
    -------
    bytes
        ``plaintext`` length plus :data:`SEAL_OVERHEAD` bytes.
    """
    context = _context(session_id, sender_id, recipient_id)
    with sender._lock:
        outgoing = sender._outgoing.get((recipient_public, context))
        if outgoing is None or outgoing.sealed >= _PER_EPHEMERAL:
            recipient = X25519PublicKey.from_public_bytes(recipient_public)
            ephemeral = X25519PrivateKey.generate()
            key = _derive(
                ephemeral.exchange(recipient), sender.private.exchange(recipient), context
            )
            outgoing = _Outgoing(
                ephemeral.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                ),
                ChaCha20Poly1305(key),
            )
            sender._outgoing[(recipient_public, context)] = outgoing
        # Taken under the lock: two threads sealing to one recipient never share a nonce.
        nonce = outgoing.sealed.to_bytes(_NONCE, "big")
        outgoing.sealed += 1
    header = _VERSION + outgoing.ephemeral_public + nonce
    return header + outgoing.aead.encrypt(nonce, plaintext, context + header)


def open_sealed(
    recipient: KeyPair,
    sender_public: bytes,
    sealed: bytes,
    *,
    session_id: str,
    sender_id: str,
    recipient_id: str,
) -> bytes:
    """Decrypt what :func:`seal` made for ``recipient``.

    Raises
    ------
    SealError
        When the payload is malformed, was not sealed to this key by that sender in this
        session, or was altered.
    """
    if len(sealed) < SEAL_OVERHEAD or sealed[:1] != _VERSION:
        raise SealError(
            f"A sealed payload starts with version {_VERSION[0]} and is at least "
            f"{SEAL_OVERHEAD} bytes. Got {len(sealed)} bytes."
        )
    sealed = bytes(sealed)
    ephemeral_public = sealed[1 : 1 + _KEY]
    nonce = sealed[1 + _KEY : 1 + _KEY + _NONCE]
    header = sealed[: 1 + _KEY + _NONCE]
    context = _context(session_id, sender_id, recipient_id)
    cache_key = (sender_public, ephemeral_public, context)
    with recipient._lock:
        aead = recipient._incoming.get(cache_key)
    known = aead is not None
    if aead is None:
        try:
            ephemeral = X25519PublicKey.from_public_bytes(ephemeral_public)
            sender = X25519PublicKey.from_public_bytes(sender_public)
            shared = recipient.private.exchange(ephemeral), recipient.private.exchange(sender)
        except ValueError as exc:  # a low-order point: the exchange would be all zeros
            raise SealError(
                f"The payload from participant {sender_id} is malformed: {exc}"
            ) from exc
        aead = ChaCha20Poly1305(_derive(*shared, context))
    try:
        plaintext = aead.decrypt(nonce, sealed[len(header) :], context + header)
    except InvalidTag as exc:
        raise SealError(
            f"The payload from participant {sender_id} does not open with this key: it was "
            "sealed to another recipient, by another sender, in another session, or altered."
        ) from exc
    with recipient._lock:
        # Kept only once a payload opened, so forged ephemeral keys never fill the cache.
        if known:
            recipient._incoming.move_to_end(cache_key)
        else:
            recipient._incoming[cache_key] = aead
            while len(recipient._incoming) > _OPENERS:
                recipient._incoming.popitem(last=False)
    return plaintext
