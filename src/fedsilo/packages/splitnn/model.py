"""The split network's parts, the shared mini-batch order, the loss and the metrics.

A split network is one bottom network per client with predictors (its *feature model*)
and a top network at the label client (the *label model*) reading the bottom outputs side
by side, in the data_config's client order::

    z = label_model(concat(feature_model_k(x_k) for k in featured clients))

Each part is a stack of ``Linear`` layers with the activation after each hidden layer; a
feature model also ends in the activation (its output is an embedding, not a score), the
label model does not (logits or a regression value).

Every part is initialised from ``(seed, part name)`` alone (:func:`part_seed`), so the
parties build their parts independently and :class:`SplitNetwork` -- the same network in
one process, the reference the tests and the bench train centrally -- builds identical
ones. The mini-batches of round ``r`` are a permutation of the aligned rows drawn from
``(seed, r)`` (:func:`batches`), which every party computes alike.
"""

from __future__ import annotations

import itertools
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from fedsilo.packages.splitnn.config import (
    TASK_METRICS,
    MLTask,
    SplitnnDataConfig,
    SplitnnModelConfig,
)

__all__ = [
    "LABEL_PART",
    "SplitNetwork",
    "batches",
    "build_feature_model",
    "build_label_model",
    "label_loss",
    "part_seed",
    "task_metrics",
]

#: the name the label model is seeded and stored under
LABEL_PART = "label_model"

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
_GAINS: dict[str, Literal["relu", "leaky_relu", "tanh", "sigmoid"]] = {
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "elu": "relu",
    "gelu": "relu",
}


def part_seed(seed: int, part: str) -> int:
    """The torch seed of one part: the session's seed and the part's name (CRC-32), so no
    two parts of a network start alike and no party needs another's draw."""
    return (seed * 2_654_435_761 + zlib.crc32(part.encode())) % 2**63


def _stack(sizes: Sequence[int], activation: str, last_activation: bool, seed: int) -> nn.Module:
    act = _ACTIVATIONS[activation]
    # A generator of the part's own, not torch's global RNG: parties in one process (tests,
    # simulations) build their parts in parallel threads, and a global seed would race.
    generator = torch.Generator().manual_seed(seed)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (width, size) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(width, size)
        activated = i < len(sizes) - 2 or last_activation
        # Kaiming for a layer feeding an activation (keeps the embedding's scale), Xavier for
        # the label model's output layer; every weight is drawn here, every bias zero.
        with torch.no_grad():
            if activated:
                nn.init.kaiming_uniform_(
                    linear.weight, nonlinearity=_GAINS[activation], generator=generator
                )
            else:
                nn.init.xavier_uniform_(linear.weight, generator=generator)
            nn.init.zeros_(linear.bias)
        layers[f"layer{i}"] = linear
        if activated:
            layers[f"act{i}"] = act()
    module = nn.Sequential(layers)
    return module


def build_feature_model(model_config: SplitnnModelConfig, client_name: str) -> nn.Module:
    """The feature model of ``client_name``: (n, input_size) -> (n, output_size)."""
    params = model_config.split.feature_models[client_name].params
    sizes = [params.input_size, *params.hidden_layer_sizes, params.output_size]
    return _stack(sizes, params.hidden_activation, True, part_seed(model_config.seed, client_name))


def build_label_model(model_config: SplitnnModelConfig) -> nn.Module:
    """The label model: (n, sum of feature outputs) -> (n, output_size)."""
    split = model_config.split
    width = sum(m.params.output_size for m in split.feature_models.values())
    params = split.label_model.params
    sizes = [width, *params.hidden_layer_sizes, params.output_size]
    return _stack(sizes, params.hidden_activation, False, part_seed(model_config.seed, LABEL_PART))


def batches(n_rows: int, batch_size: int, seed: int, server_round: int) -> list[np.ndarray]:
    """The mini-batches of round ``server_round``: positions into the aligned order.

    Every party draws the same permutation from ``(seed, server_round)``, so batch ``b``
    holds the same people everywhere without a message about it.
    """
    order = np.random.default_rng([seed, server_round]).permutation(n_rows)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def label_loss(task: MLTask) -> nn.Module:
    """Mean cross-entropy (classification, with the class weights) or mean squared error."""
    if task.type == "regression":
        return nn.MSELoss()
    weights = task.params.loss_weights
    weight = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    return nn.CrossEntropyLoss(weight=weight)


def label_tensor(task: MLTask, values: np.ndarray) -> torch.Tensor:
    """Targets as the loss takes them: class indices (int64) or a (n, 1) float32 column."""
    if task.type == "regression":
        return torch.as_tensor(np.asarray(values, dtype=np.float32)).reshape(-1, 1)
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def task_metrics(task: MLTask, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``test_loss``, then ``test_accuracy`` and ``test_roc_auc`` (classification) or
    ``test_r2`` (regression), and ``test_num_examples``, of the label model's outputs.

    ROC AUC is binary on the second class's probability, one-vs-rest macro for more
    classes; left out when the test labels hold one class only.
    """
    from sklearn.metrics import r2_score, roc_auc_score

    loss = label_loss(task)
    with torch.no_grad():
        value = float(loss(torch.as_tensor(outputs), label_tensor(task, labels)))
    metrics: dict[str, float] = {"test_loss": value}
    if task.type == "classification":
        labels = np.asarray(labels, dtype=np.int64)
        metrics["test_accuracy"] = float(np.mean(outputs.argmax(axis=1) == labels))
        probabilities = torch.softmax(torch.as_tensor(outputs), dim=1).numpy()
        if len(np.unique(labels)) > 1:
            if outputs.shape[1] == 2:
                auc = roc_auc_score(labels, probabilities[:, 1])
            else:
                auc = roc_auc_score(
                    labels, probabilities, multi_class="ovr", labels=range(outputs.shape[1])
                )
            metrics["test_roc_auc"] = float(auc)
    else:
        metrics["test_r2"] = float(r2_score(np.asarray(labels, dtype=np.float64), outputs[:, 0]))
    assert set(TASK_METRICS[task.type]) >= {k.removeprefix("test_") for k in metrics}
    metrics["test_num_examples"] = float(len(labels))
    return metrics


class SplitNetwork(nn.Module):
    """The whole split network in one process (the central reference).

    Parameters
    ----------
    model_config : SplitnnModelConfig
    data_config : SplitnnDataConfig
        Its client order is the order the label model reads the embeddings.
    """

    def __init__(self, model_config: SplitnnModelConfig, data_config: SplitnnDataConfig):
        super().__init__()
        self.order = data_config.featured_clients
        self.feature_models = nn.ModuleDict(
            {name: build_feature_model(model_config, name) for name in self.order}
        )
        self.label_model = build_label_model(model_config)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``inputs[client]`` of shape (n, that client's predictors) -> (n, output_size)."""
        embeddings = [self.feature_models[name](inputs[name]) for name in self.order]
        return self.label_model(torch.cat(embeddings, dim=1))  # type: ignore[no-any-return]
