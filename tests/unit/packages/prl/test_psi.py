"""The PSI building blocks against references: canonical records, keyed hashes, intersection
(pandas' merge on the ids), and the refusals listed before anything is hashed."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from fedsilo.errors import DataError
from fedsilo.privacy import ecdh
from fedsilo.privacy.psi import (
    HASH_BYTES,
    RepeatedHashError,
    canonical_ids,
    intersect,
    keyed_hashes,
    records_digest,
)


def test_records_are_injective_and_typed() -> None:
    frame = pd.DataFrame(
        {
            "a": ["ab", "a", "", "é", "e\u0301", "123"],
            "b": ["c", "bc", "abc", "x", "y", "z"],
        }
    )
    ids = canonical_ids(frame, ["a", "b"], "t")
    # ("ab","c") and ("a","bc") concatenate alike; the length prefixes keep them apart
    assert len(set(ids.records)) == len(frame)
    assert ids.kinds == ["string", "string"]
    # NFC: a precomposed and a decomposed e-acute are the same string
    one = canonical_ids(pd.DataFrame({"a": ["é"]}), ["a"], "t").records
    two = canonical_ids(pd.DataFrame({"a": ["e\u0301"]}), ["a"], "t").records
    assert one == two
    # integral floats are their integer; an integer is not the string of its digits
    ints = canonical_ids(pd.DataFrame({"a": [5, -7]}), ["a"], "t").records
    floats = canonical_ids(pd.DataFrame({"a": [5.0, -7.0]}), ["a"], "t").records
    objects = canonical_ids(pd.DataFrame({"a": pd.Series([5, -7], dtype=object)}), ["a"], "t")
    text = canonical_ids(pd.DataFrame({"a": ["5", "-7"]}), ["a"], "t").records
    assert ints == floats == objects.records
    assert set(ints).isdisjoint(text)
    unsigned = canonical_ids(pd.DataFrame({"a": np.array([5], dtype=np.uint16)}), ["a"], "t")
    assert unsigned.records == ints[:1]
    mixed = canonical_ids(pd.DataFrame({"a": pd.Series([1, "x"], dtype=object)}), ["a"], "t")
    assert mixed.kinds == ["mixed"]


def test_every_problem_is_listed_at_once_with_positions_not_values() -> None:
    frame = pd.DataFrame(
        {
            "id": ["SECRET-1", "SECRET-2", "SECRET-1", "SECRET-3", "SECRET-2"],
            "gap": [1.0, None, 3.0, None, 5.0],
            "frac": [0.5, 1.0, 2.0, 3.0, 4.0],
            "flag": [True, False, True, True, False],
        }
    )
    with pytest.raises(DataError) as info:
        canonical_ids(frame, ["gap", "frac", "flag", "absent"], "--train-path")
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert "'gap' has 2 null value(s) (e.g. at row positions 1, 3)" in problems[0]
    assert "'frac' holds 1 non-integral" in problems[1] and "positions 0" in problems[1]
    assert "'flag' has dtype bool" in problems[2]
    assert "missing the id column 'absent'" in problems[3]
    # repeats among the complete rows are listed with the nulls (rows 1 and 3 have some)
    with pytest.raises(DataError) as info:
        canonical_ids(
            pd.DataFrame({"id": ["a", "b", "a", "c"], "g": [1, None, 1, None]}, index=list("wxyz")),
            ["id", "g"],
            "--test-path",
        )
    assert info.value.problems[1].startswith("--test-path: 1 row(s) repeat")
    assert "(row 2 repeats row 0)" in info.value.problems[1]
    with pytest.raises(DataError) as info:
        canonical_ids(frame, ["id"], "--train-path")
    [problem] = info.value.problems
    assert "2 row(s) repeat an id tuple" in problem
    assert "row 2 repeats row 0; row 4 repeats row 1" in problem
    assert "SECRET" not in str(info.value)


def test_duplicates_count_after_canonicalization() -> None:
    # 5 and 5.0 are one id: a repeat, though pandas sees two dtypes' worth of values
    frame = pd.DataFrame({"id": pd.Series([5, 5.0, 6], dtype=object)})
    with pytest.raises(DataError, match=r"1 row\(s\) repeat .*row 1 repeats row 0"):
        canonical_ids(frame, ["id"], "t")
    # ints too large for int64 and floats past 2**53 are refused, not wrapped
    big = pd.DataFrame({"id": np.array([2**63 + 5, 1], dtype=np.uint64)})
    with pytest.raises(DataError, match="above 2\\*\\*63 - 1"):
        canonical_ids(big, ["id"], "t")


def test_keyed_hashes_depend_on_the_key_only() -> None:
    records = canonical_ids(pd.DataFrame({"id": np.arange(50)}), ["id"], "t").records
    key, other = os.urandom(32), os.urandom(32)
    first = keyed_hashes(records, key)
    assert first.shape == (50, HASH_BYTES) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, keyed_hashes(records, key))
    assert not (first == keyed_hashes(records, other)).all(axis=1).any()
    assert records_digest(records, key) == records_digest(records, key)
    assert records_digest(records, key) != records_digest(records, other)
    assert records_digest(records, key) != records_digest(records[::-1], key)


def test_the_digest_of_packed_records_is_the_digest_of_the_records() -> None:
    key = os.urandom(32)
    ints = canonical_ids(
        pd.DataFrame({"a": np.arange(30), "b": np.arange(30) * 7}), ["a", "b"], "t"
    )
    assert ints.packed == b"".join(ints.records)
    assert records_digest(ints, key) == records_digest(ints.records, key)
    strings = canonical_ids(pd.DataFrame({"id": [f"p{i}" for i in range(30)]}), ["id"], "t")
    assert strings.packed is None
    assert records_digest(strings, key) == records_digest(strings.records, key)


def test_repeated_integer_ids_are_refused_with_positions() -> None:
    frame = pd.DataFrame({"id": np.array([9, 3, 9, 4, 3, 9], dtype=np.int32)})
    with pytest.raises(DataError, match=r"3 row\(s\) repeat .*row 2 repeats row 0; row 4 repeats"):
        canonical_ids(frame, ["id"], "t")


def test_string_columns_take_the_fast_path_to_the_same_records() -> None:
    from fedsilo.privacy.psi import _typed

    values = ["e\u0301t\u00e9", "\u00e9t\u00e9x", "A12 ", "a12", "", "\U0001f600"]
    for column in (pd.Series(values, dtype=object), pd.Series(values, dtype="string")):
        ids = canonical_ids(pd.DataFrame({"id": column}), ["id"], "t")
        assert ids.records == [_typed(v) for v in values]
        assert ids.kinds == ["string"]
    # NFD and NFC spellings of one name are one id: refused as a repeat
    frame = pd.DataFrame({"id": ["x", "\u00e9", "y", "e\u0301"]})
    with pytest.raises(DataError, match=r"1 row\(s\) repeat .*row 3 repeats row 1"):
        canonical_ids(frame, ["id"], "t")


def test_intersect_with_an_empty_party_or_no_overlap() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (40, HASH_BYTES), dtype=np.uint8)
    b = rng.integers(0, 256, (30, HASH_BYTES), dtype=np.uint8)
    empty = np.zeros((0, HASH_BYTES), dtype=np.uint8)
    for parties in ([a, empty], [empty, a], [a, b], [a, a[:10], empty]):
        found = intersect(parties)
        assert [len(p) for p in found] == [0] * len(parties)
        assert all(p.dtype == np.int64 for p in found)


def _merge_reference(frames: list[pd.DataFrame], on: list[str]) -> pd.DataFrame:
    merged = frames[0].reset_index(names="row0")
    for j, frame in enumerate(frames[1:], start=1):
        merged = merged.merge(frame.reset_index(names=f"row{j}"), on=on)
    return merged


@pytest.mark.parametrize("parties", [2, 3, 4])
def test_intersect_equals_a_pandas_merge(parties: int) -> None:
    rng = np.random.default_rng(parties)
    frames = [pd.DataFrame({"id": rng.choice(3000, 1000, replace=False)}) for _ in range(parties)]
    key = os.urandom(32)
    hashes = [keyed_hashes(canonical_ids(f, ["id"], "t").records, key) for f in frames]
    found = intersect(hashes)
    merged = _merge_reference(frames, ["id"])
    assert len(found[0]) == len(merged) > 0
    got = set(zip(*[p.tolist() for p in found], strict=True))
    want = set(zip(*[merged[f"row{j}"] for j in range(parties)], strict=True))
    assert got == want
    # one common order: entry i is the same id everywhere, ordered by hash
    ids = [f["id"].to_numpy()[p] for f, p in zip(frames, found, strict=True)]
    for other in ids[1:]:
        np.testing.assert_array_equal(ids[0], other)
    first = [int.from_bytes(bytes(r[:8]), "little") for r in hashes[0][found[0]]]
    assert first == sorted(first)


def test_intersect_is_exact_when_the_first_8_bytes_collide() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (6, HASH_BYTES), dtype=np.uint8)
    b = a[[4, 0, 2]].copy()
    b[1, 8:] ^= 1  # same first 8 bytes as a[0], a different record
    c = np.vstack([a[:1], a[:1]])
    c[1, 8:] ^= 2  # a party whose own two records share the first 8 bytes
    pa, pb = intersect([a, b])
    assert sorted(zip(pa.tolist(), pb.tolist(), strict=True)) == [(2, 2), (4, 0)]
    pc, pa2 = intersect([c, a])
    assert (pc.tolist(), pa2.tolist()) == ([0], [0])
    with pytest.raises(RepeatedHashError, match="party 1 sent 1 repeated"):
        intersect([a, np.vstack([b, b[:1]])])


def test_ecdh_blinding_commutes_and_hides_ids() -> None:
    records = canonical_ids(pd.DataFrame({"id": np.arange(20)}), ["id"], "t").records
    points = ecdh.hash_to_group(records)
    a, b = ecdh.random_scalar(), ecdh.scalar_from_seed(os.urandom(32))
    ab = ecdh.blind(ecdh.blind(points, a), b)
    ba = ecdh.blind(ecdh.blind(points, b), a)
    np.testing.assert_array_equal(ab, ba)
    assert len({bytes(r) for r in ab}) == 20
    assert not (ecdh.blind(points, a) == points).all(axis=1).any()
    with pytest.raises(ValueError, match="shape"):
        ecdh.blind(points[:, :16], a)
