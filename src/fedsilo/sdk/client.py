"""The SDK's entry point: :func:`connect` returns a :class:`Client` bound to one server."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from fedsilo.http import ApiClient, resolve_token, resolve_url
from fedsilo.sdk.initial_model import InitialModelSource
from fedsilo.sdk.prl import PrlSession
from fedsilo.sdk.session import Session
from fedsilo.wire import PackagePublic, SessionKind, SessionPublic

if TYPE_CHECKING:
    from fedsilo.packages.custom.upload import ModelTest

__all__ = ["Client", "connect"]


class Client:
    """An authenticated connection to one fedsilo server.

    Parameters
    ----------
    url : str
        Server base URL, e.g. ``http://127.0.0.1:8765``.
    token : str
        Bearer token (the admin token, or one made with ``fedsilo token create``).
    transport : httpx.BaseTransport, optional
        Send requests through this transport instead of the network (tests drive the
        FastAPI app in-process this way).
    timeout : float
        Seconds for each request.

    Examples
    --------
    >>> import fedsilo
    >>> with fedsilo.connect("http://127.0.0.1:8765", token) as client:  # doctest: +SKIP
    ...     session = client.create_fl_session(
    ...         name="demo", min_num_clients=2, num_rounds=5, package_name="ffnet",
    ...         model_config=model_config, data_config=data_config,
    ...     ).start()
    ...     session.wait().metrics().as_dict()
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._api = ApiClient(url, token, transport=transport, timeout=timeout)

    @property
    def url(self) -> str:
        return self._api.url

    @property
    def api(self) -> ApiClient:
        """The underlying HTTP client, for endpoints the SDK does not wrap yet."""
        return self._api

    # ------------------------------------------------------------------ sessions

    def create_fl_session(
        self,
        name: str,
        description: str = "",
        *,
        min_num_clients: int,
        num_rounds: int,
        package_name: str,
        model_config: Mapping[str, Any],
        data_config: Mapping[str, Any],
        initial_model: InitialModelSource | None = None,
    ) -> Session:
        """Create a horizontal federated learning session (status ``created``).

        Nothing runs until :meth:`Session.start`; the counts and configs are keyword-only so
        ``min_num_clients`` and ``num_rounds`` cannot be swapped by position.

        Parameters
        ----------
        name, description : str
            Shown in listings and the portal.
        min_num_clients : int
            Training starts once this many clients joined.
        num_rounds : int
            Federated rounds to train.
        package_name : str
            A registered model package, e.g. ``"ffnet"`` (see :meth:`packages`).
        model_config, data_config : mapping
            JSON-able configs validated by the package on the server.
        initial_model : path, bytes or mapping of str to array, optional
            The model of round 1 as a safetensors state dict (seed 002's ``model_file``):
            uploaded right after the creation with :meth:`Session.upload_initial_model`,
            instead of JSON ``strategy.params.initial_parameters`` (not both).

        Returns
        -------
        Session

        Raises
        ------
        ValidationError
            When the server rejects a field; ``detail`` names its path and value.
        ConflictError
            When ``initial_model`` is given and the model_config has initial_parameters
            (the session is then created without an initial model).
        """
        # Sent as given: the server validates (SessionCreate, then the package's configs) and
        # answers 422 naming the field, so the rules live in one place.
        body = {
            "name": name,
            "description": description,
            "kind": SessionKind.hfl.value,
            "package_name": package_name,
            "min_num_clients": min_num_clients,
            "num_rounds": num_rounds,
            "model_config": dict(model_config),
            "data_config": dict(data_config),
        }
        session = self._session(self._api.post_json("/sessions", body))
        if initial_model is not None:
            session.upload_initial_model(initial_model)
        return session

    def create_eda_session(
        self,
        name: str,
        description: str = "",
        # Sequence[Any], not Sequence[int | str]: a type checker infers the seed's own
        # {"dataset_one": [1, "x5", "x7"]} as list[object]; the server validates each entry.
        data_config: Mapping[str, Sequence[Any]] | None = None,
        num_datasets: int | None = None,
        epsilon: float | None = 1.0,
        *,
        delta: float | None = None,
        bins: int | None = None,
        categorical: Sequence[str] | None = None,
        policy: Mapping[str, int] | None = None,
        relative_accuracy: float | None = None,
        secure_aggregation: Mapping[str, Any] | None = None,
    ) -> Session:
        """Create an exploratory data analysis session (status ``created``).

        Each dataset joins with ``fedsilo client eda --session ID --dataset-path P
        --dataset-name NAME`` and sends per-column aggregates (never rows); after
        :meth:`Session.start` and :meth:`Session.wait`, :meth:`Session.results` returns them.

        Parameters
        ----------
        name, description : str
        data_config : mapping of str to list of (str or int), optional
            Dataset name -> columns to analyse, by name or 0-based position; ``[]`` for all.
            A dataset not named here is analysed in full.
        num_datasets : int, optional
            How many datasets to wait for; default: the number ``data_config`` names.
        epsilon : float or None, default 1.0
            Each dataset's total differential privacy budget, split over its columns and
            statistics (documented in :mod:`fedsilo.analytics.privacy`). None turns DP off:
            exact statistics, for trusted data or tests only (the results carry a warning).
        delta : float, optional
            The DP delta for releases over data-dependent keys (default 1e-6).
        bins : int, optional
            Histogram bins of continuous columns (default 10).
        categorical : list of str, optional
            The categorical columns; by default they are detected (non-numeric, or at most
            20 distinct values).
        policy : mapping, optional
            ``{"min_rows": ..., "min_count": ...}``, enforced by every client.
        relative_accuracy : float, optional
            Of the quantile sketch (default 0.01 without DP, 0.05 with it); coarser buckets
            hold more rows each, so more of them pass the DP threshold on small datasets.
        secure_aggregation : mapping, optional
            E.g. ``{"enabled": True}``: the server learns only sums over every dataset and
            the results hold the pooled dataset only (with ``epsilon`` set, ``categorical``
            must be given; see :mod:`fedsilo.packages.eda.secure_server`).

        Returns
        -------
        Session

        Raises
        ------
        ValueError
            When ``num_datasets`` is not a positive integer.
        ValidationError
            When the server rejects a field (e.g. neither ``data_config`` nor
            ``num_datasets`` says which datasets to expect); ``detail`` names it.
        """
        datasets = {str(k): list(v) for k, v in (data_config or {}).items()}
        if num_datasets is not None and (
            isinstance(num_datasets, bool) or not isinstance(num_datasets, int) or num_datasets < 1
        ):
            raise ValueError(
                f"The 'num_datasets' parameter must be an integer >= 1 or None. "
                f"Got {num_datasets!r}."
            )
        # Only what the caller set: the package's defaults (on the server) rule the rest.
        model_config: dict[str, Any] = {"epsilon": epsilon, "num_datasets": num_datasets}
        if delta is not None:
            model_config["delta"] = delta
        if bins is not None:
            model_config["bins"] = bins
        if categorical is not None:
            model_config["categorical"] = list(categorical)
        if policy is not None:
            model_config["policy"] = dict(policy)
        if relative_accuracy is not None:
            model_config["relative_accuracy"] = relative_accuracy
        if secure_aggregation is not None:
            model_config["secure_aggregation"] = dict(secure_aggregation)
        body = {
            "name": name,
            "description": description,
            "kind": SessionKind.eda.value,
            "package_name": "eda",
            "min_num_clients": num_datasets if num_datasets is not None else max(len(datasets), 1),
            # profile (kinds, sketches), then summaries on the agreed bin edges
            "num_rounds": 2,
            "model_config": model_config,
            "data_config": datasets,
        }
        return self._session(self._api.post_json("/sessions", body))

    def create_prl_session(
        self,
        name: str,
        description: str = "",
        data_config: Mapping[str, Any] | None = None,
    ) -> PrlSession:
        """Create a private record linkage session (status ``created``).

        Each client named in ``data_config`` joins with ``fedsilo client prl --session ID
        --train-path P --test-path Q --client-name NAME``; the session finds the records
        they all hold without ids leaving a silo and stores their alignment (train and test
        separately) for VFL sessions. ``prl.metrics().as_dict()`` gives the overlap
        statistics in the seed's shape.

        Parameters
        ----------
        name, description : str
        data_config : mapping
            ``{"clients": {client_name: {"id_columns": [...]}, ...}}``, optionally with
            ``"psi_protocol": "keyed_hash"`` (default, any number of clients) or ``"ecdh"``
            (two clients). The number of clients named is the number expected.

        Returns
        -------
        PrlSession

        Raises
        ------
        ValueError
            When ``data_config`` names no ``clients`` mapping.
        ValidationError
            When the server rejects a field (e.g. clients with different numbers of id
            columns); ``detail`` names it.
        """
        config = dict(data_config or {})
        clients = config.get("clients")
        if not isinstance(clients, Mapping) or not clients:
            raise ValueError(
                "The 'data_config' parameter must name the clients and their id columns, "
                'e.g. {"clients": {"passive_client": {"id_columns": ["id"]}, '
                f'"active_client": {{"id_columns": ["id"]}}}}}}. Got {data_config!r}.'
            )
        body = {
            "name": name,
            "description": description,
            "kind": SessionKind.prl.value,
            "package_name": "prl",
            "min_num_clients": len(clients),
            # one round: the alignment and its overlap statistics
            "num_rounds": 1,
            "model_config": {},
            "data_config": config,
        }
        public = SessionPublic.model_validate(self._api.post_json("/sessions", body))
        return PrlSession(self._api, public)

    def create_vfl_session(
        self,
        name: str,
        description: str = "",
        *,
        prl_session_id: str,
        vfl_mode: str = "train",
        training_session_id: str | None = None,
        min_num_clients: int | None = None,
        num_rounds: int = 1,
        package_name: str = "ffnet",
        data_config: Mapping[str, Any] | None = None,
        model_config: Mapping[str, Any] | None = None,
        startup_mode: str | None = None,
    ) -> Session:
        """Create a vertical federated learning session (SplitNN; status ``created``).

        Train (``vfl_mode="train"``): the parties linked by PRL session ``prl_session_id``
        train a split network, each joining with ``fedsilo client vfl-train --session ID
        --train-path P --test-path Q --batch-size N --storage-path DIR --client-name NAME``;
        ``session.metrics().as_dict()`` has each round's loss and the active party's test
        metrics. Predict (``vfl_mode="predict"``, ``training_session_id``): each party joins
        with ``fedsilo client vfl-predict --session ID --dataset-path P --storage-path FILE
        --client-name NAME``; the active party writes the predictions at its FILE.

        Parameters
        ----------
        name, description : str
        prl_session_id : str
            A completed PRL session over these clients' tables.
        vfl_mode : {"train", "predict"}
        training_session_id : str, optional
            Predict only: the completed training session.
        min_num_clients : int, optional
            Default: the number of clients in ``data_config``.
        num_rounds : int
            Training rounds (passes over the aligned rows); 1 for predict.
        package_name : str
            ``"ffnet"`` (the seed's spelling, ``"iai_ffnet"`` too) or ``"splitnn"``: VFL
            sessions run the ``splitnn`` package, ffnet's split form.
        data_config : mapping
            ``{client_name: {"label_client": bool, "predictors": [...], "target": str or
            None}}``; exactly one label client.
        model_config : mapping, optional
            Train: the seed's (``strategy`` SplitNN, ``model.feature_models`` per client,
            ``model.label_model``, ``ml_task``, ``optimizer``, ``seed``). Predict: none (the
            training session's network is used).
        startup_mode : str, optional
            Accepted for the seed's notebooks; fedsilo clients always start externally.

        Returns
        -------
        Session

        Raises
        ------
        ValueError
            An unknown ``vfl_mode`` or ``package_name``, or no ``data_config`` clients.
        ValidationError
            When the server rejects a field; ``detail`` names it.
        """
        if vfl_mode not in ("train", "predict"):
            raise ValueError(
                f"The 'vfl_mode' parameter must be 'train' or 'predict'. Got {vfl_mode!r}."
            )
        if package_name not in ("ffnet", "iai_ffnet", "splitnn"):
            raise ValueError(
                "The 'package_name' parameter of a VFL session must be 'ffnet' (its split "
                f"network, package splitnn) or 'splitnn'. Got {package_name!r}."
            )
        clients = dict(data_config or {})
        if not clients:
            raise ValueError(
                "The 'data_config' parameter must name each client's predictors, e.g. "
                '{"active_client": {"label_client": true, "predictors": ["x0"], "target": '
                f'"y"}}, ...}}. Got {data_config!r}.'
            )
        config: dict[str, Any] = {
            **dict(model_config or {}),
            "vfl_mode": vfl_mode,
            "prl_session_id": prl_session_id,
        }
        if training_session_id is not None:
            config["training_session_id"] = training_session_id
        body = {
            "name": name,
            "description": description,
            "kind": SessionKind.vfl.value,
            "package_name": "splitnn",
            "min_num_clients": min_num_clients if min_num_clients is not None else len(clients),
            "num_rounds": num_rounds if vfl_mode == "train" else 1,
            "model_config": config,
            "data_config": clients,
        }
        public = SessionPublic.model_validate(self._api.post_json("/sessions", body))
        return Session(self._api, public)

    def fl_session(self, session_id: str) -> Session:
        """A handle on an existing session.

        Raises
        ------
        NotFoundError
            When the server has no session with that id.
        """
        return self._session(self._api.get_json(f"/sessions/{session_id}"))

    def sessions(self) -> list[Session]:
        """Every session this token may see, as the server lists them."""
        return [self._session(item) for item in self._api.get_json("/sessions")]

    def packages(self) -> list[PackagePublic]:
        """The model packages the server offers."""
        return [PackagePublic.model_validate(item) for item in self._api.get_json("/packages")]

    def upload_model(
        self,
        package_path: str,
        dataset_path: str,
        package_name: str,
        sample_model_config_path: str,
        sample_data_config_path: str,
        batch_size: int,
        task: str,
        test_only: bool = False,
        description: str = "",
    ) -> ModelTest:
        """Test a custom PyTorch package by training it one epoch locally, then upload it.

        The test runs in a child process on this machine (README "Custom model packages");
        a package that fails it is not uploaded. Sessions then train it by
        ``package_name``, on clients whose operators approved it.

        Parameters
        ----------
        package_path : str
            The package folder: ``model.py`` (one ``torch.nn.Module``), ``<classname>.json``
            (its default inputs), optionally ``dataset.py`` and its JSON.
        dataset_path : str
            Data for the test: a folder ``dataset.py`` reads, or a CSV/parquet table.
        package_name : str
            Unique: lowercase letters, digits and underscores.
        sample_model_config_path, sample_data_config_path : str
            JSON files: a session's model_config and data_config for this package.
        batch_size : int
        task : {"classification", "regression"}
        test_only : bool, default False
            Only test; upload nothing.
        description : str
            At most 1024 characters, shown in ``fedsilo package list``.

        Returns
        -------
        ModelTest
            ``metrics`` of the test epoch, and the uploaded ``package`` (with its
            ``digest``, what clients approve), None with ``test_only``.

        Raises
        ------
        ConfigError
            The package failed its test (the reason is in the message), or an argument is
            invalid.
        ConflictError
            A package of that name exists.
        """
        from fedsilo.packages.custom.upload import upload_model

        return upload_model(
            self._api,
            package_path,
            dataset_path,
            package_name,
            sample_model_config_path,
            sample_data_config_path,
            batch_size,
            task,
            test_only,
            description,
        )

    def health(self) -> dict[str, Any]:
        """The server's ``/healthz`` answer, e.g. ``{"status": "ok", "version": "0.1.0"}``."""
        return self._api.healthz()

    def _session(self, body: Any) -> Session:
        public = SessionPublic.model_validate(body)
        if public.kind is SessionKind.prl:
            return PrlSession(self._api, public)
        return Session(self._api, public)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the connection; the client cannot send requests afterwards."""
        self._api.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"


def connect(
    url: str | None = None,
    token: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
) -> Client:
    """Connect to a fedsilo server.

    Parameters
    ----------
    url : str, optional
        Server base URL; defaults to ``$FEDSILO_URL``, then ``http://127.0.0.1:8765``.
    token : str, optional
        Bearer token; defaults to ``$FEDSILO_TOKEN``.
    transport : httpx.BaseTransport, optional
        Send requests through this transport (tests drive the app in-process).
    timeout : float
        Seconds for each request.

    Returns
    -------
    Client

    Raises
    ------
    AuthenticationError
        When no token is given and ``$FEDSILO_TOKEN`` is not set. A wrong token is only
        detected by the first request, which then raises AuthenticationError.
    """
    return Client(resolve_url(url), resolve_token(token), transport=transport, timeout=timeout)
