"""Which sessions may turn on ``model_config["secure_aggregation"]``: one check for every package.

Secure aggregation (:mod:`fedsilo.privacy.secagg`, wired in :mod:`fedsilo.workflows.secure`)
hands the server the weighted *sum* of the clients' updates and nothing else. It therefore
fits a server that combines contributions by a (weighted) mean -- and nothing that needs one
client's contribution on its own: a median, a trimmed mean, a per-update clip, a split picked
from one silo's histogram. :func:`check_secure_aggregation` runs when a model_config is parsed
(:meth:`fedsilo.federation.ModelPackage.parse_model_config`: at session creation on the
server, and again on every client), so such a session is refused before it exists, naming
why, instead of failing in round 1 or -- worse -- silently sending individual updates.

Supported today: ffnet and glm's ``sgd`` solver, under the strategies of
:data:`SECURE_STRATEGIES` (the server optimizers step from the securely summed mean), and
glm's ``newton`` solver and linear_inference, whose gradient, Fisher matrix and deviance
sums are secure sums, and eda, whose counts, sums, sketch buckets and histograms are secure
sums (its results are then the pooled dataset only; with differential privacy it needs its
categorical columns declared, :data:`EDA_DP_REASON`).
Differential privacy is allowed for the model packages: DP-SGD clips and noises each
client's update locally, so masking the noised update loses nothing of its guarantee (and
hides the noised update too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from fedsilo.errors import ConfigError
from fedsilo.privacy.secagg import SecAggSpec
from fedsilo.strategies import canonical_strategy_name
from fedsilo.wire import format_validation_error

__all__ = [
    "EDA_DP_REASON",
    "SECURE_KEY",
    "SECURE_PACKAGES",
    "SECURE_STRATEGIES",
    "check_secure_aggregation",
    "check_threshold",
    "safe_minimum_threshold",
    "secure_spec",
]

#: the top-level model_config key
SECURE_KEY = "secure_aggregation"

#: packages whose server combines client contributions by a weighted mean on the round loop
SECURE_PACKAGES = frozenset({"eda", "ffnet", "glm", "linear_inference"})

#: why eda under secure aggregation and differential privacy needs its categorical columns
EDA_DP_REASON = (
    "with differential privacy eda detects categorical columns from each dataset's noisy "
    "distinct count, which does not add up across datasets and so cannot be securely "
    "summed; declare them (categorical: [...], [] for none) and every statistic is noised "
    "on the client before it is masked"
)

#: strategies that need only the weighted mean of the round's models (the server optimizers
#: take their pseudo-gradient from it)
SECURE_STRATEGIES = frozenset(
    {"FedAvg", "FedProx", "iter_avg", "FedAvgM", "FedOpt", "FedAdam", "FedAdagrad", "FedYogi"}
)

#: why a package refuses the flag (its server needs what the sum hides, or is not wired yet)
_PACKAGE_REASONS: dict[str, str] = {
    "gbm": (
        "gbm's server picks each split from the silos' gradient histograms, which are not "
        "yet securely summed"
    ),
    "echo": "echo's server returns each client's arrays, which is what the sum hides",
}

#: why a strategy refuses it
_STRATEGY_REASONS: dict[str, str] = {
    "FedMedian": "it takes the coordinate-wise median of the clients' models",
    "FedTrimmedAvg": "it trims the extreme clients' values coordinate by coordinate",
    "FedClippedAvg": "the server clips each client's update to clip_norm",
}


def secure_spec(model_raw: Mapping[str, Any]) -> SecAggSpec | None:
    """The session's ``secure_aggregation`` when enabled, else None.

    Raises
    ------
    ConfigError
        When the section is invalid (the message names the field and value).
    """
    raw = model_raw.get(SECURE_KEY)
    if raw is None:
        return None
    try:
        spec = SecAggSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"model_config {SECURE_KEY} is invalid: {format_validation_error(exc)}"
        ) from exc
    return spec if spec.enabled else None


def check_secure_aggregation(package_name: str, model_raw: Mapping[str, Any]) -> None:
    """Refuse ``secure_aggregation.enabled`` where the server needs individual contributions.

    Parameters
    ----------
    package_name : str
    model_raw : mapping
        The model_config as the user wrote it (checked before the package parses it, so a
        package without the key still says why it refuses it rather than "extra field").

    Raises
    ------
    ConfigError
        When the section is invalid, or enabled for a package, solver or strategy that
        cannot work on the sum alone; the message says why and what would work.
    """
    spec = secure_spec(model_raw)
    if spec is None:
        return
    allowed = "eda, ffnet, glm and linear_inference"
    if package_name == "eda":
        epsilon = model_raw.get("epsilon", 1.0)  # eda's default budget is 1.0
        if epsilon is not None and model_raw.get("categorical") is None:
            raise ConfigError(
                f"model_config {SECURE_KEY}.enabled with epsilon {epsilon!r} in package "
                f"'eda' needs model_config categorical: {EDA_DP_REASON}. Set categorical, "
                "set epsilon to null, or remove "
                f"{SECURE_KEY}."
            )
        return
    if package_name not in SECURE_PACKAGES:
        reason = _PACKAGE_REASONS.get(
            package_name, f"package {package_name!r} does not combine updates by a weighted mean"
        )
        raise ConfigError(
            f"model_config {SECURE_KEY}.enabled is not supported by package "
            f"{package_name!r}: {reason}. Secure aggregation works with {allowed}; remove "
            f"{SECURE_KEY} or set enabled to false."
        )
    if package_name == "glm" and model_raw.get("solver", "newton") != "sgd":
        # Newton sums every silo's statistics (securely); it uses no strategy.
        return
    strategy = model_raw.get("strategy")
    raw_name = strategy.get("name") if isinstance(strategy, Mapping) else None
    name = canonical_strategy_name(raw_name) if isinstance(raw_name, str) else "FedAvg"
    if name is None or name in SECURE_STRATEGIES:
        # An unknown name is the strategy parser's error, with the known names.
        return
    reason = _STRATEGY_REASONS.get(name, "it needs each client's model")
    raise ConfigError(
        f"model_config {SECURE_KEY}.enabled cannot be combined with strategy {name!r}: "
        f"{reason}, and under secure aggregation the server sees only the weighted sum of "
        f"the clients' models. Use one of {', '.join(sorted(SECURE_STRATEGIES))}."
    )


def safe_minimum_threshold(num_clients: int) -> int:
    """The smallest threshold safe for a round of ``num_clients``: a strict majority, and 2.

    With ``t <= n / 2`` the server could ask one half of the clients for a client's
    self-mask seed and the other half for its mask key -- both seeds, so its input in clear
    (SecAgg+, Bell et al. 2020: the threshold must exceed half the round's clients).
    """
    return max(2, num_clients // 2 + 1)


def check_threshold(model_raw: Mapping[str, Any], min_num_clients: int) -> None:
    """Hold an explicit ``secure_aggregation.threshold`` to the session's ``min_num_clients``.

    At session creation (the rounds' sizes are not known yet, but a session starts with at
    least ``min_num_clients``): the threshold must be at most ``min_num_clients`` -- a round
    of that many clients could never recover its sum otherwise -- and at least
    :func:`safe_minimum_threshold` of it. Secure aggregation also needs
    ``min_num_clients >= 2`` (the sum of one client is its input). Each round checks again
    against the clients it really has (:meth:`fedsilo.privacy.secagg.SecAggSpec.resolve_threshold`).

    Raises
    ------
    ConfigError
        Naming the field, what is expected and the value given.
    """
    spec = secure_spec(model_raw)
    if spec is None:
        return
    if min_num_clients < 2:
        raise ConfigError(
            f"min_num_clients must be at least 2 with model_config {SECURE_KEY}.enabled (the "
            f"sum of one client is that client's input). Got {min_num_clients}."
        )
    if spec.threshold is None:
        return
    low = safe_minimum_threshold(min_num_clients)
    if spec.threshold > min_num_clients:
        raise ConfigError(
            f"model_config {SECURE_KEY}.threshold must be at most min_num_clients "
            f"({min_num_clients}): a round of {min_num_clients} clients could never recover "
            f"its sum. Expected {low} <= threshold <= {min_num_clients}; got {spec.threshold}."
        )
    if spec.threshold < low:
        raise ConfigError(
            f"model_config {SECURE_KEY}.threshold must be a strict majority of "
            f"min_num_clients ({min_num_clients}) and at least 2, so the server cannot collect "
            f"both seeds of a client. Expected {low} <= threshold <= {min_num_clients}; got "
            f"{spec.threshold}."
        )
