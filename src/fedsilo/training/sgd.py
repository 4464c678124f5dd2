"""The local mini-batch loop every neural package runs on a client.

One epoch shuffles the training rows (or takes the rows ``epoch_rows`` picks, e.g. a class-
balanced undersample), cuts them into consecutive batches of ``batch_size`` rows (the last
one may be smaller) and takes one optimizer step per batch::

    g_t   = grad of loss_fn(module(x[batch]), y[batch]) at w_t  +  mu * (w_t - w_global)
    w_t+1 = optimizer step with g_t

The optimizer is the model_config's ``optimizer`` (any ``torch.optim`` optimizer, built by
:func:`fedsilo.training.build_optimizer`, its state fresh each round) or plain SGD from
``learning_rate`` and ``momentum``; SGD runs as :class:`fedsilo.training.optimizers.PlainSGD`,
torch's update step for step without ``torch.optim`` (whose first use imports
``torch._dynamo``: 1.5 s and 70 MB per client). Every step goes through a closure that
recomputes the batch's gradient, which LBFGS calls as often as its line search needs.

The second term is FedProx's proximal term (Li et al. 2020, https://arxiv.org/abs/1812.06127):
the gradient of ``(mu / 2) * ||w - w_global||^2``, where ``w_global`` are the weights the round
started from. It is added to the gradient after ``backward`` rather than to the loss, because
it does not depend on the data: a privacy mechanism that clips and noises the per-example data
gradients must leave it out of the clipping (and it costs no privacy budget). With
``proximal_mu = 0`` (the default) the loop is plain SGD and computes nothing extra.

With ``privacy=`` (a :class:`fedsilo.privacy.DPSGDPlan`) the same loop runs DP-SGD through
Opacus instead (:class:`fedsilo.privacy.dpsgd.PrivateSGD`): each step trains on a Poisson
sample of the rows at the plan's rate, clips every row's gradient to ``max_grad_norm``, adds
Gaussian noise and divides by the expected batch size; the proximal term and the
``regularizer`` (data-free terms) are added after the noise. Shuffles and ``batch_size`` are
then the plan's business, and the randomness comes from ``privacy_generator``, never from
the session seed (see :mod:`fedsilo.privacy.dpsgd` for what ``loss_fn`` must satisfy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fedsilo.config import OptimizerConfig
from fedsilo.errors import ConfigError
from fedsilo.training.optimizers import PlainSGD, build_optimizer, plain_sgd

if TYPE_CHECKING:
    from fedsilo.privacy.accounting import DPSGDPlan

__all__ = ["LocalTrainingResult", "shuffle_seed", "train_local"]

#: ``loss_fn(outputs, targets) -> scalar``: the mean loss of one batch
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``epoch_rows(generator) -> row indices``: the rows of one epoch, in the order to visit them
EpochRows = Callable[[torch.Generator], torch.Tensor]
#: ``regularizer() -> scalar``: a data-free term of the objective (e.g. a penalty)
Regularizer = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class LocalTrainingResult:
    """What a round of local training reports back to the server.

    Attributes
    ----------
    num_examples : int
        Rows visited in the last epoch (the training set, or the balanced sample); the
        weight of this client's model in the server's average.
    train_loss : float
        Mean of ``loss_fn`` over the rows of the last epoch, each batch's loss taken at the
        weights before its step (the proximal term is not included). NaN for an empty epoch.
    steps : int
        Optimizer steps taken over all epochs.
    """

    num_examples: int
    train_loss: float
    steps: int


def train_local(
    module: nn.Module,
    loss_fn: LossFunction,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    learning_rate: float | None = None,
    momentum: float = 0.0,
    optimizer: OptimizerConfig | None = None,
    epoch_rows: EpochRows | None = None,
    proximal_mu: float = 0.0,
    regularizer: Regularizer | None = None,
    privacy: DPSGDPlan | None = None,
    privacy_generator: torch.Generator | None = None,
) -> LocalTrainingResult:
    """Train ``module`` in place with mini-batch SGD for ``epochs`` epochs.

    Parameters
    ----------
    module : torch.nn.Module
        Holds the starting weights (the round's global model) and is updated in place.
    loss_fn : callable
        ``loss_fn(module(x[rows]), y[rows])`` returns the mean loss of a batch as a scalar
        tensor (e.g. ``nn.CrossEntropyLoss()``).
    x : torch.Tensor of shape (n_samples, ...)
        The inputs, indexed by row.
    y : torch.Tensor of shape (n_samples, ...)
        The targets, indexed like ``x``; they may carry extra columns ``loss_fn`` reads
        (an offset, a sample weight).
    epochs : int >= 1
    batch_size : int >= 1
    generator : torch.Generator
        The only source of randomness (the shuffles); seed it from the session seed and the
        round so a repeated round sees the same batches.
    learning_rate : float >= 0, optional
        With ``momentum``, shorthand for ``torch.optim.SGD``; give it or ``optimizer``.
    momentum : float >= 0, default 0.0
        ``torch.optim.SGD``'s momentum; the buffer starts at zero each call (each round).
    optimizer : OptimizerConfig, optional
        The model_config's ``optimizer`` section: any ``torch.optim`` optimizer
        (:func:`fedsilo.training.build_optimizer`), its state fresh each call (each round).
        LBFGS steps through a closure that re-evaluates the batch loss.
    epoch_rows : callable, optional
        ``epoch_rows(generator)`` returns a 1-D int64 tensor of the row indices of one epoch
        in visiting order. Default: a random permutation of all ``n_samples`` rows.
    proximal_mu : float >= 0, default 0.0
        FedProx's ``mu``: adds ``mu * (w - w_start)`` to every gradient (see the module
        docstring).
    regularizer : callable, optional
        ``regularizer()`` returns a data-free scalar added to every batch's loss (a penalty
        on the weights); not part of the reported ``train_loss``.
    privacy : DPSGDPlan, optional
        Train with DP-SGD under this plan (see the module docstring). ``epochs`` must equal
        ``privacy.local_epochs`` and ``x`` hold ``privacy.n_rows`` rows; ``batch_size``,
        ``generator`` and ``epoch_rows`` are not used (``epoch_rows`` must be None).
    privacy_generator : torch.Generator, optional
        Source of the Poisson samples and the noise under ``privacy``. Default: a fresh
        generator seeded from the OS. Pass one only in tests; never seed it from anything
        the server or another silo knows.

    Returns
    -------
    LocalTrainingResult

    Raises
    ------
    ConfigError
        When a number is out of range, neither or both of ``learning_rate`` and
        ``optimizer`` are given, ``x`` and ``y`` have different numbers of rows, or the
        data, ``epochs``, ``epoch_rows`` or ``optimizer`` do not fit the ``privacy`` plan.
    """
    if (learning_rate is None) == (optimizer is None):
        raise ConfigError(
            "train_local takes either learning_rate (and momentum: plain SGD) or optimizer "
            "(a model_config optimizer section), not "
            + ("both." if optimizer is not None else "neither.")
        )
    _check(
        0.0 if learning_rate is None else learning_rate, epochs, batch_size, momentum, proximal_mu
    )
    if x.shape[0] != y.shape[0]:
        raise ConfigError(
            f"x and y of train_local must have the same number of rows. "
            f"Got {x.shape[0]} and {y.shape[0]}."
        )
    parameters = [p for p in module.parameters() if p.requires_grad]
    if (
        privacy is not None
        and optimizer is not None
        and (problem := optimizer.privacy_problem()) is not None
    ):
        raise ConfigError(f"optimizer {optimizer.name} cannot train under DP-SGD: {problem}.")
    step = _optimizer(parameters, learning_rate, momentum, optimizer, private=privacy is not None)
    # The global weights, the FedProx anchor: a detached copy, since the parameters move.
    anchor = [p.detach().clone() for p in parameters] if proximal_mu > 0 else []
    module.train()
    if privacy is not None:
        assert isinstance(step, torch.optim.Optimizer)  # Opacus wraps a torch.optim one
        return _train_private(
            module,
            loss_fn,
            x,
            y,
            step,
            epochs=epochs,
            plan=privacy,
            generator=privacy_generator,
            epoch_rows=epoch_rows,
            data_free=lambda: _add_data_free_gradients(
                parameters, anchor, proximal_mu, regularizer
            ),
        )
    train_loss = math.nan
    num_examples = 0
    steps = 0
    for _ in range(epochs):
        order = (
            epoch_rows(generator)
            if epoch_rows is not None
            else torch.randperm(int(x.shape[0]), generator=generator)
        )
        num_examples = int(order.numel())
        loss_sum = 0.0
        for rows in torch.split(order, batch_size):
            batch = _Batch(module, loss_fn, x[rows], y[rows], regularizer)
            batch.proximal(parameters, anchor, proximal_mu)
            # Through a closure for every optimizer: LBFGS calls it many times per step, the
            # others once, so one loop serves both.
            step.step(batch.objective)
            steps += 1
            loss_sum += batch.first_loss * int(rows.numel())
        train_loss = loss_sum / num_examples if num_examples else math.nan
    return LocalTrainingResult(num_examples=num_examples, train_loss=train_loss, steps=steps)


def _train_private(
    module: nn.Module,
    loss_fn: LossFunction,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    plan: DPSGDPlan,
    generator: torch.Generator | None,
    epoch_rows: EpochRows | None,
    data_free: Callable[[], None],
) -> LocalTrainingResult:
    """The DP-SGD variant of the loop (see the module docstring)."""
    from fedsilo.privacy.dpsgd import PrivateSGD
    from fedsilo.privacy.mechanisms import secure_torch_generator

    if epoch_rows is not None:
        raise ConfigError(
            "train_local cannot combine epoch_rows with privacy: DP-SGD samples every row "
            "with the same probability, which its accounting relies on."
        )
    if epochs != plan.local_epochs:
        raise ConfigError(
            f"The DP-SGD plan was made for {plan.local_epochs} local epoch(s) per round; "
            f"train_local was asked for {epochs}."
        )
    train_loss = math.nan
    steps = 0
    with PrivateSGD(
        module, optimizer, plan, int(x.shape[0]), generator or secure_torch_generator()
    ) as private:
        for _ in range(epochs):
            loss_sum = 0.0
            seen = 0
            for rows in private.epoch_batches():
                private.optimizer.zero_grad(set_to_none=True)
                loss = private.batch_loss(loss_fn, x, y, rows)
                torch.autograd.backward(loss)
                private.step(after_noise=data_free)
                steps += 1
                loss_sum += float(loss.item()) * int(rows.numel())
                seen += int(rows.numel())
            train_loss = loss_sum / seen if seen else math.nan
    # Every row is in each epoch in expectation; the realised batch sizes are left out.
    return LocalTrainingResult(num_examples=plan.n_rows, train_loss=train_loss, steps=steps)


def _optimizer(
    parameters: list[nn.Parameter],
    learning_rate: float | None,
    momentum: float,
    optimizer: OptimizerConfig | None,
    *,
    private: bool,
) -> torch.optim.Optimizer | PlainSGD:
    """The round's optimizer, fresh: SGD as :class:`PlainSGD` (the same steps without
    torch.optim's imports) unless DP-SGD needs a ``torch.optim`` one to wrap."""
    if optimizer is None:
        assert learning_rate is not None  # checked by the caller
        if not private:
            plain = plain_sgd({"lr": learning_rate, "momentum": momentum}, parameters)
            if plain is not None:
                return plain
        return torch.optim.SGD(parameters, lr=learning_rate, momentum=momentum)
    if optimizer.name == "SGD" and not private:
        plain = plain_sgd(optimizer.params.torch_arguments(), parameters)
        if plain is not None:
            return plain
    return build_optimizer(optimizer, parameters)


class _Batch:
    """One batch's objective as a closure for ``Optimizer.step``.

    Each call clears the gradients, recomputes those of ``loss + regularizer`` at the
    current weights and adds the proximal pull; it returns the full objective (what LBFGS's
    line search compares) and keeps the data loss of its first call, at the weights before
    the step.
    """

    def __init__(
        self,
        module: nn.Module,
        loss_fn: LossFunction,
        x: torch.Tensor,
        y: torch.Tensor,
        regularizer: Regularizer | None,
    ) -> None:
        self.module, self.loss_fn, self.x, self.y = module, loss_fn, x, y
        self.regularizer = regularizer
        self.parameters: list[nn.Parameter] = []
        self.anchor: list[torch.Tensor] = []
        self.mu = 0.0
        self.first_loss = math.nan
        self.calls = 0

    def proximal(
        self, parameters: list[nn.Parameter], anchor: list[torch.Tensor], mu: float
    ) -> None:
        """Pull ``parameters`` toward ``anchor`` with FedProx's ``mu`` (none if empty)."""
        self.parameters, self.anchor, self.mu = parameters, anchor, mu

    def objective(self) -> float:
        for param in self.module.parameters():
            param.grad = None
        loss = self.loss_fn(self.module(self.x), self.y)
        total = loss + self.regularizer() if self.regularizer is not None else loss
        # torch.autograd.backward: Tensor.backward is untyped in torch's stubs.
        torch.autograd.backward(total)
        value = float(total.item())
        if self.anchor:
            _add_proximal_gradient(self.parameters, self.anchor, self.mu)
            value += _proximal_value(self.parameters, self.anchor, self.mu)
        if not self.calls:
            self.first_loss = float(loss.item())
        self.calls += 1
        return value


@torch.no_grad()
def _proximal_value(parameters: list[nn.Parameter], anchor: list[torch.Tensor], mu: float) -> float:
    return (
        0.5 * mu * sum(float((p - a).pow(2).sum()) for p, a in zip(parameters, anchor, strict=True))
    )


def _add_data_free_gradients(
    parameters: list[nn.Parameter],
    anchor: list[torch.Tensor],
    mu: float,
    regularizer: Regularizer | None,
) -> None:
    if anchor:
        _add_proximal_gradient(parameters, anchor, mu)
    if regularizer is not None:
        grads = torch.autograd.grad(regularizer(), parameters, allow_unused=True)
        with torch.no_grad():
            for param, grad in zip(parameters, grads, strict=True):
                if grad is None:
                    continue
                if param.grad is None:
                    param.grad = grad.detach().clone()
                else:
                    param.grad.add_(grad)


@torch.no_grad()
def _add_proximal_gradient(
    parameters: list[nn.Parameter], anchor: list[torch.Tensor], mu: float
) -> None:
    # d/dw (mu/2) ||w - w0||^2 = mu (w - w0). A parameter the loss did not reach still
    # feels the pull back to w0, as it would if the term were part of the loss.
    for param, start in zip(parameters, anchor, strict=True):
        pull = (param - start).mul_(mu)
        if param.grad is None:
            param.grad = pull
        else:
            param.grad.add_(pull)


def _check(
    learning_rate: float, epochs: int, batch_size: int, momentum: float, proximal_mu: float
) -> None:
    for name, value in (
        ("learning_rate", learning_rate),
        ("momentum", momentum),
        ("proximal_mu", proximal_mu),
    ):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"The {name!r} parameter of train_local must be >= 0. Got {value}.")
    for name, count in (("epochs", epochs), ("batch_size", batch_size)):
        if count < 1:
            raise ConfigError(f"The {name!r} parameter of train_local must be >= 1. Got {count}.")


def shuffle_seed(seed: int, server_round: int) -> int:
    """The seed of a round's shuffles: a fixed mix of the config seed and the round.

    Deterministic across processes (unlike ``hash``), so a round redone after a restart
    sees the same batches.
    """
    return int(np.random.SeedSequence([seed, server_round]).generate_state(1)[0])
