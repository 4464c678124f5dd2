"""Streaming means of the clients' arrays, the building block of every strategy.

A round's replies are consumed one at a time into one float64 accumulator per array, so the
server holds about two copies of the model however many clients reply, never N of them.
A large accumulator is an anonymous mapping (zero pages on demand, as ``np.zeros``), so
:func:`weighted_average`, which owns its sums, gives each range back to the kernel as soon as
it has been narrowed to the model's dtype: the round's end costs the float64 sums, not the
sums plus the narrowed model.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from fedsilo.errors import TaskError
from fedsilo.federation import Reply
from fedsilo.wire import Arrays

__all__ = [
    "ReplyWeight",
    "cast_like",
    "check_arrays",
    "is_trainable",
    "reply_weight",
    "streamed_mean",
    "unit_weight",
    "weighted_average",
]

#: ``weight(reply) -> float >= 0``: how much one reply counts in the mean
ReplyWeight = Callable[[Reply], float]


def reply_weight(reply: Reply, key: str = "num_examples") -> float:
    """The aggregation weight a reply declares in ``meta[key]``.

    Raises
    ------
    TaskError
        When the key is missing, not a number, negative or not finite.
    """
    who = reply.participant.client_name
    value: Any = reply.meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskError(
            f"The reply of client {who!r} must carry meta[{key!r}] as a number >= 0. Got {value!r}."
        )
    weight = float(value)
    if not math.isfinite(weight) or weight < 0:
        raise TaskError(
            f"The reply of client {who!r} must carry meta[{key!r}] >= 0. Got {value!r}."
        )
    return weight


def unit_weight(reply: Reply) -> float:
    """Every reply counts once, whatever its size (unweighted averaging)."""
    return 1.0


def streamed_mean(
    current: Arrays, replies: Iterable[Reply], weight: ReplyWeight = reply_weight
) -> dict[str, np.ndarray]:
    """The weighted mean of the replies' arrays in float64, as a running sum.

    Parameters
    ----------
    current : dict of str to ndarray
        The global model: names and shapes the replies must have.
    replies : iterable of Reply
        Consumed once; no reply is kept after it has been added.
    weight : callable, default :func:`reply_weight`
        The weight of one reply (``meta["num_examples"]`` by default).

    Returns
    -------
    dict of str to ndarray of float64
        ``sum_i w_i * x_i / sum_i w_i`` per name, same shapes as ``current``.

    Raises
    ------
    TaskError
        On no replies, a total weight of 0, or arrays that do not match ``current``.
    """
    sums = {name: _zeros64(np.shape(ref)) for name, ref in current.items()}
    scratch = np.empty(_CHUNK, dtype=np.float64)
    total = 0.0
    count = 0
    for reply in replies:
        w = weight(reply)
        check_arrays(reply, current)
        for name, acc in sums.items():
            _add_scaled(acc.reshape(-1), np.ravel(reply.arrays[name]), w, scratch)
        total += w
        count += 1
        # Let this reply go before the next is fetched, so at most one is alive at a time.
        del reply
    if count == 0:
        raise TaskError("Cannot aggregate a round with no replies.")
    if total <= 0:
        raise TaskError(
            f"Cannot aggregate: the {count} replies declare meta['num_examples'] summing to 0."
        )
    for acc in sums.values():
        acc /= total
    return sums


# Floats per step of the running sum: 256 KiB of float64 scratch stays in the CPU cache, where
# a full-size float64 temporary per reply (200 MB for a 25M-parameter model) would cost page
# faults and four times the memory traffic (bench/aggregation.py measured 0.4 -> 4.4 GB/s).
_CHUNK = 1 << 15


def _add_scaled(acc: np.ndarray, values: np.ndarray, w: float, scratch: np.ndarray) -> None:
    """``acc += w * values`` in float64, chunk by chunk through ``scratch``.

    Elementwise the same operations as ``acc += np.multiply(values, w, dtype=float64)``, so
    the result is bit-identical; only the temporaries are small.
    """
    for start in range(0, values.size, _CHUNK):
        stop = min(start + _CHUNK, values.size)
        part = scratch[: stop - start]
        np.multiply(values[start:stop], w, out=part, dtype=np.float64)
        acc[start:stop] += part


#: accumulators at least this large are anonymous mappings whose pages can be given back
_MAPPED_BYTES = 1 << 20


def _zeros64(shape: tuple[int, ...]) -> np.ndarray:
    """float64 zeros; a large one in its own anonymous mapping (see the module notes)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * 8
    if nbytes < _MAPPED_BYTES:
        return np.zeros(shape, dtype=np.float64)
    # private: a page given back is freed, not kept by a shared memory object
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    return np.frombuffer(mapping, dtype=np.float64).reshape(shape)


def _mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The anonymous mapping :func:`_zeros64` put under ``array``, if any."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap):
        return base.obj
    return None


def _narrow_consuming(ref: Any, value: np.ndarray) -> np.ndarray:
    """``value`` as :func:`cast_like` casts it, range by range, each range of a mapped
    ``value`` given back once narrowed (its contents are then zeros: ``value`` is spent)."""
    dtype = np.asarray(ref).dtype
    mapping = _mapping_of(value)
    if mapping is None or not value.flags.c_contiguous:
        return cast_like({"v": ref}, {"v": value})["v"]
    trainable = is_trainable(ref)
    out = np.empty(value.shape, dtype=dtype)
    source, target = value.reshape(-1), out.reshape(-1)
    step = _NARROW_STEP // value.itemsize
    released = 0
    for start in range(0, source.size, step):
        stop = min(start + step, source.size)
        part = source[start:stop]
        target[start:stop] = part if trainable else np.rint(part)
        # whole pages only, up to where this range ends
        end = (stop * value.itemsize) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > released:
            mapping.madvise(mmap.MADV_DONTNEED, released, end - released)
            released = end
    return out


# Bytes of float64 narrowed (and given back) per step: large enough that the madvise calls
# cost nothing beside the copy, small enough that the narrowed and the spent ranges barely
# overlap in the resident set.
_NARROW_STEP = 8 << 20


def cast_like(current: Arrays, arrays: Mapping[str, np.ndarray]) -> Arrays:
    """``arrays`` in the dtypes of ``current``; integer and bool arrays are rounded first."""
    result: Arrays = {}
    for name, ref in current.items():
        dtype = np.asarray(ref).dtype
        value = arrays[name]
        if not is_trainable(ref):
            value = np.rint(value)
        result[name] = np.asarray(value).astype(dtype, copy=False)
    return result


def weighted_average(
    current: Arrays, replies: Iterable[Reply], weight: ReplyWeight = reply_weight
) -> Arrays:
    """The weighted mean of the replies (see :func:`streamed_mean`) in ``current``'s dtypes.

    Parameters
    ----------
    current : dict of str to ndarray
    replies : iterable of Reply
    weight : callable, default :func:`reply_weight`

    Returns
    -------
    dict of str to ndarray
        Same names, shapes and dtypes as ``current`` (integer arrays rounded to the nearest
        integer).
    """
    sums = streamed_mean(current, replies, weight)
    # The sums are this function's own: each is narrowed and given back range by range.
    return {name: _narrow_consuming(ref, sums.pop(name)) for name, ref in current.items()}


def is_trainable(array: np.ndarray) -> bool:
    """Whether a server optimizer may step this array: floating point only.

    Integer and bool arrays (e.g. BatchNorm's ``num_batches_tracked``) are averaged and
    rounded instead; a momentum or an adaptive step means nothing for a counter.
    """
    return bool(np.issubdtype(np.asarray(array).dtype, np.floating))


def check_arrays(reply: Reply, current: Arrays) -> None:
    """Raise TaskError unless the reply's arrays match ``current`` name for name and shape."""
    who = reply.participant.client_name
    missing = sorted(set(current) - set(reply.arrays))
    unexpected = sorted(set(reply.arrays) - set(current))
    if missing or unexpected:
        raise TaskError(
            f"The reply of client {who!r} does not match the global model: "
            f"missing arrays {missing}, unexpected arrays {unexpected}."
        )
    for name, ref in current.items():
        got = np.shape(reply.arrays[name])
        if got != np.shape(ref):
            raise TaskError(
                f"The reply of client {who!r} has array {name!r} of shape {got}; "
                f"expected {np.shape(ref)}."
            )
