"""Local training shared by every neural package: one mini-batch SGD loop.

``ffnet``, the ``glm`` package's ``sgd`` solver and every later neural package train on a
client through :func:`train_local`, so FedProx's proximal term (and differential privacy)
live in one place instead of one copy per package.
"""

from __future__ import annotations

from fedsilo.training.sgd import LocalTrainingResult, shuffle_seed, train_local

__all__ = ["LocalTrainingResult", "shuffle_seed", "train_local"]
