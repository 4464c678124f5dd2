"""The trained ensemble as arrays, and its predictions (scikit-learn's ``predictor.py``).

A forest travels (checkpoint, model, the ``bin`` task) as flat arrays: ``trees/offsets`` of
shape (n_trees + 1,) and, concatenated over trees with node ids local to their tree,
``trees/feature``, ``trees/bin``, ``trees/left``, ``trees/right`` (int64, -1 at leaves) and
``trees/value`` (float64, shrunk leaf values); ``cuts/<j>`` are predictor ``j``'s bin cuts
and ``baseline`` of shape (1,) the raw prediction before any tree.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsilo.errors import ConfigError

__all__ = ["TREE_FIELDS", "Forest", "expit", "leaf_index"]

TREE_FIELDS = ("feature", "bin", "left", "right", "value")


@dataclass
class Forest:
    """Baseline, bin cuts and trees.

    Attributes
    ----------
    baseline : float
    cuts : list of n_features ndarrays
    trees : list of dict
        Each maps :data:`TREE_FIELDS` to arrays of shape (n_nodes,).
    """

    baseline: float
    cuts: list[np.ndarray]
    trees: list[dict[str, np.ndarray]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {"baseline": np.array([self.baseline])}
        for j, cuts in enumerate(self.cuts):
            arrays[f"cuts/{j}"] = np.asarray(cuts, dtype=np.float64)
        sizes = [tree["feature"].size for tree in self.trees]
        arrays["trees/offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for name in TREE_FIELDS:
            dtype = np.float64 if name == "value" else np.int64
            parts = [tree[name] for tree in self.trees]
            arrays[f"trees/{name}"] = (
                np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
            )
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_features: int) -> Forest:
        """Rebuild a forest written by :meth:`to_arrays`.

        Raises
        ------
        ConfigError
            When an array is missing or the sizes disagree.
        """
        needed = ["baseline", "trees/offsets", *(f"trees/{n}" for n in TREE_FIELDS)]
        needed += [f"cuts/{j}" for j in range(n_features)]
        missing = [name for name in needed if name not in arrays]
        if missing:
            raise ConfigError(f"A gbm model needs arrays {', '.join(missing)}; they are missing.")
        offsets = np.asarray(arrays["trees/offsets"], dtype=np.int64)
        total = int(offsets[-1]) if offsets.size else 0
        if any(np.asarray(arrays[f"trees/{n}"]).size != total for n in TREE_FIELDS):
            raise ConfigError(f"A gbm model's tree arrays must all hold {total} nodes.")
        trees = [
            {name: np.asarray(arrays[f"trees/{name}"][start:stop]) for name in TREE_FIELDS}
            for start, stop in itertools.pairwise(offsets.tolist())
        ]
        cuts = [np.asarray(arrays[f"cuts/{j}"], dtype=np.float64) for j in range(n_features)]
        return cls(float(np.asarray(arrays["baseline"]).ravel()[0]), cuts, trees)

    def truncated(self, n_trees: int) -> Forest:
        return Forest(self.baseline, self.cuts, self.trees[:n_trees])

    def raw_binned(self, binned: np.ndarray) -> np.ndarray:
        """Raw predictions (log-odds or values) of binned rows, shape (n_samples,)."""
        raw = np.full(binned.shape[0], self.baseline)
        for tree in self.trees:
            raw += tree["value"][leaf_index(tree, binned, tree["bin"])]
        return raw

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Raw predictions of unbinned rows ``x`` of shape (n_samples, n_features).

        A split on bin ``b`` of feature ``j`` sends ``x[:, j] <= cuts[j][b]`` left, which is
        the binned rule ``bin <= b`` since bins are ``searchsorted(cuts, x, side="left")``.
        """
        raw = np.full(x.shape[0], self.baseline)
        for tree in self.trees:
            thresholds = np.array(
                [
                    self.cuts[f][b] if f >= 0 else 0.0
                    for f, b in zip(tree["feature"].tolist(), tree["bin"].tolist(), strict=True)
                ]
            )
            raw += tree["value"][leaf_index(tree, x, thresholds)]
        return raw


def leaf_index(tree: dict[str, np.ndarray], values: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """The leaf each row reaches: at node ``i``, ``values[:, feature[i]] <= limits[i]`` goes
    left.

    Parameters
    ----------
    tree : dict of str to ndarray of shape (n_nodes,)
    values : ndarray of shape (n_samples, n_features)
        Bins (with ``limits`` the split bins) or raw values (with thresholds).
    limits : ndarray of shape (n_nodes,)

    Returns
    -------
    ndarray of shape (n_samples,), int64
    """
    node = np.zeros(values.shape[0], dtype=np.int64)
    active = np.arange(values.shape[0])
    while active.size:
        at = node[active]
        internal = tree["left"][at] >= 0
        active, at = active[internal], at[internal]
        go_left = values[active, tree["feature"][at]] <= limits[at]
        node[active] = np.where(go_left, tree["left"][at], tree["right"][at])
    return node


def expit(raw: np.ndarray) -> np.ndarray:
    """The logistic function ``1 / (1 + exp(-raw))``, without overflow warnings."""
    out: np.ndarray = np.exp(-np.logaddexp(0.0, -np.asarray(raw, dtype=np.float64)))
    return out
