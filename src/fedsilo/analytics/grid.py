"""The quantile sketch as a dense vector on a fixed window, so silos can sum it securely.

A :class:`~fedsilo.analytics.sketch.QuantileSketch` releases its non-empty buckets only,
sparse: which buckets a silo fills depends on its data, so two silos' sketches do not line
up slot for slot. A secure sum (:func:`fedsilo.workflows.secure.secure_sum`) adds fixed-length
vectors, so under secure aggregation each silo sends its bucket counts on the same window of
bucket keys, every bucket of it, empty or not, and the server rebuilds the pooled sketch from
the summed vector -- bit for bit the merge of the silos' sketches, as DDSketch buckets depend
on the value alone.

The window covers magnitudes from :data:`SMALLEST` to :data:`LARGEST`:

* ``|v| < SMALLEST`` (zero included) is counted in the zero bucket: such a value reads as 0
  (an absolute error below ``1e-6``);
* ``|v| > LARGEST`` is counted in the outermost bucket of its sign, and :meth:`SketchGrid.counts`
  reports how many were, so the session can warn that its extremes and quantiles there are
  not to be trusted.

Layout of the vector (``2 K + 1`` slots, ``K`` keys a sign): the negative buckets from the
largest magnitude down (ascending values), the zero bucket, the positive buckets from the
smallest magnitude up. With the exact sketch's ``alpha = 0.01`` that is 4,147 slots a column.
"""

from __future__ import annotations

import math

import numpy as np

from fedsilo.analytics.sketch import ZERO_CODE, QuantileSketch

__all__ = ["LARGEST", "SMALLEST", "SketchGrid"]

#: below this magnitude a value is counted as 0
SMALLEST = 1e-6
#: above this magnitude a value is counted in the outermost bucket (and reported)
LARGEST = 1e12


class SketchGrid:
    """The fixed window of sketch bucket keys for one relative accuracy.

    Parameters
    ----------
    relative_accuracy : float in (0, 1)
        The sketch's ``alpha`` (every silo and the server use the session's).
    """

    def __init__(self, relative_accuracy: float) -> None:
        self.relative_accuracy = float(relative_accuracy)
        probe = QuantileSketch(relative_accuracy)
        self._keys = probe.keys
        self.low_key = int(probe.keys(np.array([SMALLEST]))[0])
        self.high_key = int(probe.keys(np.array([LARGEST]))[0])

    @property
    def width(self) -> int:
        """Keys a sign: ``K``."""
        return self.high_key - self.low_key + 1

    @property
    def size(self) -> int:
        """Slots of the vector: ``2 K + 1``."""
        return 2 * self.width + 1

    def counts(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """The dense bucket counts of finite ``values`` (float64, for the secure sum) and how
        many values lay beyond :data:`LARGEST` (counted in the outermost buckets)."""
        x = np.asarray(values, dtype=np.float64).ravel()
        dense = np.zeros(self.size, dtype=np.float64)
        if x.size == 0:
            return dense, 0
        magnitude = np.abs(x)
        indexed = magnitude >= SMALLEST
        outside = int(np.count_nonzero(magnitude > LARGEST))
        keys = np.clip(self._keys(magnitude[indexed]), self.low_key, self.high_key) - self.low_key
        negative = x[indexed] < 0
        dense[: self.width] = np.bincount(self.width - 1 - keys[negative], minlength=self.width)[
            : self.width
        ]
        dense[self.width] = float(x.size - np.count_nonzero(indexed))
        dense[self.width + 1 :] = np.bincount(keys[~negative], minlength=self.width)[: self.width]
        return dense, outside

    def sketch(self, dense: np.ndarray) -> QuantileSketch:
        """The sketch whose buckets hold the (summed) counts of ``dense``, rounded to
        integers (a secure sum decodes them within its quantization error, well below 0.5).

        Raises
        ------
        ValueError
            When ``dense`` is not of :attr:`size` slots or has a negative count.
        """
        counts = np.rint(np.asarray(dense, dtype=np.float64)).astype(np.int64)
        if counts.shape != (self.size,) or bool((counts < 0).any()):
            raise ValueError(
                f"A dense sketch of relative accuracy {self.relative_accuracy} has "
                f"{self.size} non-negative counts; got shape {counts.shape} "
                f"(min {counts.min() if counts.size else math.nan})."
            )
        keys = np.arange(self.low_key, self.high_key + 1, dtype=np.int64)
        negative = counts[: self.width][::-1]
        positive = counts[self.width + 1 :]
        codes: dict[int, int] = {}
        codes.update(zip((2 * keys + 1).tolist(), negative.tolist(), strict=True))
        codes.update(zip((2 * keys).tolist(), positive.tolist(), strict=True))
        if counts[self.width]:
            codes[ZERO_CODE] = int(counts[self.width])
        return QuantileSketch.from_counts(self.relative_accuracy, codes)
