"""Build the ``torch.optim`` optimizer a model_config's ``optimizer`` section names.

The config (:class:`fedsilo.config.OptimizerConfig`) was validated without torch, against a
static table of the optimizers' parameters; here, on the client, the class is looked up in
``torch.optim`` and constructed with the parameters the user gave (the others keep torch's
defaults). torch's own constructor checks still run: a value the table's ranges let
through but torch refuses (Rprop's ``etas`` must satisfy ``0 < etaminus < 1 < etaplus``)
is a :class:`~fedsilo.errors.ConfigError` naming the optimizer.

SGD (the demo's optimizer, and the ``learning_rate`` shorthand of
:func:`fedsilo.training.train_local`) is :class:`PlainSGD` instead: torch's CPU update, op
for op, without ``torch.optim``. Every ``torch.optim`` optimizer imports ``torch._dynamo``
on its first use (constructor and ``step`` are wrapped to opt out of compilation), which
is 1.5 s and 70 MB per client process: the first round of ten clients on two cores took
6 s for a step of a millisecond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from fedsilo.config import OptimizerConfig
from fedsilo.errors import ConfigError

__all__ = ["PlainSGD", "build_optimizer", "plain_sgd"]

#: the SGD arguments :class:`PlainSGD` implements (torch.optim.SGD's, but for foreach/fused/
#: differentiable, which select other kernels)
_PLAIN_ARGUMENTS = frozenset(
    {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"}
)


def build_optimizer(
    config: OptimizerConfig, parameters: Iterable[nn.Parameter]
) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``config`` names, over ``parameters``.

    Parameters
    ----------
    config : OptimizerConfig
        A validated ``optimizer`` section (name normalised to the torch class name).
    parameters : iterable of torch.nn.Parameter
        The trainable parameters.

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ConfigError
        When torch refuses a parameter value.
    """
    cls = getattr(torch.optim, config.name)
    arguments = config.params.torch_arguments()
    try:
        optimizer: torch.optim.Optimizer = cls(list(parameters), **arguments)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"torch.optim.{config.name} refused model_config optimizer.params {arguments}: {exc}"
        ) from exc
    return optimizer


class PlainSGD:
    """``torch.optim.SGD`` on CPU tensors, bit for bit, without importing ``torch.optim``'s
    compilation machinery.

    The update is torch's single-tensor one (the kernel torch picks for CPU parameters)::

        g = grad (negated when maximize) + weight_decay * w
        b = g at the first step, else momentum * b + (1 - dampening) * g   (momentum > 0)
        g = g + momentum * b when nesterov, else b                          (momentum > 0)
        w = w - lr * g

    with the momentum buffers starting empty, as a fresh ``torch.optim.SGD`` does. Build it
    with :func:`plain_sgd`, which checks the arguments as torch does.
    """

    def __init__(
        self,
        parameters: Iterable[torch.Tensor],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        self.parameters = list(parameters)
        self.lr, self.momentum, self.dampening = float(lr), float(momentum), float(dampening)
        self.weight_decay, self.nesterov, self.maximize = float(weight_decay), nesterov, maximize
        self._buffers: list[torch.Tensor | None] = [None] * len(self.parameters)

    def step(self, closure: Callable[[], float]) -> float:
        """Evaluate ``closure`` (it sets the gradients), then update every parameter with a
        gradient; returns the closure's value, as ``Optimizer.step`` does."""
        with torch.enable_grad():
            loss = closure()
        with torch.no_grad():
            for i, param in enumerate(self.parameters):
                if param.grad is not None:
                    self._update(i, param, param.grad)
        return loss

    def _update(self, i: int, param: torch.Tensor, grad: torch.Tensor) -> None:
        if self.maximize:
            grad = -grad
        if self.weight_decay != 0:
            grad = grad.add(param, alpha=self.weight_decay)
        if self.momentum != 0:
            buffer = self._buffers[i]
            if buffer is None:
                buffer = self._buffers[i] = grad.detach().clone()
            else:
                buffer.mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
            grad = grad.add(buffer, alpha=self.momentum) if self.nesterov else buffer
        param.add_(grad, alpha=-self.lr)


def plain_sgd(arguments: dict[str, Any], parameters: list[nn.Parameter]) -> PlainSGD | None:
    """A :class:`PlainSGD` for ``torch.optim.SGD(parameters, **arguments)``, or None when
    it would not be the same optimizer (another argument, a non-CPU or sparse parameter,
    or a value torch refuses, whose error :func:`build_optimizer` then reports).
    """
    if not set(arguments) <= _PLAIN_ARGUMENTS:
        return None
    if any(p.device.type != "cpu" or p.is_sparse for p in parameters):
        return None
    values = {"lr": 0.001, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0}
    flags = {"nesterov": False, "maximize": False}
    for key, value in arguments.items():
        if key in flags:
            if not isinstance(value, bool):
                return None
            flags[key] = value
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return None
        else:
            values[key] = float(value)
    if any(not math.isfinite(v) for v in values.values()):
        return None
    if values["lr"] < 0 or values["momentum"] < 0 or values["weight_decay"] < 0:
        return None
    if flags["nesterov"] and (values["momentum"] <= 0 or values["dampening"] != 0):
        return None
    return PlainSGD(
        parameters,
        lr=values["lr"],
        momentum=values["momentum"],
        dampening=values["dampening"],
        weight_decay=values["weight_decay"],
        nesterov=flags["nesterov"],
        maximize=flags["maximize"],
    )
