"""The model both systems train: logits = x @ W.T + b over 2 classes, mean cross-entropy, plain
minibatch SGD (fedsilo's ffnet with no hidden layer and torch.optim.SGD is the same model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load(data_dir: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(data_dir) / f"{name}.npz") as data:
        return data["x"].astype(np.float32), data["y"].astype(np.int64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit(
    w: np.ndarray,
    b: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    batch: int,
    epochs: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w, b = w.copy(), b.copy()
    onehot = np.eye(2, dtype=np.float32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            p = _softmax(x[idx] @ w.T + b)
            g = (p - onehot[idx]) / len(idx)  # d(mean CE)/d(logits)
            w -= lr * (g.T @ x[idx])
            b -= lr * g.sum(axis=0)
    return w, b


def evaluate(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = _softmax(x @ w.T + b)
    loss = float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())
    return loss, float((p.argmax(axis=1) == y).mean())
