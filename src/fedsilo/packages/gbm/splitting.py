"""Split finding and tree growth on pooled histograms, as scikit-learn's grower does.

The gain of splitting a node with sums ``(G, H)`` into ``(G_L, H_L)`` and ``(G_R, H_R)`` is
scikit-learn's ``_split_gain``::

    gain = G_L^2 / (H_L + lambda) + G_R^2 / (H_R + lambda) - G^2 / (H + lambda)

over bins scanned left to right (no missing values), keeping a split only when both sides
hold at least ``min_samples_leaf`` rows and ``min_hessian_to_split`` hessian; the first
largest gain wins (features in order, then bins). A node is a leaf when its depth is
``max_depth``, it holds fewer than ``2 * min_samples_leaf`` rows, or its best gain is <= 0.
Leaf values are ``-learning_rate * G / (H + lambda)``.

:class:`TreeGrower` grows level by level when ``max_leaf_nodes`` is None (every splittable
node of the frontier is split at once; without a leaf cap the order of splits cannot change
the tree) and best-first otherwise (the largest gain first, one split per round, so the leaf
cap stops growth exactly where scikit-learn's priority queue would). Of two sibling nodes
that both need histograms the clients send only the smaller one's; the other is the
parent's minus it (scikit-learn's subtraction trick).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MIN_HESSIAN_TO_SPLIT", "Split", "TreeGrower", "best_splits"]

#: scikit-learn's HistGradientBoosting default (``min_hessian_to_split=1e-3``)
MIN_HESSIAN_TO_SPLIT = 1e-3


@dataclass(frozen=True)
class Split:
    """One split a node takes: rows with ``bin(feature) <= bin`` go to ``left``."""

    node: int
    feature: int
    bin: int
    left: int
    right: int


def best_splits(
    histograms: np.ndarray, l2_regularization: float, min_samples_leaf: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best split of every node.

    Parameters
    ----------
    histograms : ndarray of shape (n_nodes, n_features, n_bins, 3)
        Pooled gradient sums, hessian sums and counts.
    l2_regularization : float
    min_samples_leaf : int

    Returns
    -------
    gain : ndarray of shape (n_nodes,)
        ``-inf`` where no split satisfies the constraints.
    feature, bin : ndarray of shape (n_nodes,), int64
    """
    left = np.cumsum(histograms, axis=2)
    total = left[:, :, -1:, :]
    right = total - left
    lam = l2_regularization

    def score(sums: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            value: np.ndarray = sums[..., 0] ** 2 / (sums[..., 1] + lam)
        return value

    gain = score(left) + score(right) - score(total)
    valid = (
        (left[..., 2] >= min_samples_leaf)
        & (right[..., 2] >= min_samples_leaf)
        & (left[..., 1] >= MIN_HESSIAN_TO_SPLIT)
        & (right[..., 1] >= MIN_HESSIAN_TO_SPLIT)
    )
    gain = np.where(valid & np.isfinite(gain), gain, -np.inf)
    n_nodes, _, n_bins = gain.shape
    flat = gain.reshape(n_nodes, -1)
    best = np.argmax(flat, axis=1)  # first maximum: features in order, then bins
    return flat[np.arange(n_nodes), best], best // n_bins, best % n_bins


@dataclass
class _Node:
    depth: int
    gradient: float
    hessian: float
    count: float
    feature: int = -1
    bin: int = -1
    left: int = -1
    right: int = -1
    value: float = 0.0


@dataclass
class TreeGrower:
    """Grows one tree from pooled histograms the server receives round by round.

    Usage: :meth:`pending` nodes need histograms; pass them to :meth:`add_histograms`;
    :meth:`next_splits` returns the splits to broadcast (and makes their children pending);
    repeat until :meth:`done`; then :meth:`arrays` is the finished tree.
    """

    learning_rate: float
    l2_regularization: float
    min_samples_leaf: int
    max_depth: int | None
    max_leaf_nodes: int | None
    nodes: list[_Node] = field(default_factory=list)
    _pending: list[int] = field(default_factory=lambda: [0])
    _heap: list[tuple[float, int, int, int]] = field(default_factory=list)
    _leaves: int = 1
    _histograms: dict[int, np.ndarray] = field(default_factory=dict)
    #: node -> (sibling, parent histogram): histograms derived by subtraction
    _derived: dict[int, tuple[int, np.ndarray]] = field(default_factory=dict)

    def pending(self) -> list[int]:
        """The nodes whose histograms the clients must send now, in node order.

        Of two sibling nodes that both need histograms only the one with fewer rows is
        asked for; the other is the parent's histogram minus it (scikit-learn's subtraction
        trick), which halves the bytes of every level but the root's.
        """
        return [n for n in self._pending if n not in self._derived]

    def done(self) -> bool:
        return not self._pending and not self._heap

    def add_histograms(self, node_ids: list[int], histograms: np.ndarray) -> None:
        """Record the pooled histograms of the :meth:`pending` nodes and queue the best
        splits of every node waiting for one (the asked and the derived).

        Parameters
        ----------
        node_ids : list of int
            :meth:`pending`.
        histograms : ndarray of shape (len(node_ids), n_features, n_bins, 3)
        """
        if not self.nodes:  # the root: its sums are any feature's histogram total
            sums = histograms[0, 0].sum(axis=0)
            self.nodes.append(_Node(0, float(sums[0]), float(sums[1]), float(sums[2])))
        received = dict(zip(node_ids, histograms, strict=True))
        for node_id, (sibling, parent) in self._derived.items():
            received[node_id] = parent - received[sibling]
        self._derived.clear()
        node_ids = sorted(received)
        histograms = np.stack([received[n] for n in node_ids])
        gain, feature, bin_ = best_splits(histograms, self.l2_regularization, self.min_samples_leaf)
        for i, node_id in enumerate(node_ids):
            node = self.nodes[node_id]
            if self._splittable(node) and gain[i] > 0:
                # heapq pops the smallest: negate the gain; node id breaks ties as
                # scikit-learn's creation order does.
                entry = (-float(gain[i]), node_id, int(feature[i]), int(bin_[i]))
                heapq.heappush(self._heap, entry)
                self._histograms[node_id] = histograms[i]
        self._pending = []

    def _splittable(self, node: _Node) -> bool:
        if self.max_depth is not None and node.depth >= self.max_depth:
            return False
        return node.count >= 2 * self.min_samples_leaf

    def next_splits(self) -> list[Split]:
        """Pop the splits of this round and create their children (pending from now)."""
        if self.max_leaf_nodes is None:
            chosen = [heapq.heappop(self._heap) for _ in range(len(self._heap))]
            chosen.sort(key=lambda item: item[1])
        else:
            chosen = [heapq.heappop(self._heap)] if self._heap else []
        splits = []
        for _, node_id, feature, bin_ in chosen:
            parent = self.nodes[node_id]
            parent_histogram = self._histograms.pop(node_id)
            left_sums = parent_histogram[feature, : bin_ + 1].sum(axis=0)
            total = np.array([parent.gradient, parent.hessian, parent.count])
            right_sums = total - left_sums
            ids = []
            for sums in (left_sums, right_sums):
                child = _Node(parent.depth + 1, float(sums[0]), float(sums[1]), float(sums[2]))
                self.nodes.append(child)
                ids.append(len(self.nodes) - 1)
            parent.feature, parent.bin, parent.left, parent.right = feature, bin_, ids[0], ids[1]
            self._leaves += 1
            splits.append(Split(node_id, feature, bin_, ids[0], ids[1]))
            waiting = [c for c in ids if self._splittable(self.nodes[c])]
            self._pending.extend(waiting)
            if len(waiting) == 2:
                # ask for the smaller child (fewer rows to histogram), derive the larger
                small, large = sorted(ids, key=lambda c: (self.nodes[c].count, c))
                self._derived[large] = (small, parent_histogram)
        if self.max_leaf_nodes is not None and self._leaves >= self.max_leaf_nodes:
            self._heap.clear()  # scikit-learn finalizes every remaining node as a leaf
            self._pending.clear()
            self._histograms.clear()
            self._derived.clear()
        return splits

    def arrays(self) -> dict[str, np.ndarray]:
        """The finished tree: ``feature``, ``bin``, ``left``, ``right`` (int64, -1 at
        leaves) and ``value`` (float64, the shrunk leaf value; 0 at internal nodes), each of
        shape (n_nodes,)."""
        lam = self.l2_regularization
        value = [
            -self.learning_rate * n.gradient / (n.hessian + lam + 1e-15) if n.left < 0 else 0.0
            for n in self.nodes
        ]
        return {
            "feature": np.array([n.feature for n in self.nodes], dtype=np.int64),
            "bin": np.array([n.bin for n in self.nodes], dtype=np.int64),
            "left": np.array([n.left for n in self.nodes], dtype=np.int64),
            "right": np.array([n.right for n in self.nodes], dtype=np.int64),
            "value": np.array(value, dtype=np.float64),
        }
