"""DP-SGD through Opacus: Poisson-sampled batches, per-row clipping, Gaussian noise.

One private step (Abadi et al. 2016, as Opacus implements it)::

    B_t       = every row independently with probability q      (Poisson sampling)
    g_i       = grad of loss_i at w_t, for each i in B_t        (GradSampleModule)
    g~        = (sum_i g_i * min(1, C / |g_i|)  +  N(0, (z C)^2 I)) / (q n)      (DPOptimizer)
    w_t+1     = SGD step with g~ (+ data-free terms: FedProx pull, penalty)

``C = max_grad_norm``, ``z`` the plan's noise multiplier, ``q n`` the expected batch size.
Dividing by the *expected* rather than the actual batch size keeps the sensitivity of the
step at ``C / (q n)`` (the actual size depends on whether a row was sampled).

:class:`PrivateSGD` is what :func:`fedsilo.training.train_local` drives when called with
``privacy=``. It assembles the parts Opacus's ``PrivacyEngine.make_private`` would
(``GradSampleModule``, ``DPOptimizer``, the Poisson ``UniformWithReplacementSampler``) without
the engine itself: the engine carries its own per-process accountant (fedsilo's spans the
session and needs no state, :mod:`fedsilo.privacy.accounting`), wants a ``DataLoader``
(the loop indexes tensors), and without ``torchcsprng`` offers no secret-seeded generator.

Requirements on the loss, for the per-row gradients to be what the accounting assumes:
``loss_fn`` must return the *mean over the batch of per-row losses* that each depend on
their own row only -- no normalisation by batch statistics (``CrossEntropyLoss(weight=)``
divides by the batch's summed class weights: use per-row weights and ``.mean()``), and no
data-free terms (a penalty goes to ``train_local``'s ``regularizer``, whose gradient is added
after the noise: Opacus computes per-row gradients from the layers' activations, so a term
that bypasses the layers would be silently dropped).

Randomness: the Poisson samples and the noise come from one generator seeded from the OS
(:func:`fedsilo.privacy.mechanisms.secure_torch_generator`), never from the session seed.
The noise uses Opacus's ``secure_mode`` sampler (a sum of four Gaussians, robust to the
floating-point attacks on Gaussian noise); the generator is torch's Mersenne Twister, not a
cryptographic one (``torchcsprng`` is not available for torch 2.13).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from opacus import GradSampleModule  # type: ignore[import-untyped]
from opacus.optimizers import DPOptimizer  # type: ignore[import-untyped]
from opacus.utils.uniform_sampler import (  # type: ignore[import-untyped]
    UniformWithReplacementSampler,
)
from torch import nn

from fedsilo.errors import ConfigError
from fedsilo.privacy.accounting import DPSGDPlan

__all__ = ["PrivateSGD"]

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PrivateSGD:
    """A module and its optimizer made private for one round of DP-SGD.

    Use as a context manager: on exit Opacus's hooks are removed and ``module`` is a plain
    ``nn.Module`` again (with the trained weights), ready for the next round.

    Parameters
    ----------
    module : torch.nn.Module
        Trained in place. Every trainable layer must be one Opacus computes per-row
        gradients for (Linear, Conv, embeddings, ...; no BatchNorm).
    optimizer : torch.optim.Optimizer
        Over ``module``'s trainable parameters.
    plan : DPSGDPlan
        Made for this silo (``plan.n_rows`` rows).
    n_rows : int
        Rows of the training tensors; must equal ``plan.n_rows``.
    generator : torch.Generator
        Source of the Poisson samples and the noise (see the module docstring).

    Raises
    ------
    ConfigError
        When ``n_rows`` differs from the plan's (the plan would not hold for this data).
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        plan: DPSGDPlan,
        n_rows: int,
        generator: torch.Generator,
    ) -> None:
        if n_rows != plan.n_rows:
            raise ConfigError(
                f"The DP-SGD plan was made for {plan.n_rows} training rows, but the data has "
                f"{n_rows}; the privacy accounting would not hold."
            )
        self.plan = plan
        self.model = GradSampleModule(module, loss_reduction="mean")
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            expected_batch_size=plan.expected_batch_size,
            loss_reduction="mean",
            generator=generator,
            secure_mode=True,
        )
        self._sampler = UniformWithReplacementSampler(
            num_samples=n_rows,
            sample_rate=plan.sample_rate,
            generator=generator,
            steps=plan.steps_per_epoch,
        )

    def __enter__(self) -> PrivateSGD:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove Opacus's hooks and per-row gradient buffers from the module."""
        self.optimizer.zero_grad(set_to_none=True)
        self.model.to_standard_module()

    def epoch_batches(self) -> Iterator[torch.Tensor]:
        """The Poisson-sampled row indices of one epoch (``plan.steps_per_epoch`` batches).

        Yields
        ------
        torch.Tensor of shape (batch_rows,), int64
            Possibly empty: a step is taken (noise only) even then, as the analysis assumes.
        """
        for rows in self._sampler:
            yield torch.as_tensor(rows, dtype=torch.int64)

    def batch_loss(
        self, loss_fn: LossFunction, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """The forward pass of one batch through the per-row-gradient module.

        The inputs are marked as requiring gradients: with no input requiring one, torch's
        full backward hooks (which Opacus registers) warn on every backward pass.

        Returns
        -------
        torch.Tensor, scalar
            ``loss_fn`` of the batch; for an empty batch a zero that still runs the hooks, so
            every parameter gets an empty per-row gradient and the step adds noise alone.
        """
        inputs = x[rows].detach().requires_grad_(True)
        outputs: torch.Tensor = self.model(inputs)
        if rows.numel() == 0:
            return outputs.sum() * 0.0
        loss: torch.Tensor = loss_fn(outputs, y[rows])
        return loss

    def step(self, after_noise: Callable[[], None] | None = None) -> None:
        """Clip, noise and average the per-row gradients, then take the optimizer step.

        Parameters
        ----------
        after_noise : callable, optional
            Runs between the noise and the step, to add data-free gradient terms to each
            parameter's ``.grad`` (FedProx's pull, a penalty). They cost no privacy.
        """
        if self.optimizer.pre_step():
            if after_noise is not None:
                after_noise()
            self.optimizer.original_optimizer.step()
