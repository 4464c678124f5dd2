"""The whole protocol in process: exact sums against numpy, dropouts, thresholds, what a
single masked vector reveals, tampering, and every refusal of the client."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from fedsilo.privacy.secagg import SecAggError, SecAggSpec, ShareError, ThresholdError
from fedsilo.privacy.secagg.encoding import FixedPoint, decode_mean, encode_update, pack
from fedsilo.privacy.secagg.records import b64decode, b64encode
from fedsilo.privacy.secagg.shamir import PRIME, SHARE_BYTES

SPEC = SecAggSpec(enabled=True)


def _updates(n: int, seed: int = 0) -> tuple[dict[str, Any], dict[str, int]]:
    rng = np.random.default_rng(seed)
    ids = [f"client-{i:02d}" for i in range(n)]
    arrays = {
        pid: {"layer.weight": rng.normal(0, 1.5, (40, 25)), "layer.bias": rng.normal(0, 1, 25)}
        for pid in ids
    }
    weights = {pid: int(rng.integers(1, 5_000)) for pid in ids}
    return arrays, weights


def _check_mean(state: Any, total: np.ndarray, arrays: dict[str, Any], weights: dict[str, int]):
    fixed = FixedPoint.from_spec(state.spec)
    mean, total_weight = decode_mean(fixed, total, arrays[state.senders[0]])
    assert total_weight == sum(weights[pid] for pid in state.senders)
    for name in mean:
        reference = np.average(
            [arrays[pid][name] for pid in state.senders],
            axis=0,
            weights=[weights[pid] for pid in state.senders],
        )
        # the stated bound: the weighted mean is within c / (2^bits - 2) of numpy's
        assert np.max(np.abs(mean[name] - reference)) <= fixed.error_bound(1) * (1 + 1e-6)


@pytest.mark.parametrize("n", [3, 10])
@pytest.mark.parametrize("modulus_bits", [56, 64, 40])
def test_exact_weighted_mean_against_numpy(run_protocol, n: int, modulus_bits: int) -> None:
    arrays, weights = _updates(n)
    spec = SecAggSpec(enabled=True, modulus_bits=modulus_bits)
    state, total = run_protocol(spec, arrays, weights)
    assert state.senders == sorted(arrays)
    _check_mean(state, total, arrays, weights)


def test_exact_statistics_sums_against_numpy(run_protocol) -> None:
    # glm newton / EDA style: unweighted sums of large statistics, a wide clip range and
    # 40 bits; the sum is within n * c / (2^bits - 2) of numpy's.
    rng = np.random.default_rng(3)
    spec = SecAggSpec(enabled=True, clip_range=1e5, quantization_bits=40)
    arrays = {f"silo-{i}": {"fisher": rng.normal(0, 2e4, (6, 6))} for i in range(4)}
    _, total = run_protocol(spec, arrays, dict.fromkeys(arrays, 1))
    fixed = FixedPoint.from_spec(spec)
    sums = fixed.decode_sum(total[:-1], count=int(total[-1]))
    reference = np.sum([a["fisher"] for a in arrays.values()], axis=0).ravel()
    assert np.max(np.abs(sums - reference)) <= fixed.error_bound(4)
    assert fixed.error_bound(4) == pytest.approx(4 * 1e5 / (2**40 - 2))


@pytest.mark.parametrize(
    ("n", "drops"),
    [
        (3, {"drop_masked": ["client-01"]}),
        (10, {"drop_masked": ["client-00", "client-04", "client-09"]}),
        (
            10,
            {
                "drop_keys": ["client-02"],
                "drop_shares": ["client-05"],
                "drop_masked": ["client-07"],
                "drop_unmask": ["client-03"],
            },
        ),
    ],
)
def test_dropouts_still_recover_the_survivors_sum(run_protocol, n: int, drops: dict) -> None:
    arrays, weights = _updates(n, seed=n)
    state, total = run_protocol(SPEC, arrays, weights, **drops)
    before_unmask = ("drop_keys", "drop_shares", "drop_masked")
    gone = {pid for stage in before_unmask for pid in drops.get(stage, [])}
    assert set(state.senders) == set(arrays) - gone
    assert state.dropped == sorted(drops.get("drop_masked", []))
    _check_mean(state, total, arrays, weights)


def test_below_threshold_after_masking_fails_clearly(staged) -> None:
    arrays, weights = _updates(10)
    state = staged(SPEC, sorted(arrays))
    state.keys()
    state.shares()
    fixed = FixedPoint.from_spec(SPEC)
    drop = [f"client-0{i}" for i in range(4)]  # 6 left, threshold 7
    state.mask({p: encode_update(fixed, arrays[p], weights[p]) for p in arrays}, drop=drop)
    # the server stops first, naming the stage ...
    assert state.server is not None
    with pytest.raises(ThresholdError, match="6 of 10 clients answered 'masked input'"):
        state.server.require("masked input", state.masked)
    with pytest.raises(ThresholdError, match="fewer than the threshold 7"):
        state.server.recover(state.masked, {}, state.survivors, state.senders)
    # ... and a client asked anyway reveals nothing
    with pytest.raises(ThresholdError, match=r"6 clients sent masked input.*no shares"):
        state.unmask()


def test_too_few_unmask_replies_fail_clearly(staged) -> None:
    arrays, weights = _updates(3)
    state = staged(SPEC, sorted(arrays))
    state.keys()
    state.shares()
    fixed = FixedPoint.from_spec(SPEC)
    state.mask({p: encode_update(fixed, arrays[p], weights[p]) for p in arrays})
    state.unmask(drop=["client-00", "client-01"])
    with pytest.raises(ThresholdError, match=r"1 of 3 clients answered 'secagg\.unmask'"):
        state.recover()


def test_clients_refuse_to_continue_below_threshold(staged) -> None:
    arrays, _ = _updates(3)
    state = staged(SPEC, sorted(arrays))
    state.keys()
    state.shares(drop=["client-01", "client-02"])
    client = state.clients["client-00"]
    with pytest.raises(ThresholdError, match="1 clients sent shares, fewer than the threshold 2"):
        client.mask(
            encode_update(FixedPoint.from_spec(SPEC), arrays["client-00"], 1), ["client-00"]
        )
    with pytest.raises(ThresholdError, match="needs at least 2"):
        state.keys(drop=["client-01", "client-02"])


def test_a_masked_vector_alone_is_uniform_and_undecodable(staged) -> None:
    # The most revealing update there is: all zeros, weight 1.
    spec, fixed = SPEC, FixedPoint.from_spec(SPEC)
    ids = ["a", "b", "c"]
    state = staged(spec, ids)
    state.keys()
    state.shares()
    zeros = {"w": np.zeros(50_000)}
    state.mask({pid: encode_update(fixed, zeros, 1) for pid in ids})
    k = spec.modulus_bits
    for pid in ids:
        masked = state.masked[pid]
        # every byte that travels (pack keeps ceil(k / 8) of them) is uniform ...
        counts = np.bincount(pack(masked, k), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-4
        # ... and so is the sign bit of the fixed-point encoding (bit k - 1)
        top = ((masked >> np.uint64(k - 1)) & np.uint64(1)).astype(int)
        assert stats.binomtest(int(top.sum()), top.size).pvalue > 1e-4
        # decoded as if unmasked, it is noise spread over the whole range, not zeros
        decoded = fixed.decode_sum(masked[:-1])
        assert np.median(np.abs(decoded)) > 1e9
    # ... and any proper subset of the masked vectors sums to noise as well
    pair = (state.masked["a"] + state.masked["b"]) & fixed.mask
    assert stats.chisquare(np.bincount(pack(pair, k), minlength=256)).pvalue > 1e-4
    state.unmask()
    total = state.recover()
    assert np.array_equal(fixed.decode_sum(total[:-1]), np.zeros(50_000))


def _tampered_run(staged, change) -> Any:
    arrays, weights = _updates(4)
    state = staged(SPEC, sorted(arrays))
    state.keys()
    state.shares()
    fixed = FixedPoint.from_spec(SPEC)
    state.mask(
        {p: encode_update(fixed, arrays[p], weights[p]) for p in arrays},
        drop=["client-03"],
    )
    state.unmask()
    change(state.replies)
    return state


def _shift(entry: dict, delta: int = 1) -> None:
    value = int.from_bytes(b64decode(entry["share"], "share", SHARE_BYTES), "big")
    entry["share"] = b64encode(((value + delta) % PRIME).to_bytes(SHARE_BYTES, "big"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # a garbled self-seed share (exactly t = 3 replies: no redundancy)
        (
            lambda r: r["client-01"]["client-00"].update(share=b64encode(b"\x01" * 66)),
            "self seed of 'client-00'.*do not combine",
        ),
        # a deliberate small shift passes Shamir and is caught by the seed commitment
        (lambda r: _shift(r["client-01"]["client-02"]), "do not match its commitment"),
        # a shifted mask-key share is caught by the public key sent in stage A
        (lambda r: _shift(r["client-00"]["client-03"]), "do not match the public key"),
        # holders disagreeing on a commitment
        (
            lambda r: r["client-02"]["client-00"].update(digest=b64encode(bytes(32))),
            "disagree on the commitment",
        ),
        # a holder claiming another index, or revealing the wrong secret
        (lambda r: r["client-02"]["client-00"].update(index=1), "at index 3. Got"),
        (
            lambda r: r["client-02"]["client-03"].update(secret="self_seed", digest="x" * 43),
            "must reveal the mask_key share of 'client-03'",
        ),
        (lambda r: r["client-02"].pop("client-03"), "must cover exactly the survivors"),
    ],
)
def test_a_tampered_unmask_share_is_detected(staged, change, message: str) -> None:
    state = _tampered_run(staged, change)
    with pytest.raises(ShareError, match=message):
        state.recover()


def test_a_shifted_share_is_caught_by_the_commitment(staged) -> None:
    state = _tampered_run(staged, lambda r: _shift(r["client-00"]["client-01"], 1 << 200))
    with pytest.raises(ShareError, match="client-01"):
        state.recover()


def test_a_server_showing_different_mask_keys_is_caught(staged) -> None:
    # The server swaps client-02's key in client-00's view, to learn their pair seed.
    state = staged(SPEC, ["client-00", "client-01", "client-02"])
    state.keys()
    forged = dict(state.u1)
    forged["client-02"] = state.u1["client-01"]
    records_00 = state.clients["client-00"].shares(forged, 2)
    records = {pid: state.clients[pid].shares(state.u1, 2) for pid in ("client-01", "client-02")}
    with pytest.raises(ShareError, match="keys_digest"):
        state.clients["client-01"].receive({"client-00": records_00["client-01"]})
    with pytest.raises(ShareError, match="keys_digest"):
        state.clients["client-00"].receive({"client-01": records["client-01"]["client-00"]})


def test_client_refusals(staged) -> None:
    state = staged(SPEC, ["a", "b", "c", "d"])
    state.keys()
    a = state.clients["a"]
    with pytest.raises(ShareError, match="with the key it made; the server sent another key"):
        a.shares({**state.u1, "a": state.u1["b"]}, 3)
    with pytest.raises(ShareError, match="strict majority of the 4 participants"):
        a.shares(state.u1, 2)
    state.shares()
    inbox = state.inbox("a")
    with pytest.raises(ShareError, match="sealed by 'c' names 'b' as its owner"):
        a.receive({"c": inbox["b"]})
    a.receive(list(inbox.values()))
    with pytest.raises(SecAggError, match="Two share records from 'b'"):
        a.receive({"b": inbox["b"]})
    with pytest.raises(ShareError, match=r"missing \['e'\]"):
        a.mask(np.zeros(3, dtype=np.uint64), ["a", "b", "c", "e"])
    a.mask(np.zeros(3, dtype=np.uint64), ["a", "b", "c", "d"])
    with pytest.raises(ShareError, match="Refusing to reveal both seeds of \\['b'\\]"):
        a.unmask(["a", "b", "c"], ["b", "d"])
    with pytest.raises(ShareError, match="cannot be listed as dropped"):
        a.unmask(["b", "c", "d"], ["a"])
    with pytest.raises(ShareError, match="must split the 4 survivors"):
        a.unmask(["a", "b", "c"], [])
    reply = a.unmask(["a", "b", "c"], ["d"])
    assert {owner: entry["secret"] for owner, entry in reply.items()} == {
        "a": "self_seed",
        "b": "self_seed",
        "c": "self_seed",
        "d": "mask_key",
    }
    with pytest.raises(SecAggError, match="Cannot reveal shares in stage 'unmasked'"):
        a.unmask(["a", "b", "c", "d"], [])


def test_records_from_another_round_are_refused(staged) -> None:
    import json

    from fedsilo.privacy.secagg.client import ClientAggregation

    state = staged(SPEC, ["a", "b", "c"])
    state.keys()
    state.shares()
    early = ClientAggregation("s-1", 3, "a", SPEC)
    early.keys()
    with pytest.raises(SecAggError, match="Cannot receive shares in stage 'keys'"):
        early.receive({"b": state.records["b"]["a"]})
    for field, value in (("round", 4), ("session", "s-2"), ("holder", "c"), ("index", 2)):
        body = json.loads(state.records["b"]["a"])
        body[field] = value
        with pytest.raises(ShareError, match=f"must have {field} = "):
            state.clients["a"].receive({"b": json.dumps(body).encode()})


def test_recover_takes_packed_vectors_and_checks_their_shape(staged) -> None:
    arrays, weights = _updates(4)
    state = staged(SPEC, sorted(arrays))
    state.keys()
    state.shares()
    fixed = FixedPoint.from_spec(SPEC)
    state.mask({p: encode_update(fixed, arrays[p], weights[p]) for p in arrays}, drop=["client-02"])
    state.unmask()
    expected = state.recover()
    k = SPEC.modulus_bits
    mixed = {
        pid: pack(vector, k) if pid != "client-01" else vector
        for pid, vector in state.masked.items()
    }
    assert state.server is not None
    total = state.server.recover(mixed, state.replies, state.survivors, state.senders)
    assert np.array_equal(total, expected)
    for bad, message in (
        (pack(state.masked["client-00"], k)[:-7], r"must all have \d+ values"),
        (pack(state.masked["client-00"], k)[:-3], "uint8 from pack\\(\\) \\(7 bytes a value\\)"),
        (state.masked["client-00"].astype(np.int64), "must be 1-d uint64"),
    ):
        with pytest.raises(SecAggError, match=message):
            state.server.recover(
                {**mixed, "client-00": bad}, state.replies, state.survivors, state.senders
            )


def test_a_client_holds_the_server_to_the_sessions_explicit_threshold(staged) -> None:
    strict = SecAggSpec(enabled=True, threshold=4)
    state = staged(strict, ["a", "b", "c", "d", "e"])
    state.keys()
    with pytest.raises(ShareError, match=r"at least 4 and at most 5.*Got 3"):
        state.clients["a"].shares(state.u1, 3)
    assert state.server is not None and state.server.threshold == 4
