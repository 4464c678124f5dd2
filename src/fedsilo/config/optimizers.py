"""``optimizer``: any ``torch.optim`` optimizer by name, its parameters checked without torch.

The seed's configs name a PyTorch optimizer and its parameters::

    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}}

and its VFL section allows "any optimizer supported by PyTorch" (seed 002 writes
``optim.Adadelta``). The server validates model configs when a session is created but never
imports torch (it would cost ~400 MB per server), so the constructor parameters of every
``torch.optim`` optimizer are kept here as a static table, :data:`OPTIMIZER_DEFAULTS`; a unit
test compares it with ``inspect.signature`` of each ``torch.optim`` class, so a torch upgrade
that adds an optimizer or a parameter fails that test instead of drifting silently. The
client builds the optimizer with :func:`fedsilo.training.build_optimizer`.

Spellings: ``name`` is matched case-insensitively and may carry the ``torch.optim.`` or
``optim.`` prefix (``"optim.Adadelta"``, ``"adam"``); ``learning_rate`` (the seed's name) and
``lr`` (torch's) are the same parameter. An unknown parameter is an error naming the field,
the optimizer and the parameters it takes. Parameters left out take torch's defaults.

Not configurable: ``SparseAdam`` and ``Muon`` (see :data:`REFUSED_OPTIMIZERS`) and torch's
implementation switches (:data:`TORCH_SWITCHES`), which fedsilo leaves at their defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "OPTIMIZER_DEFAULTS",
    "REFUSED_OPTIMIZERS",
    "TORCH_SWITCHES",
    "OptimizerConfig",
    "OptimizerParams",
    "optimizer_names",
]

NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]

#: name -> {constructor parameter (torch's name): torch's default}, for every torch.optim
#: optimizer fedsilo trains with (torch 2.13; checked against torch by a unit test)
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "ASGD": {"lr": 0.01, "lambd": 0.0001, "alpha": 0.75, "t0": 1000000.0, "weight_decay": 0},
    "Adadelta": {"lr": 1.0, "rho": 0.9, "eps": 1e-06, "weight_decay": 0},
    "Adafactor": {
        "lr": 0.01,
        "beta2_decay": -0.8,
        "eps": (None, 0.001),
        "d": 1.0,
        "weight_decay": 0.0,
    },
    "Adagrad": {
        "lr": 0.01,
        "lr_decay": 0,
        "weight_decay": 0,
        "initial_accumulator_value": 0,
        "eps": 1e-10,
    },
    "Adam": {
        "lr": 0.001,
        "betas": (0.9, 0.999),
        "eps": 1e-08,
        "weight_decay": 0,
        "amsgrad": False,
        "decoupled_weight_decay": False,
    },
    "AdamW": {
        "lr": 0.001,
        "betas": (0.9, 0.999),
        "eps": 1e-08,
        "weight_decay": 0.01,
        "amsgrad": False,
    },
    "Adamax": {"lr": 0.002, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0},
    "LBFGS": {
        "lr": 1,
        "max_iter": 20,
        "max_eval": None,
        "tolerance_grad": 1e-07,
        "tolerance_change": 1e-09,
        "history_size": 100,
        "line_search_fn": None,
    },
    "NAdam": {
        "lr": 0.002,
        "betas": (0.9, 0.999),
        "eps": 1e-08,
        "weight_decay": 0,
        "momentum_decay": 0.004,
        "decoupled_weight_decay": False,
    },
    "RAdam": {
        "lr": 0.001,
        "betas": (0.9, 0.999),
        "eps": 1e-08,
        "weight_decay": 0,
        "decoupled_weight_decay": False,
    },
    "RMSprop": {
        "lr": 0.01,
        "alpha": 0.99,
        "eps": 1e-08,
        "weight_decay": 0,
        "momentum": 0,
        "centered": False,
    },
    "Rprop": {"lr": 0.01, "etas": (0.5, 1.2), "step_sizes": (1e-06, 50)},
    "SGD": {"lr": 0.001, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False},
}

#: torch.optim optimizers a config may not name, and why
REFUSED_OPTIMIZERS: dict[str, str] = {
    "SparseAdam": (
        "SparseAdam needs sparse gradients (nn.Embedding(sparse=True)); fedsilo's models "
        "have dense ones. Use Adam"
    ),
    "Muon": (
        "Muon steps 2-D weight matrices only, and every fedsilo model has 1-D biases. Use "
        "SGD with momentum or Adam"
    ),
}

#: torch's implementation switches: in the signatures, not settable from a config
TORCH_SWITCHES: dict[str, str] = {
    "foreach": "picks torch's kernel implementation",
    "fused": "picks torch's kernel implementation",
    "capturable": "is for CUDA graph capture; clients train on CPU tensors",
    "differentiable": "is for differentiating through the step itself",
    "maximize": "would ascend the package's loss; fedsilo minimises it",
}

#: optimizers whose step evaluates the loss many times (through a closure)
_CLOSURE_OPTIMIZERS = frozenset({"LBFGS"})

# The type of each parameter, by torch's name; one meaning per name across optimizers
# (ASGD's and RMSprop's ``alpha`` are both non-negative). Ranges are the ones torch checks
# in the constructors, so a bad value is refused on the server, not on a client mid-session.
_TYPES: dict[str, Any] = {
    "lr": NonNegative,
    "momentum": NonNegative,
    "dampening": NonNegative,
    "weight_decay": NonNegative,
    "nesterov": bool,
    "betas": tuple[Beta, Beta],
    "eps": NonNegative,
    "amsgrad": bool,
    "decoupled_weight_decay": bool,
    "rho": Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)],
    "lr_decay": NonNegative,
    "initial_accumulator_value": NonNegative,
    "alpha": NonNegative,
    "centered": bool,
    "lambd": NonNegative,
    "t0": NonNegative,
    "momentum_decay": NonNegative,
    "etas": tuple[Positive, Positive],
    "step_sizes": tuple[NonNegative, NonNegative],
    "max_iter": Count,
    "max_eval": Count | None,
    "tolerance_grad": NonNegative,
    "tolerance_change": NonNegative,
    "history_size": Count,
    "line_search_fn": Literal["strong_wolfe"] | None,
    "beta2_decay": Annotated[float, Field(le=0.0, allow_inf_nan=False)],
    "d": NonNegative,
}
# Adafactor's eps is a pair (eps1 or null for torch's dtype-based default, eps2).
_OVERRIDES: dict[tuple[str, str], Any] = {
    ("Adafactor", "eps"): tuple[NonNegative | None, NonNegative],
}

_BY_LOWER: dict[str, str] = {
    name.lower(): name for name in (*OPTIMIZER_DEFAULTS, *REFUSED_OPTIMIZERS)
}


def optimizer_names() -> list[str]:
    """The optimizer names a config may use, sorted case-insensitively."""
    return sorted(OPTIMIZER_DEFAULTS, key=str.lower)


class OptimizerParams(BaseModel):
    """``optimizer.params``: the named optimizer's constructor parameters.

    ``learning_rate`` is torch's ``lr`` (either spelling; default torch's). The other keys
    are those of the ``torch.optim`` class the ``name`` picks; see
    https://pytorch.org/docs/stable/optim.html. Validated by a model built per optimizer
    from :data:`OPTIMIZER_DEFAULTS` (this base only describes the section in JSON Schema).
    """

    # The base admits any key: it is only ever the schema; each optimizer's subclass forbids.
    model_config = ConfigDict(extra="allow")

    learning_rate: NonNegative = 0.001

    @model_validator(mode="before")
    @classmethod
    def _torch_spelling(cls, value: Any) -> Any:
        if isinstance(value, dict) and "lr" in value:
            if "learning_rate" in value:
                raise PydanticCustomError(
                    "optimizer_alias",
                    "give the learning rate once: learning_rate (the seed's name) and lr "
                    "(torch's) are the same parameter",
                )
            value = {("learning_rate" if k == "lr" else k): v for k, v in value.items()}
        return value

    def torch_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the ``torch.optim`` constructor: the parameters given
        (``learning_rate`` as ``lr``; pairs as tuples); the rest keep torch's defaults."""
        given = self.model_dump(exclude_unset=True)
        return {("lr" if k == "learning_rate" else k): v for k, v in given.items()}


class _ForbidExtra(OptimizerParams):
    model_config = ConfigDict(extra="forbid")


def _params_model(name: str) -> type[OptimizerParams]:
    fields: dict[str, Any] = {}
    for parameter, default in OPTIMIZER_DEFAULTS[name].items():
        field_name = "learning_rate" if parameter == "lr" else parameter
        annotation = _OVERRIDES.get((name, parameter), _TYPES[parameter])
        fields[field_name] = (annotation, default)
    model: type[OptimizerParams] = create_model(f"{name}Params", __base__=_ForbidExtra, **fields)
    return model


_PARAMS_MODELS: dict[str, type[OptimizerParams]] = {
    name: _params_model(name) for name in OPTIMIZER_DEFAULTS
}


def _accepted(name: str) -> str:
    names = ["learning_rate (or lr)", *(p for p in OPTIMIZER_DEFAULTS[name] if p != "lr")]
    return ", ".join(names)


def _refuse_unknown(name: str, params: dict[str, Any]) -> None:
    """Refuse every key the optimizer does not take, each at its own location."""
    accepted = {"lr", "learning_rate", *OPTIMIZER_DEFAULTS[name]}
    problems: list[InitErrorDetails] = []
    for key, value in params.items():
        if key in accepted:
            continue
        if key in TORCH_SWITCHES:
            reason = f"{key} {TORCH_SWITCHES[key]}, so fedsilo leaves it at torch's default"
        else:
            reason = f"torch.optim.{name} takes no parameter {key!r}"
        error = PydanticCustomError(
            "optimizer_parameter",
            "{reason}; the parameters of {name} are: {accepted}",
            {"reason": reason, "name": name, "accepted": _accepted(name)},
        )
        problems.append(InitErrorDetails(type=error, loc=(str(key),), input=value))
    if problems:
        raise ValidationError.from_exception_data(f"{name}Params", problems)


class OptimizerConfig(BaseModel):
    """``optimizer``: the clients' local optimizer, any of :func:`optimizer_names`.

    Attributes
    ----------
    name : str
        The ``torch.optim`` class name, normalised (``"optim.adadelta"`` -> ``"Adadelta"``).
    params : OptimizerParams
        Its parameters (an instance of the optimizer's own params model).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description=(
            "A torch.optim optimizer, any case, optionally prefixed 'optim.' or "
            "'torch.optim.': " + ", ".join(sorted(OPTIMIZER_DEFAULTS, key=str.lower))
        )
    )
    # SerializeAsAny: dumped with the optimizer's own fields, not only the base's.
    params: SerializeAsAny[OptimizerParams] = Field(
        default_factory=OptimizerParams, validate_default=True
    )

    @field_validator("name", mode="before")
    @classmethod
    def _known_name(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the str type check reports it
        bare = value.strip()
        for prefix in ("torch.optim.", "optim."):
            if bare.lower().startswith(prefix):
                bare = bare[len(prefix) :]
        canonical = _BY_LOWER.get(bare.lower())
        if canonical in REFUSED_OPTIMIZERS:
            raise PydanticCustomError(
                "refused_optimizer", "{reason}", {"reason": REFUSED_OPTIMIZERS[canonical]}
            )
        if canonical is None:
            raise PydanticCustomError(
                "unknown_optimizer",
                "unknown optimizer; expected a torch.optim optimizer: {known}",
                {"known": ", ".join(optimizer_names())},
            )
        return canonical

    @field_validator("params", mode="before")
    @classmethod
    def _optimizer_params(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.data.get("name")
        if name not in _PARAMS_MODELS:
            return OptimizerParams()  # the name's own error says what is wrong
        if isinstance(value, OptimizerParams):
            value = value.model_dump(exclude_unset=True)
        if isinstance(value, dict):
            _refuse_unknown(name, value)
        # A ValidationError raised here is merged into the outer one with its location
        # under ``optimizer.params``, so the message names e.g. optimizer.params.betas.0.
        return _PARAMS_MODELS[name].model_validate(value)

    @property
    def evaluates_closure(self) -> bool:
        """True when a step re-evaluates the loss many times (LBFGS's line search)."""
        return self.name in _CLOSURE_OPTIMIZERS

    def privacy_problem(self) -> str | None:
        """Why this optimizer cannot train under DP-SGD, or None when it can."""
        if self.evaluates_closure:
            return (
                f"{self.name} evaluates the gradient many times per step, each of which "
                "would need its own clipping and noise; DP-SGD accounts for one noised "
                "gradient per step. Use SGD, Adam or another single-gradient optimizer"
            )
        return None
