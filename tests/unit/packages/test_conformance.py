"""One conformance suite run over every registered model package (scikit-learn's common tests).

A package added to :data:`fedsilo.federation.REGISTRY` is picked up here automatically and
fails :func:`test_every_registered_package_has_an_example` until it has an entry in
:data:`EXAMPLES`: a tiny valid ``model_config`` / ``data_config``, one bad value of each with
the field its error must name, and the tiny data its clients hold. Every check goes through
the package's public face only -- ``PACKAGE`` (configs, ``workflow``, ``executor_ref``,
``export_ref``) and :class:`~fedsilo.runners.inprocess.InProcessContext` -- so it holds
whatever a package keeps inside.

Per example: the configs parse, survive a JSON round trip and export a JSON Schema; bad
configs raise :class:`~fedsilo.errors.ConfigError` naming the field; the executor and export
references resolve; a tiny in-process session (3 clients, every task and reply through the
wire codec) completes; every kind the workflow sends reaches every addressed client and is one
the client module declares; an unknown kind is refused naming it; the saved model survives
the codec and ``PACKAGE.export`` builds a model from it; a session stopped after its first
checkpoint resumes to the same model; neither half imports torch unless it trains with it.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError, FedsiloError
from fedsilo.federation import REGISTRY, Executor, ModelPackage, get_package
from fedsilo.runners.inprocess import InProcessContext, SimulationStopped
from fedsilo.wire import Arrays, decode_frame, encode_frame

NUM_CLIENTS = 3
UNKNOWN_KIND = "conformance_no_such_kind"
#: packages whose client half imports torch when it is built; every other executor must be
#: built without it (glm imports torch only once its sgd solver trains)
TORCH_CLIENTS = {"ffnet"}


def tabular(seed: int, rows: int = 120) -> pd.DataFrame:
    """Four float predictors ``a .. d`` and a binary ``y`` (int64) that depends on them."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 4))
    score = x[:, 0] - 0.5 * x[:, 1] + 0.25 * x[:, 2]
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    frame["y"] = (score + 0.5 * rng.standard_normal(rows) > 0).astype(np.int64)
    return frame


def profiled(seed: int, rows: int = 60) -> pd.DataFrame:
    """A dataset for EDA: a continuous, a skewed and a categorical column."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x0": rng.normal(0.0, 1.0, rows),
            "x1": rng.lognormal(0.0, 0.5, rows),
            "colour": rng.choice(["red", "green", "blue"], rows).astype(object),
        }
    )


def linked(seed: int, rows: int = 60) -> pd.DataFrame:
    """A table for PRL: a unique integer ``id`` (partly shared between seeds) and a value."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": rng.choice(100, rows, replace=False), "x": rng.normal(size=rows)})


@dataclass(frozen=True)
class Example:
    """A tiny session of one package.

    Attributes
    ----------
    package : str
        The registered name.
    model_config, data_config : dict
        Valid configs for ``frame``'s columns.
    bad_model : (dict, str)
        An invalid ``model_config`` and the field path its ConfigError must name.
    bad_data : (dict, str)
        Likewise for the ``data_config``.
    frame : callable(seed) -> DataFrame
        One client's rows.
    num_rounds : int
    dataset_names : bool
        Clients hold named datasets (``LocalDataset(name=...)``), as EDA's do.
    predicts : bool
        The exported model predicts one row of output per input row.
    """

    package: str
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    bad_model: tuple[dict[str, Any], str]
    bad_data: tuple[dict[str, Any], str]
    frame: Callable[[int], pd.DataFrame] = tabular
    num_rounds: int = 2
    dataset_names: bool = False
    predicts: bool = True
    label: str = ""

    @property
    def id(self) -> str:
        return self.label or self.package


PREDICTORS = {"predictors": ["a", "b", "c", "d"], "target": "y"}
FFNET: dict[str, Any] = {
    "model": {"params": {"input_size": 4, "hidden_layer_sizes": [4], "output_size": 2}},
    "ml_task": {"type": "classification", "params": {}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.1, "momentum": 0.0}},
    "seed": 5,
}
GLM: dict[str, Any] = {
    "model": {"params": {"input_size": 4}},
    "ml_task": {"type": "logistic", "params": {"alpha": 0, "l1_ratio": 0}},
}
GBM: dict[str, Any] = {
    "strategy": {"name": "HistGradientBoosting", "params": {}},
    "model": {
        "params": {
            "max_depth": 2,
            "learning_rate": 0.3,
            "random_state": 23,
            "max_bins": 16,
            "sketch_relative_accuracy": 0.01,
            "min_samples_leaf": 10,
        }
    },
    "ml_task": {"type": "classification", "params": {}},
}

#: one or more tiny sessions per registered package
EXAMPLES: list[Example] = [
    Example(
        "arrays",
        {"strategy": {"name": "FedAvg", "params": {}}, "local_epochs": 5},
        PREDICTORS,
        bad_model=({"local_epochs": 0}, "local_epochs"),
        bad_data=({"predictors": "a", "target": "y"}, "predictors"),
        predicts=False,
    ),
    Example(
        "echo",
        {"payload_size": 4},
        {"columns": ["a"]},
        bad_model=({"payload_size": -1}, "payload_size"),
        bad_data=({"columns": "a"}, "columns"),
        predicts=False,
    ),
    Example(
        "eda",
        {"epsilon": None, "bins": 4, "policy": {"min_rows": 10, "min_count": 0}},
        {"ds0": [], "ds1": ["x0", "colour"], "ds2": [0, 1]},
        bad_model=({"epsilon": None, "bins": 0}, "bins"),
        bad_data=({"ds0": [-1]}, "ds0.0"),
        frame=profiled,
        dataset_names=True,
        predicts=False,
    ),
    Example(
        "ffnet",
        FFNET,
        PREDICTORS,
        bad_model=(
            {**FFNET, "model": {"params": {**FFNET["model"]["params"], "output_size": 0}}},
            "model.params.output_size",
        ),
        bad_data=({"predictors": ["a"], "target": "y", "labels": "z"}, "labels"),
    ),
    Example(
        "gbm",
        GBM,
        PREDICTORS,
        bad_model=({**GBM, "model": {"params": {"max_bins": 300}}}, "model.params.max_bins"),
        bad_data=({"predictors": ["a"]}, "target"),
        num_rounds=3,
    ),
    Example(
        "glm",
        GLM,
        PREDICTORS,
        bad_model=({**GLM, "ml_task": {"type": "logit"}}, "ml_task.type"),
        bad_data=({"predictors": [], "target": "y"}, "predictors"),
        num_rounds=10,
        label="glm-newton",
    ),
    Example(
        "glm",
        {
            **GLM,
            "solver": "sgd",
            "strategy": {"name": "FedAvg", "params": {}},
            "optimizer": {"name": "SGD", "params": {"learning_rate": 0.05, "momentum": 0.0}},
        },
        PREDICTORS,
        bad_model=({**GLM, "solver": "lbfgs"}, "solver"),
        bad_data=({"predictors": ["a", "a"], "target": "y"}, "predictors"),
        label="glm-sgd",
    ),
    Example(
        "prl",
        {},
        {"clients": {f"ds{i}": {"id_columns": ["id"]} for i in range(NUM_CLIENTS)}},
        bad_model=({"num_rounds": 1}, "num_rounds"),
        bad_data=(
            {"clients": {"ds0": {"id_columns": []}, "ds1": {"id_columns": ["id"]}}},
            "clients.ds0.id_columns",
        ),
        frame=linked,
        num_rounds=1,
        dataset_names=True,
        predicts=False,
    ),
    Example(
        "linear_inference",
        {"strategy": {"name": "LogitRegInference", "params": {}}},
        {"target": "y", "shared_predictors": ["a"], "chunked_predictors": ["b", "c"]},
        bad_model=({"strategy": {"name": "LogitRegInference"}, "tol": 0}, "tol"),
        bad_data=({"target": "y", "chunked_predictors": []}, "chunked_predictors"),
        num_rounds=20,
    ),
]

each_example = pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])


def package_of(example: Example) -> ModelPackage[Any, Any]:
    return get_package(example.package)


def client_names(example: Example) -> list[str]:
    prefix = "ds" if example.dataset_names else "silo"
    return [f"{prefix}{i}" for i in range(NUM_CLIENTS)]


class RecordingExecutor:
    """Passes every task to the package's executor and remembers the kinds it received."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        self.kinds: list[str] = []

    def handle(
        self, kind: str, meta: dict[str, Any], arrays: Arrays
    ) -> tuple[dict[str, Any], Arrays]:
        self.kinds.append(kind)
        reply_meta, reply_arrays = self.inner.handle(kind, meta, arrays)
        assert isinstance(reply_meta, dict), f"{kind!r} reply meta is {type(reply_meta)}"
        assert all(isinstance(v, np.ndarray) for v in reply_arrays.values()), kind
        return reply_meta, reply_arrays


def executors(example: Example) -> dict[str, RecordingExecutor]:
    package = package_of(example)
    model_config, data_config = package.parse_configs(example.model_config, example.data_config)
    built = {}
    for seed, name in enumerate(client_names(example)):
        dataset = LocalDataset(
            example.frame(seed),
            example.frame(100 + seed),
            32,
            name=name if example.dataset_names else None,
        )
        built[name] = RecordingExecutor(package.executor(model_config, data_config, dataset))
    return built


@dataclass
class Session:
    ctx: InProcessContext
    executors: dict[str, RecordingExecutor]


_sessions: dict[str, Session] = {}


def session(example: Example) -> Session:
    """The example's tiny session, run once and shared by the checks that read it."""
    if example.id not in _sessions:
        package = package_of(example)
        model_config, data_config = package.parse_configs(example.model_config, example.data_config)
        clients = executors(example)
        ctx = InProcessContext(clients, example.num_rounds, package_name=example.package)
        package.workflow(ctx, model_config, data_config)
        _sessions[example.id] = Session(ctx, clients)
    return _sessions[example.id]


# ------------------------------------------------------------------------ registry


#: packages whose parties talk to each other within a task (per mini-batch, over the fast
#: exchange), which the in-process runner's one-task-at-a-time clients cannot do; their tiny
#: session runs through the thread server instead (tests/unit/packages/splitnn)
PEER_TO_PEER = {"splitnn"}


def test_every_registered_package_has_an_example() -> None:
    covered = {example.package for example in EXAMPLES} | PEER_TO_PEER
    assert sorted(set(REGISTRY) - covered) == [], "add an Example for each new package"
    assert sorted(covered - set(REGISTRY)) == [], "an Example names an unregistered package"
    assert len({example.id for example in EXAMPLES}) == len(EXAMPLES)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_under_its_name(name: str) -> None:
    package = get_package(name)
    assert isinstance(package, ModelPackage) and package.name == name
    assert package.description.strip(), "a package describes itself for the CLI and portal"


# ------------------------------------------------------------------------- configs


@each_example
def test_configs_parse_and_survive_json(example: Example) -> None:
    package = package_of(example)
    model_config, data_config = package.parse_configs(example.model_config, example.data_config)
    assert isinstance(model_config, package.model_config_type)
    assert isinstance(data_config, package.data_config_type)
    columns = data_config.required_columns()
    assert isinstance(columns, list) and all(isinstance(c, str) for c in columns)
    assert set(columns) <= set(example.frame(0).columns)
    # Configs cross the API as JSON: what a parsed config dumps must parse to the same config.
    model_json = json.loads(json.dumps(model_config.model_dump(mode="json")))
    data_json = json.loads(json.dumps(data_config.model_dump(mode="json")))
    again_model, again_data = package.parse_configs(model_json, data_json)
    assert again_model == model_config and again_data == data_config


@each_example
def test_bad_configs_raise_config_error_naming_the_field(example: Example) -> None:
    package = package_of(example)
    for which, (raw, field_path) in (
        ("model_config", example.bad_model),
        ("data_config", example.bad_data),
    ):
        model_raw = raw if which == "model_config" else example.model_config
        data_raw = raw if which == "data_config" else example.data_config
        with pytest.raises(ConfigError) as info:
            package.parse_configs(model_raw, data_raw)
        message = str(info.value)
        assert message.startswith(f"{which} is invalid: "), message
        assert f"{field_path}: " in message, message
        assert "(got " in message, message  # the value given is shown


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_config_types_export_a_json_schema(name: str) -> None:
    package = get_package(name)
    examples = [e for e in EXAMPLES if e.package == name]
    for config_type, key in (
        (package.model_config_type, "model_config"),
        (package.data_config_type, "data_config"),
    ):
        schema = config_type.model_json_schema()
        assert json.loads(json.dumps(schema)) == schema
        assert schema.get("type") == "object", schema
        properties = schema.get("properties", {})
        for example in examples:
            given = set(getattr(example, key))
            # Keys a schema does not list must be allowed by it (EDA's dataset names).
            if schema.get("additionalProperties", False) is False:
                assert given <= set(properties), (key, sorted(given - set(properties)))


# ---------------------------------------------------------------- references


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_executor_and_export_refs_resolve(name: str) -> None:
    package = get_package(name)
    for ref in (package.executor_ref, package.export_ref):
        module, sep, attribute = ref.partition(":")
        assert sep and module.startswith(f"fedsilo.packages.{name}") and attribute, ref
    assert callable(package.executor)
    assert callable(package.export)
    kinds = declared_kinds(package)
    if kinds is not None:
        assert kinds and all(isinstance(k, str) and k for k in kinds)


_IMPORTS = """
import json, sys
from fedsilo.federation import get_package
package = get_package(sys.argv[1])
package.workflow, package.model_config_type, package.data_config_type
server = "torch" in sys.modules
package.executor
print(json.dumps({"server": server, "client": "torch" in sys.modules}))
"""


def torch_imports(name: str) -> dict[str, bool]:
    """Whether loading the package's server half, then its client half, imports torch (in a
    fresh interpreter: this one has imported torch long ago)."""
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS, name], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result: dict[str, bool] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_neither_half_imports_torch_unless_it_trains_with_it(name: str) -> None:
    imported = torch_imports(name)
    assert not imported["server"], f"importing {name}'s workflow imports torch"
    if name not in TORCH_CLIENTS:
        assert not imported["client"], f"{name}'s executor imports torch"


def declared_kinds(package: ModelPackage[Any, Any]) -> tuple[str, ...] | None:
    """The ``KINDS`` the client module declares, if it declares them."""
    module = importlib.import_module(package.executor_ref.partition(":")[0])
    kinds = getattr(module, "KINDS", None)
    return None if kinds is None else tuple(kinds)


# ----------------------------------------------------------------- the session


@each_example
def test_a_tiny_session_completes(example: Example) -> None:
    ctx = session(example).ctx
    assert ctx.saved is not None, "the workflow saved no model"
    _, meta, saved_round = ctx.saved
    assert isinstance(saved_round, int) and 0 <= saved_round <= example.num_rounds
    json.dumps(meta, allow_nan=False)
    assert ctx.asked, "the workflow sent no task"
    for server_round, (federated, per_client) in ctx.rounds.items():
        assert 0 <= server_round <= example.num_rounds
        assert all(isinstance(v, int | float) for v in federated.values()), federated
        assert set(per_client) <= set(client_names(example)), per_client


@each_example
def test_every_kind_sent_reaches_its_clients_and_is_declared(example: Example) -> None:
    run = session(example)
    sent: dict[str, list[str]] = {name: [] for name in run.executors}
    for kind, _, names in run.ctx.asked:
        assert kind, "a task without a kind"
        for name in names:
            sent[name].append(kind)
    # The context records a send by its first task's kind; each client saw exactly those.
    for name, executor in run.executors.items():
        assert executor.kinds == sent[name], name
    kinds = declared_kinds(package_of(example))
    if kinds is not None:
        used = {kind for kind, _, _ in run.ctx.asked}
        assert used <= set(kinds), sorted(used - set(kinds))


@each_example
def test_an_unknown_kind_is_refused_naming_it(example: Example) -> None:
    executor = next(iter(executors(example).values())).inner
    with pytest.raises(FedsiloError) as info:
        executor.handle(UNKNOWN_KIND, {}, {})
    assert repr(UNKNOWN_KIND) in str(info.value), str(info.value)


@each_example
def test_the_saved_model_round_trips_the_codec_and_exports(example: Example) -> None:
    package = package_of(example)
    ctx = session(example).ctx
    assert ctx.saved is not None
    arrays, meta, _ = ctx.saved
    got_arrays, header = decode_frame(encode_frame(arrays, {"meta": meta}))
    assert sorted(got_arrays) == sorted(arrays)
    for key, array in arrays.items():
        assert got_arrays[key].dtype == array.dtype and got_arrays[key].shape == array.shape, key
        np.testing.assert_array_equal(got_arrays[key], array, err_msg=key)
    assert header["meta"] == json.loads(json.dumps(meta))

    model_config, data_config = package.parse_configs(example.model_config, example.data_config)
    model = package.export(model_config, data_config, got_arrays, header["meta"])
    assert model is not None
    assert callable(getattr(model, "predict", None)) and callable(
        getattr(model, "as_pytorch", None)
    )
    frame = example.frame(7)
    if example.predicts:
        prediction = np.asarray(model.predict(frame))
        assert prediction.shape[0] == len(frame)
        assert np.all(np.isfinite(prediction.astype(np.float64)))
    else:
        with pytest.raises(FedsiloError):
            model.predict(frame)


@each_example
def test_a_session_stopped_after_its_first_checkpoint_resumes_to_the_same_model(
    example: Example,
) -> None:
    """A restarted server resumes from the last checkpoint; its clients kept running."""
    uninterrupted = session(example).ctx
    if not uninterrupted.checkpoints:
        pytest.skip("the workflow keeps no checkpoint")
    first = min(uninterrupted.checkpoints)
    package = package_of(example)
    model_config, data_config = package.parse_configs(example.model_config, example.data_config)
    clients = executors(example)
    stopped = InProcessContext(
        clients, example.num_rounds, package_name=example.package, stop_after=first
    )
    with pytest.raises(SimulationStopped):
        package.workflow(stopped, model_config, data_config)
    resumed = InProcessContext(
        clients,
        example.num_rounds,
        package_name=example.package,
        checkpoint=stopped.last_checkpoint,
    )
    package.workflow(resumed, model_config, data_config)
    assert resumed.saved is not None and uninterrupted.saved is not None
    assert min(resumed.rounds, default=first + 1) > first, "a checkpointed round ran again"
    expected, got = uninterrupted.saved[0], resumed.saved[0]
    assert sorted(got) == sorted(expected)
    for key in expected:
        # Not always bit for bit: glm sgd's coefficients differ by 1e-17 after a resume.
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    assert resumed.saved[2] == uninterrupted.saved[2]
