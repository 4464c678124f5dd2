"""Private set intersection on record ids: canonical id records, keyed hashes, intersection.

Used by the ``prl`` package (private record linkage). Three steps, each a function:

1. :func:`canonical_ids` -- each row's id tuple as one canonical byte string (a *record*),
   checked first: missing columns, nulls, unsupported types, non-integral floats and
   repeated ids are all reported together, with counts and example row positions (never
   values).
2. :func:`keyed_hashes` -- BLAKE2b-128 keyed with the parties' shared secret over each
   record: the same id gives the same 16 bytes at every party, and nobody without the key
   (the server) can test a guess.
3. :func:`intersect` -- the records every party holds, from their hashes alone: for each
   party, the row positions of the shared records, in one common order (sorted by hash,
   which is pseudorandom: it reveals nothing about the ids' order).

Canonical form
--------------
Each id value becomes a *typed field*: a tag byte, a 4-byte big-endian length and the
payload; a record is its fields in id-column order. Length prefixes make the encoding
injective: no two different tuples share a record.

* integers (any numpy integer dtype, Python ``int``) -- tag ``i``, 8-byte big-endian two's
  complement (values outside int64 are refused);
* floats -- only when integral and at most 2**53 in magnitude (exactly representable), then
  as the integer (``5.0`` is ``5``); other floats are refused: float ids compare unreliably;
* strings -- tag ``s``, UTF-8 of the Unicode NFC normal form, otherwise exact (no trimming,
  no case folding: ``"A12 "`` and ``"a12"`` are different ids; normalise them yourself if
  your silos differ);
* booleans, dates, bytes and other objects are refused (cast them to strings or integers).

The tag makes ``123`` and ``"123"`` different ids. A session compares the *kinds* of each id
column across parties before hashing (:func:`column_kinds`) and fails naming the columns
when one silo holds integers where another holds strings, instead of finding no overlap.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "HASH_BYTES",
    "CanonicalIds",
    "RepeatedHashError",
    "canonical_ids",
    "intersect",
    "keyed_hashes",
    "records_digest",
]

#: bytes of one keyed hash: 128 bits, so two different ids among 10**9 collide with
#: probability below 10**-20 (birthday bound n**2 / 2**129)
HASH_BYTES = 16
#: row positions quoted in a refusal, per problem
EXAMPLES = 5
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: floats above this are not all integers that exist exactly
_EXACT_FLOAT = 2.0**53
_FIELD = np.dtype([("tag", "u1"), ("length", ">u4"), ("value", ">i8")])
_INT_LENGTH = 8


class RepeatedHashError(ValueError):
    """A party's hashes repeat: its ids repeat, or two of its ids collide.

    Attributes
    ----------
    party : int
        The party's index in the sequence given to :func:`intersect`.
    """

    def __init__(self, party: int, count: int) -> None:
        self.party = party
        super().__init__(f"party {party} sent {count} repeated hash(es)")


@dataclass(frozen=True)
class CanonicalIds:
    """One table's id tuples in canonical form.

    Attributes
    ----------
    records : list of bytes, length n_rows
        Row ``i``'s canonical record.
    kinds : list of str
        Per id column: ``"integer"``, ``"string"`` or ``"mixed"`` (both in one column).
    packed : bytes, optional
        ``b"".join(records)``, kept when numpy laid the records out (integer ids: fixed
        width), so a digest of them costs no join.
    """

    records: list[bytes]
    kinds: list[str]
    packed: bytes | None = None


def _positions(mask: np.ndarray) -> str:
    shown = np.flatnonzero(mask)[:EXAMPLES].tolist()
    return ", ".join(str(p) for p in shown)


def _int_field(values: np.ndarray) -> np.ndarray:
    fields = np.empty(len(values), dtype=_FIELD)
    fields["tag"] = ord("i")
    fields["length"] = _INT_LENGTH
    fields["value"] = values
    return fields


def _typed(value: object) -> bytes | None:
    """One object-column value as a typed field; None when its type is refused."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        number = int(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            return None
        return b"i" + _INT_LENGTH.to_bytes(4, "big") + number.to_bytes(8, "big", signed=True)
    if isinstance(value, float | np.floating):
        number_f = float(value)
        if not (abs(number_f) <= _EXACT_FLOAT and number_f.is_integer()):
            return None
        return _typed(int(number_f))
    if isinstance(value, str):
        text = unicodedata.normalize("NFC", value).encode("utf-8")
        return b"s" + len(text).to_bytes(4, "big") + text
    return None


def _string_fields(items: list[str]) -> list[bytes]:
    """The typed fields of a column of strings only: what :func:`_typed` gives each, with
    the headers laid out by numpy and no per-value type tests (about 2x faster)."""
    normalize = unicodedata.normalize  # returns its input at once when already NFC
    texts = [normalize("NFC", item).encode("utf-8") for item in items]
    headers = np.empty(len(texts), dtype=[("tag", "u1"), ("length", ">u4")])
    headers["tag"] = ord("s")
    headers["length"] = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    heads: list[bytes] = headers.view("V5").tolist()
    return list(map(bytes.__add__, heads, texts))


def _column(
    values: pd.Series, name: str, source: str, problems: list[str]
) -> tuple[np.ndarray | list[bytes] | None, str]:
    """One id column as int64 (fast path) or typed fields; its kind. Problems appended."""
    nulls = values.isna().to_numpy()
    if nulls.any():
        problems.append(
            f"{source}: id column {name!r} has {int(nulls.sum())} null value(s) "
            f"(e.g. at row positions {_positions(nulls)}); ids must all be present"
        )
        return None, "integer"
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        values = values.astype(object)
        dtype = values.dtype
    kind = getattr(dtype, "kind", "O")
    if kind in "iu":
        array = values.to_numpy()
        if kind == "u" and array.dtype.itemsize == 8 and (array > _INT64_MAX).any():
            bad = array > _INT64_MAX
            problems.append(
                f"{source}: id column {name!r} has {int(bad.sum())} integer(s) above "
                f"2**63 - 1 (e.g. at row positions {_positions(bad)}); ids must fit int64"
            )
            return None, "integer"
        return array.astype(np.int64), "integer"
    if kind == "f":
        array = values.to_numpy(dtype=np.float64)
        bad = ~((np.abs(array) <= _EXACT_FLOAT) & (np.floor(array) == array))
        if bad.any():
            problems.append(
                f"{source}: id column {name!r} holds {int(bad.sum())} non-integral or "
                f"too-large float(s) (e.g. at row positions {_positions(bad)}); float ids "
                "are refused (they compare unreliably): store them as integers or strings"
            )
            return None, "integer"
        return array.astype(np.int64), "integer"
    if kind in "OUST" or isinstance(dtype, pd.StringDtype):
        items = values.tolist()
        if pd.api.types.infer_dtype(items, skipna=False) == "string":
            return _string_fields(items), "string"
        fields: list[bytes] = []
        refused: list[int] = []
        tags: set[int] = set()
        for position, value in enumerate(values.tolist()):
            field = _typed(value)
            if field is None:
                refused.append(position)
                continue
            tags.add(field[0])
            fields.append(field)
        if refused:
            shown = ", ".join(str(p) for p in refused[:EXAMPLES])
            problems.append(
                f"{source}: id column {name!r} has {len(refused)} value(s) of a refused type "
                f"(booleans, floats that are not integers, integers outside int64, other "
                f"objects; e.g. at row positions {shown}); ids are integers or strings"
            )
            return None, "string"
        if tags == {ord("i")}:
            return fields, "integer"
        return fields, "string" if tags == {ord("s")} else "mixed"
    problems.append(
        f"{source}: id column {name!r} has dtype {dtype}, which cannot be an id; "
        "ids are integers or strings (cast dates and booleans to strings first)"
    )
    return None, "integer"


def canonical_ids(frame: pd.DataFrame, columns: Sequence[str], source: str) -> CanonicalIds:
    """The canonical records of ``frame``'s id tuples (see the module docstring).

    Parameters
    ----------
    frame : DataFrame of shape (n_rows, n_columns)
    columns : sequence of str
        The id columns, in the order the session pairs them with the other parties'.
    source : str
        Names the table in messages (``"--train-path"``).

    Returns
    -------
    CanonicalIds

    Raises
    ------
    DataError
        Listing every problem of every column -- missing, nulls, refused types, repeated
        ids -- with counts and example row positions, never values.
    """
    from fedsilo.errors import DataError

    problems: list[str] = []
    present = {str(c) for c in frame.columns}
    parts: list[np.ndarray | list[bytes] | None] = []
    kinds: list[str] = []
    for name in columns:
        if name not in present:
            shown = ", ".join(repr(str(c)) for c in list(frame.columns)[:30])
            problems.append(f"{source}: missing the id column {name!r}; columns: {shown}")
            continue
        part, kind = _column(frame[name], name, source, problems)
        parts.append(part)
        kinds.append(kind)
    if problems:
        # Repeats are reported with the other problems, compared on the raw values of the
        # complete rows (the canonical form needs every column valid).
        known = [c for c in columns if c in present]
        if known:
            whole = frame[known].notna().all(axis=1).to_numpy()
            complete = frame[known][whole]
            raw = pd.Series(list(zip(*(complete[c] for c in known), strict=True)), dtype=object)
            codes, _ = pd.factorize(raw)
            _repeats(codes, np.flatnonzero(whole), source, problems)
        raise DataError(problems, source="the local data")
    # Repeats first: on one integer column a sort finds them 10x faster than hashing the
    # records would.
    if len(parts) == 1 and isinstance(parts[0], np.ndarray):
        ordered = np.sort(parts[0])
        if (ordered[1:] == ordered[:-1]).any():
            codes, _ = pd.factorize(parts[0])
            _repeats(codes, np.arange(len(frame)), source, problems)
            raise DataError(problems, source="the local data")
        records, packed = _records(parts, len(frame))
    else:
        records, packed = _records(parts, len(frame))
        if len(set(records)) != len(records):  # a set of bytes: 5x faster than factorize
            codes, _ = pd.factorize(pd.Series(records, dtype=object))
            _repeats(codes, np.arange(len(records)), source, problems)
    if problems:
        raise DataError(problems, source="the local data")
    return CanonicalIds(records=records, kinds=kinds, packed=packed)


def _records(
    parts: Sequence[np.ndarray | list[bytes] | None], rows: int
) -> tuple[list[bytes], bytes | None]:
    """The records, and their concatenation when numpy laid them out."""
    if all(isinstance(part, np.ndarray) for part in parts):
        # Integer ids: fixed-width fields laid out by numpy, cut into one bytes per row.
        table = np.empty(rows, dtype=[(f"f{j}", _FIELD) for j in range(len(parts))])
        for j, part in enumerate(parts):
            table[f"f{j}"] = _int_field(part)  # type: ignore[arg-type]
        width = table.dtype.itemsize
        records: list[bytes] = table.view(f"V{width}").tolist()
        return records, table.tobytes()
    if len(parts) == 1:
        assert isinstance(parts[0], list)
        return parts[0], None  # one column: its fields are the records
    columns = [
        _int_field(part).view(f"V{_FIELD.itemsize}").tolist()
        if isinstance(part, np.ndarray)
        else part
        for part in parts
    ]
    return [b"".join(fields) for fields in zip(*columns, strict=True)], None


def _repeats(codes: np.ndarray, rows: np.ndarray, source: str, problems: list[str]) -> None:
    """Append a problem when ``codes`` (one per row, equal for equal ids) repeat;
    ``rows`` are the row positions the codes stand for."""
    _, first = np.unique(codes, return_index=True)
    if len(first) == len(codes):
        return
    repeats = np.ones(len(codes), dtype=bool)
    repeats[first] = False
    earliest = dict(zip(codes[first].tolist(), first.tolist(), strict=True))
    shown = [
        f"row {rows[i]} repeats row {rows[earliest[codes[i]]]}"
        for i in np.flatnonzero(repeats)[:EXAMPLES].tolist()
    ]
    problems.append(
        f"{source}: {int(repeats.sum())} row(s) repeat an id tuple of an earlier row "
        f"({'; '.join(shown)}); each record must have a unique id to be linked"
    )


def keyed_hashes(records: Sequence[bytes], key: bytes) -> np.ndarray:
    """BLAKE2b-128 of each record, keyed with ``key``.

    Parameters
    ----------
    records : sequence of bytes, length n
    key : bytes
        16 to 64 bytes; the parties' shared secret.

    Returns
    -------
    ndarray of shape (n, HASH_BYTES), dtype uint8
    """
    # Keyed BLAKE2b compresses the key as a first block; copying a state that has already
    # absorbed it costs one compression per record instead of two, and the bound-method
    # loop is the tightest hashlib allows (one call per record is all it offers): about
    # 40 % faster than ``blake2b(r, key=key, ...)`` per record.
    keyed = hashlib.blake2b(key=key, digest_size=HASH_BYTES).copy
    digests: list[bytes] = []
    append = digests.append
    for record in records:
        state = keyed()
        state.update(record)
        append(state.digest())
    joined = b"".join(digests)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(records), HASH_BYTES)


def records_digest(records: Sequence[bytes] | CanonicalIds, key: bytes) -> str:
    """A keyed digest (BLAKE2b-256, hex) of a table's id records in row order.

    Records are self-delimiting (typed, length-prefixed fields) and every record of a
    session has the same number of fields, so the concatenation identifies the sequence.
    Keyed, so a server holding the digest cannot confirm a guessed id list (ids 0..n-1).
    Given the :class:`CanonicalIds` themselves, it reuses their packed records (same digest).
    """
    if isinstance(records, CanonicalIds):
        count = len(records.records)
        joined = records.packed if records.packed is not None else b"".join(records.records)
    else:
        count = len(records)
        joined = b"".join(records)
    digest = hashlib.blake2b(key=key, digest_size=32, person=b"fedsilo-prl-ids")
    digest.update(count.to_bytes(8, "big"))
    digest.update(joined)
    return digest.hexdigest()


def intersect(hashes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The records every party holds, by hash.

    Parameters
    ----------
    hashes : sequence of ndarray of shape (n_k, w), dtype uint8, w >= 16
        Each party's hashes, in its row order (only the first 16 bytes are compared).

    Returns
    -------
    list of ndarray of shape (n_shared,), dtype int64
        Per party, the row positions of the shared records, all in one order: ascending
        hash (its first 8 bytes read as a little-endian integer, then the next 8).

    Raises
    ------
    RepeatedHashError
        When a party's hashes repeat (names the party's index): its ids repeat, or two of
        its ids collide.
    """
    keys = [np.ascontiguousarray(h[:, :HASH_BYTES]).view("<u8") for h in hashes]
    # Fast path: each party's first 8 bytes sorted once (an argsort of uint64, ~4x faster
    # than one over every party's together), then matched by binary search, party after
    # party. Exact whenever no two different records share those 8 bytes (probability
    # ~n**2 / 2**65); when two do, within a party or across, the exact path decides.
    orders = []
    for k in keys:
        order = np.argsort(k[:, 0])
        ordered = k[order, 0]
        if (ordered[1:] == ordered[:-1]).any():
            return _intersect_exact(keys)
        orders.append((order, ordered))
    # Candidates: party 0's rows in ascending order of their first 8 bytes, narrowed to
    # those every later party holds; members[j] are party j's rows of the candidates.
    first_order, high = orders[0]
    members = [first_order]
    for order, ordered in orders[1:]:
        at = np.minimum(np.searchsorted(ordered, high), len(ordered) - 1)
        found = ordered[at] == high if len(ordered) else np.zeros(len(high), dtype=bool)
        high = high[found]
        members = [m[found] for m in members]
        members.append(order[at[found]])
    low = keys[0][members[0], 1]
    if any((k[m, 1] != low).any() for k, m in zip(keys[1:], members[1:], strict=True)):
        return _intersect_exact(keys)
    return [m.astype(np.int64, copy=False) for m in members]


def _intersect_exact(keys: Sequence[np.ndarray]) -> list[np.ndarray]:
    """:func:`intersect` comparing all 16 bytes (lexsort): for first-8-byte collisions."""
    high = np.concatenate([k[:, 0] for k in keys])
    low = np.concatenate([k[:, 1] for k in keys])
    party = np.concatenate([np.full(len(k), j, dtype=np.int32) for j, k in enumerate(keys)])
    position = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys])
    order = np.lexsort((party, low, high))
    high, low, party, position = high[order], low[order], party[order], position[order]
    same = (high[1:] == high[:-1]) & (low[1:] == low[:-1])
    repeated = same & (party[1:] == party[:-1])
    if repeated.any():
        raise RepeatedHashError(int(party[1:][repeated][0]), int(repeated.sum()))
    parties = len(keys)
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    sizes = np.diff(np.append(starts, len(high)))
    full = starts[sizes == parties]
    return [position[full + j] for j in range(parties)]
