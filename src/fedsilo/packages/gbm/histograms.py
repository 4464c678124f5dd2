"""Gradient/hessian histograms of a silo's rows per frontier node, feature and bin.

This is all a client sends while a tree grows: for node ``i``, feature ``j`` and bin ``b``
the sums ``G = sum g``, ``H = sum h`` and the row count over the rows of node ``i`` whose
feature ``j`` falls in bin ``b``. Sums over silos are the pooled histograms, so the server
sees exactly what a centralized histogram GBM sees (scikit-learn's ``histogram.pyx``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HISTOGRAM_FIELDS", "node_histograms"]

#: the last axis of a histogram array: gradient sum, hessian sum, row count
HISTOGRAM_FIELDS = ("gradient", "hessian", "count")


def node_histograms(
    binned: np.ndarray,
    gradients: np.ndarray,
    hessians: np.ndarray,
    node_of_row: np.ndarray,
    nodes: np.ndarray,
    n_bins: int,
) -> np.ndarray:
    """Histograms of the requested nodes.

    Parameters
    ----------
    binned : ndarray of shape (n_samples, n_features), uint8
    gradients, hessians : ndarray of shape (n_samples,)
    node_of_row : ndarray of shape (n_samples,), int
        The node each row sits in.
    nodes : ndarray of shape (n_nodes,), int
        The node ids to histogram, in the order of the result.
    n_bins : int
        Bins per feature in the result (the largest bin count of any feature).

    Returns
    -------
    ndarray of shape (n_nodes, n_features, n_bins, 3)
        ``[..., 0]`` gradient sums, ``[..., 1]`` hessian sums, ``[..., 2]`` row counts.
    """
    n_nodes, n_features = nodes.size, binned.shape[1]
    result = np.zeros((n_nodes, n_features, n_bins, 3))
    if n_nodes == 0 or binned.shape[0] == 0:
        return result
    position = np.full(int(max(node_of_row.max(), nodes.max())) + 1, -1, dtype=np.int64)
    position[nodes] = np.arange(n_nodes)
    row_position = position[node_of_row]
    rows = np.flatnonzero(row_position >= 0)
    if rows.size == 0:
        return result
    # One flat index per (row, feature): a single bincount per statistic instead of a loop
    # over nodes and features.
    cell = (row_position[rows, None] * n_features + np.arange(n_features)) * n_bins
    flat = (cell + binned[rows]).ravel()
    size = n_nodes * n_features * n_bins
    shape = (n_nodes, n_features, n_bins)
    result[..., 0] = np.bincount(flat, np.repeat(gradients[rows], n_features), size).reshape(shape)
    result[..., 1] = np.bincount(flat, np.repeat(hessians[rows], n_features), size).reshape(shape)
    result[..., 2] = np.bincount(flat, minlength=size).reshape(shape)
    return result
