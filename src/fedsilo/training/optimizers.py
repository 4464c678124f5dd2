"""Build the ``torch.optim`` optimizer a model_config's ``optimizer`` section names.

The config (:class:`fedsilo.config.OptimizerConfig`) was validated without torch, against a
static table of the optimizers' parameters; here, on the client, the class is looked up in
``torch.optim`` and constructed with the parameters the user gave (the others keep torch's
defaults). torch's own constructor checks still run: a value the table's ranges let
through but torch refuses (Rprop's ``etas`` must satisfy ``0 < etaminus < 1 < etaplus``)
is a :class:`~fedsilo.errors.ConfigError` naming the optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fedsilo.config import OptimizerConfig
from fedsilo.errors import ConfigError

__all__ = ["build_optimizer"]


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
