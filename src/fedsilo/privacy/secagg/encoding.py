"""Fixed-point encoding of float vectors into ``Z_{2^k}``, and the layout of one update.

Encoding
--------
A value ``x`` is clipped to ``[-c, c]`` (``c = clip_range``) and rounded to the signed
integer ``q = rint(x * s)`` with the scale ``s = (2 ** (bits - 1) - 1) / c``, so
``|q| <= 2 ** (bits - 1) - 1``. A contribution of integer weight ``w`` is ``w * q``; it is
stored mod ``2 ** k`` (two's complement), where sums wrap without loss as long as the true
integer sum stays inside ``(-2 ** (k - 1), 2 ** (k - 1))``: with a total weight ``W`` that
holds when ``W * (2 ** (bits - 1) - 1) < 2 ** (k - 1)`` (``W`` up to 4.3e9 with the defaults),
which :meth:`FixedPoint.decode_sum` checks when it is given ``W``.

The error bound
---------------
Rounding moves each value by at most half a step, ``delta = c / (2 ** bits - 2)``, so for
``n`` contributions of weights ``w_i`` (``W = sum w_i``) the decoded sum satisfies::

    |decode_sum(sum_i w_i q_i) - sum_i w_i clip(x_i)| <= W * c / (2 ** bits - 2)

and the decoded weighted mean is within ``c / (2 ** bits - 2)`` of the mean of the clipped
values, whatever ``n`` and the weights (``4.8e-7`` for ``c = 8``, ``bits = 24``). Values
outside ``[-c, c]`` are clipped first; that error is the caller's choice of ``c``, not
quantization. Weights are integers (``num_examples``) so weighting adds no error.

Layout of one update
--------------------
:func:`encode_update` flattens named arrays in **sorted name order** (every client and the
server agree without sending the order), encodes them with the client's weight, and
appends the weight itself as one more integer slot: ``[w * q(values) ..., w]``. The sum of
such vectors is ``[sum w_i q_i ..., W]``; :func:`decode_mean` divides.

On the wire
-----------
A value mod ``2 ** k`` needs ``ceil(k / 8)`` bytes: :func:`pack` keeps those low bytes of
each ``uint64`` (little-endian), :func:`unpack` restores the vector; 7 bytes a value with
the default ``k = 56``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg.spec import SecAggError, SecAggSpec

__all__ = [
    "FixedPoint",
    "decode_mean",
    "encode_update",
    "flatten",
    "pack",
    "unflatten",
    "unpack",
    "update_length",
    "value_bytes",
]

Vector = npt.NDArray[np.uint64]
Floats = npt.NDArray[np.float64]


class FixedPoint:
    """Signed fixed-point encoding of ``bits`` bits per value, mod ``2 ** modulus_bits``.

    Parameters
    ----------
    bits : int in [8, 40]
        Bits of one quantized value, sign included.
    clip_range : float > 0
        Values are clipped to ``[-clip_range, clip_range]``.
    modulus_bits : int in [bits + 1, 64], default 56
        Arithmetic is mod ``2 ** modulus_bits``, held in ``uint64``.
    """

    def __init__(self, bits: int, clip_range: float, modulus_bits: int = 56) -> None:
        if not 8 <= bits <= 40:
            raise ConfigError(f"quantization_bits must be in [8, 40]. Got {bits}.")
        if not (np.isfinite(clip_range) and clip_range > 0):
            raise ConfigError(f"clip_range must be a finite number > 0. Got {clip_range}.")
        if not bits < modulus_bits <= 64:
            raise ConfigError(
                f"modulus_bits must be in [quantization_bits + 1 = {bits + 1}, 64]. "
                f"Got {modulus_bits}."
            )
        self.bits = bits
        self.clip_range = float(clip_range)
        self.modulus_bits = modulus_bits
        self.max_level = (1 << (bits - 1)) - 1
        self.scale = self.max_level / self.clip_range
        #: ``2 ** k - 1``: ``x & mask`` is ``x mod 2 ** k`` for a ``uint64`` x
        self.mask = np.uint64((1 << modulus_bits) - 1)

    @classmethod
    def from_spec(cls, spec: SecAggSpec) -> FixedPoint:
        return cls(spec.quantization_bits, spec.clip_range, spec.modulus_bits)

    @property
    def max_weight(self) -> int:
        """The largest total weight ``W`` whose sum cannot wrap around the modulus."""
        return ((1 << (self.modulus_bits - 1)) - 1) // self.max_level

    def error_bound(self, total_weight: int = 1) -> float:
        """``W * c / (2 ** bits - 2)``: the largest error of a decoded sum of total weight W."""
        return total_weight * self.clip_range / (2 * self.max_level)

    def encode(self, values: npt.ArrayLike, weight: int = 1) -> Vector:
        """``weight * rint(clip(values) * scale)`` mod ``2 ** k``, shape of ``values``.

        Raises
        ------
        ConfigError
            A non-finite value (clipping would hide a diverged model), or a weight that is
            not an integer in ``[0, max_weight]``.
        """
        floats = np.asarray(values, dtype=np.float64)
        # One sum is a cheap screen; the exact count runs only if it is not finite (NaN,
        # inf, or finite values whose sum overflows).
        if not np.isfinite(floats.sum()):
            bad = int(np.count_nonzero(~np.isfinite(floats)))
            if bad:
                raise ConfigError(
                    f"Secure aggregation encodes finite values only. Got {bad} NaN/inf value(s)."
                )
        _check_weight(weight, self.max_weight)
        levels = np.clip(floats, -self.clip_range, self.clip_range)
        levels *= self.scale
        np.rint(levels, out=levels)
        integers = levels.astype(np.int64)
        if weight != 1:
            integers *= np.int64(weight)
        # int64 -> uint64 reinterprets the two's complement bits: that is x mod 2 ** 64.
        encoded = integers.view(np.uint64)
        encoded &= self.mask
        return encoded

    def decode_sum(self, total: Vector, count: int | None = None) -> Floats:
        """The float sum of encoded contributions from their sum mod ``2 ** k``.

        Parameters
        ----------
        total : uint64 array
            The sum of :meth:`encode` outputs mod ``2 ** k``.
        count : int, optional
            The total weight ``W`` summed; when given, a ``W`` above :attr:`max_weight`
            (where the sum may have wrapped) raises :class:`SecAggError`.
        """
        if count is not None and count > self.max_weight:
            raise SecAggError(
                f"The secure sum of total weight {count} may have wrapped around the modulus "
                f"2^{self.modulus_bits}: at most {self.max_weight} fits with "
                f"quantization_bits={self.bits}."
            )
        residues = np.asarray(total, dtype=np.uint64) & self.mask
        # Sign-extend from bit k - 1: shift the residue to the top of 64 bits, reinterpret
        # as int64, shift back arithmetically.
        spare = np.uint64(64 - self.modulus_bits)
        signed = (residues << spare).view(np.int64) >> np.int64(64 - self.modulus_bits)
        return signed.astype(np.float64) / self.scale


def _check_weight(weight: int, max_weight: int) -> None:
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer):
        raise ConfigError(f"A secure aggregation weight must be an integer. Got {weight!r}.")
    if not 0 <= weight <= max_weight:
        raise ConfigError(
            f"A secure aggregation weight must be in [0, {max_weight}]. Got {weight}."
        )


def flatten(arrays: Mapping[str, npt.ArrayLike]) -> Floats:
    """The arrays' values in sorted name order as one float64 vector."""
    parts = [np.asarray(arrays[name], dtype=np.float64).ravel() for name in sorted(arrays)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def unflatten(vector: npt.ArrayLike, like: Mapping[str, npt.ArrayLike]) -> dict[str, Floats]:
    """The inverse of :func:`flatten`: float64 arrays shaped like ``like``'s, by name.

    Raises
    ------
    SecAggError
        When the vector's length is not the total size of ``like``.
    """
    values = np.asarray(vector, dtype=np.float64)
    shapes = {name: np.shape(like[name]) for name in sorted(like)}
    expected = sum(int(np.prod(shape)) for shape in shapes.values())
    if values.shape != (expected,):
        raise SecAggError(
            f"The decoded vector must have {expected} values for arrays "
            f"{sorted(shapes)}. Got shape {values.shape}."
        )
    out: dict[str, Floats] = {}
    start = 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = values[start : start + size].reshape(shape)
        start += size
    return out


def update_length(like: Mapping[str, npt.ArrayLike]) -> int:
    """The length of an encoded update of arrays shaped like ``like``: values + weight."""
    return sum(int(np.size(like[name])) for name in like) + 1


def encode_update(fixed: FixedPoint, arrays: Mapping[str, npt.ArrayLike], weight: int) -> Vector:
    """``[weight * q(flatten(arrays)) ..., weight]`` mod ``2 ** k`` (see the module docstring)."""
    _check_weight(weight, fixed.max_weight)
    # The weight slot rides along as one more value of the float vector, then is
    # overwritten: one allocation of the full length instead of a concatenation.
    floats = np.empty(update_length(arrays), dtype=np.float64)
    start = 0
    for name in sorted(arrays):
        part = np.asarray(arrays[name]).ravel()
        floats[start : start + part.size] = part
        start += part.size
    floats[-1] = 0.0
    encoded = fixed.encode(floats, weight)
    encoded[-1] = np.uint64(weight)
    return encoded


def decode_mean(
    fixed: FixedPoint, total: Vector, like: Mapping[str, npt.ArrayLike]
) -> tuple[dict[str, Floats], int]:
    """The weighted mean arrays and the total weight from the sum of :func:`encode_update`.

    The mean is within ``fixed.error_bound(1) = c / (2 ** bits - 2)`` of the weighted mean
    of the clipped values.

    Raises
    ------
    SecAggError
        A total weight of 0 (no mean exists), above ``fixed.max_weight``, or a length that
        does not match ``like``.
    """
    total = np.asarray(total, dtype=np.uint64) & fixed.mask
    if total.shape != (update_length(like),):
        raise SecAggError(
            f"The secure sum must have {update_length(like)} slots (values + weight). "
            f"Got shape {total.shape}."
        )
    weight = int(total[-1])
    if weight == 0:
        raise SecAggError("The secure sum has a total weight of 0: no mean exists.")
    sums = fixed.decode_sum(total[:-1], count=weight)
    return unflatten(sums / weight, like), weight


def value_bytes(modulus_bits: int) -> int:
    """Bytes of one packed value mod ``2 ** modulus_bits``: ``ceil(modulus_bits / 8)``."""
    return -(-modulus_bits // 8)


def pack(vector: Vector, modulus_bits: int) -> npt.NDArray[np.uint8]:
    """The low ``ceil(k / 8)`` little-endian bytes of each value, as one uint8 array.

    Raises
    ------
    SecAggError
        A vector that is not 1-d uint64 or holds a value of ``2 ** k`` or more.
    """
    values = np.asarray(vector)
    if values.dtype != np.uint64 or values.ndim != 1:
        raise SecAggError(
            f"pack takes a 1-d uint64 vector. Got {values.dtype} of shape {values.shape}."
        )
    if modulus_bits < 64 and values.size and int(values.max()) >> modulus_bits:
        raise SecAggError(f"pack: a value does not fit in modulus_bits={modulus_bits}.")
    width = value_bytes(modulus_bits)
    as_bytes = values.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
    return np.ascontiguousarray(as_bytes[:, :width]).reshape(-1)


def unpack(packed: npt.ArrayLike, modulus_bits: int) -> Vector:
    """The inverse of :func:`pack`.

    Raises
    ------
    SecAggError
        A byte count that is not a multiple of ``ceil(k / 8)``.
    """
    raw = np.asarray(packed)
    width = value_bytes(modulus_bits)
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size % width:
        raise SecAggError(
            f"unpack takes a 1-d uint8 array of a multiple of {width} bytes "
            f"(modulus_bits={modulus_bits}). Got {raw.dtype} of shape {raw.shape}."
        )
    full = np.zeros((raw.size // width, 8), dtype=np.uint8)
    full[:, :width] = raw.reshape(-1, width)
    return full.view("<u8").reshape(-1).astype(np.uint64, copy=False)
