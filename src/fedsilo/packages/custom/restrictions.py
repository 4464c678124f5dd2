"""The seed's restrictions on custom modules under differential privacy, as clear errors.

DP-SGD clips each row's gradient, which Opacus computes from each layer's activations; a
layer whose output for one row depends on the other rows of the batch (BatchNorm) has no
per-row gradient, and some layers (``torch.nn.LSTM``) have no per-row gradient rule in
Opacus and must be replaced by their DP equivalent (``opacus.layers.DPLSTM``). Opacus's own
validator finds the rest; each problem names the submodule and its replacement.
"""

from __future__ import annotations

from opacus.validators import ModuleValidator  # type: ignore[import-untyped]
from torch import nn

from fedsilo.errors import ConfigError

__all__ = ["check_private_module"]

_REPLACEMENTS: tuple[tuple[tuple[type[nn.Module], ...], str], ...] = (
    (
        (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
        "BatchNorm mixes the rows of a batch, so it has no per-row gradient; replace it with "
        "torch.nn.GroupNorm (or LayerNorm / InstanceNorm)",
    ),
    (
        (nn.LSTM,),
        "torch.nn.LSTM has no per-row gradient in Opacus; replace it with "
        "opacus.layers.DPLSTM (same arguments)",
    ),
    (
        (nn.GRU, nn.RNN),
        "torch.nn.GRU / RNN have no per-row gradient in Opacus; replace them with "
        "opacus.layers.DPGRU / DPRNN",
    ),
)


def check_private_module(module: nn.Module, class_name: str) -> None:
    """Refuse a module that cannot train under DP-SGD, naming each offending submodule.

    Raises
    ------
    ConfigError
        Listing every submodule (by its attribute path) and what to use instead.
    """
    problems: list[str] = []
    for path, sub in module.named_modules():
        for types, advice in _REPLACEMENTS:
            if isinstance(sub, types):
                problems.append(f"{path or class_name} ({type(sub).__name__}): {advice}")
    if not problems:
        problems += [str(error) for error in ModuleValidator.validate(module, strict=False)]
    if problems:
        raise ConfigError(
            f"model.py: {class_name} cannot train under differential_privacy_params (DP-SGD "
            f"via Opacus): {'; '.join(problems)}."
        )
