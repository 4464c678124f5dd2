"""Local training shared by every neural package: one mini-batch loop.

``ffnet``, the ``glm`` package's ``sgd`` solver and every later neural package train on a
client through :func:`train_local`, so FedProx's proximal term (and differential privacy)
live in one place instead of one copy per package. :func:`build_optimizer` turns a
model_config's ``optimizer`` section into the ``torch.optim`` optimizer it names;
:func:`limit_torch_threads` keeps a small model on one thread (``FEDSILO_TORCH_THREADS``).
"""

from __future__ import annotations

from fedsilo.training.optimizers import build_optimizer
from fedsilo.training.sgd import LocalTrainingResult, shuffle_seed, train_local
from fedsilo.training.threads import limit_torch_threads

__all__ = [
    "LocalTrainingResult",
    "build_optimizer",
    "limit_torch_threads",
    "shuffle_seed",
    "train_local",
]
