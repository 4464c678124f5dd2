"""Bring your own client code (seed 001): join a session with your own ``fit`` / ``evaluate``.

::

    class MyClient:
        def get_parameters(self, config):
            return [model.coef_, model.intercept_]

        def fit(self, parameters, config):
            set_parameters(model, parameters)
            model.fit(X_train, y_train)
            return [model.coef_, model.intercept_], len(X_train), {}

        def evaluate(self, parameters, config):
            set_parameters(model, parameters)
            loss = log_loss(y_test, model.predict_proba(X_test))
            return loss, len(X_test), {"accuracy": model.score(X_test, y_test)}

    fedsilo.client.start_client(url, token, session_id, client=MyClient(), client_name="silo1")

The session is one of package ``arrays`` (:mod:`fedsilo.packages.arrays`): the model is
whatever arrays ``fit`` returns, the server combines them with the session's strategy. The
data stays in your code: fedsilo loads no table and tells the server only the row counts you
declare (``num_examples``), which cap the weight of your replies in a weighted mean.

The client is the usual :class:`~fedsilo.client.ClientRuntime` (dial-out long-poll, rejoin
with the stored credential, release-once replies, the session log); only the data step is
replaced by your object (the ``arrays`` executor finds it in ``package_options``).

Trust: your client runs your code with your permissions; the server sends it only the global
arrays and a JSON config (``round``, ``num_rounds``, ``local_epochs`` and the strategy's
``on_fit_config_fn`` values).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from fedsilo.client.runtime import ClientRuntime, PreparedData
from fedsilo.data.dataset import LocalDataset
from fedsilo.errors import ConfigError
from fedsilo.federation import get_package
from fedsilo.http import ApiClient
from fedsilo.packages.arrays.client import CLIENT_OPTION, NumPyClient
from fedsilo.wire import MAX_ROWS, DatasetSummary, SessionPublic, SessionStatus

__all__ = ["ByoClientRuntime", "NumPyClient", "start_client"]

PACKAGE_NAME = "arrays"


class ByoClientRuntime(ClientRuntime):
    """A :class:`ClientRuntime` whose data is the user's client object, not a table.

    Parameters
    ----------
    api, session_id, client_name
        As for :class:`ClientRuntime`.
    client : NumPyClient
        The user's object with ``get_parameters``, ``fit`` and ``evaluate``.
    num_examples, num_test_examples : int, optional
        The rows the client trains and evaluates on, declared on joining: a reply may weigh
        at most that many (default: no bound but the protocol's).
    **options
        Further :class:`ClientRuntime` options (``poll_wait``, ``reconnect_timeout``,
        ``on_event``, ``state_dir``, ...).
    """

    def __init__(
        self,
        api: ApiClient,
        session_id: str,
        client_name: str,
        client: NumPyClient,
        *,
        num_examples: int | None = None,
        num_test_examples: int | None = None,
        **options: Any,
    ) -> None:
        missing = [
            m
            for m in ("get_parameters", "fit", "evaluate")
            if not callable(getattr(client, m, None))
        ]
        if missing:
            raise ConfigError(
                f"The client object ({type(client).__name__}) must implement get_parameters, "
                f"fit and evaluate; it lacks {', '.join(missing)}."
            )
        for name, value in (
            ("num_examples", num_examples),
            ("num_test_examples", num_test_examples),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ROWS
            ):
                raise ConfigError(f"{name} must be an integer in [0, 2**53]. Got {value!r}.")
        if options.get("package_options"):
            raise ConfigError("package_options is set by start_client; pass client= only.")
        options["package_options"] = {CLIENT_OPTION: client}
        super().__init__(api, session_id, client_name, tables={}, **options)
        self.num_examples = MAX_ROWS if num_examples is None else num_examples
        self.num_test_examples = (
            self.num_examples if num_test_examples is None else num_test_examples
        )

    def prepare(self, session: SessionPublic) -> PreparedData:
        """Check the session is one of package ``arrays``; no table is loaded.

        Raises
        ------
        ConflictError
            The session has ended.
        ConfigError
            The session is of another package, or its configs do not parse.
        """
        if session.status.ended:
            from fedsilo.errors import ConflictError

            why = f" ({session.failure_reason})" if session.failure_reason else ""
            raise ConflictError(
                409, f"Cannot join session {session.id}: it is {session.status}{why}."
            )
        if session.package_name != PACKAGE_NAME:
            raise ConfigError(
                f"Session {session.id} is of package {session.package_name!r}; your own client "
                f"code joins sessions of package {PACKAGE_NAME!r} (create it with "
                f"package_name='{PACKAGE_NAME}')."
            )
        package = get_package(PACKAGE_NAME)
        model_config = package.parse_model_config(session.model_config_)
        data_config = package.parse_data_config(session.data_config)
        summary = DatasetSummary(
            train_rows=self.num_examples, test_rows=self.num_test_examples, columns=[]
        )
        self._emit(f"own client code: {type(self.context_client).__name__}")
        return PreparedData(
            package=package,
            model_config=model_config,
            data_config=data_config,
            dataset=LocalDataset(train=pd.DataFrame(), test=None, batch_size=self.batch_size),
            summary=summary,
        )

    @property
    def context_client(self) -> NumPyClient:
        client: NumPyClient = self.package_options[CLIENT_OPTION]
        return client


def start_client(
    url: str,
    token: str,
    session_id: str,
    client: NumPyClient,
    client_name: str,
    *,
    num_examples: int | None = None,
    num_test_examples: int | None = None,
    poll_wait: float = 30.0,
    reconnect_timeout: float = 300.0,
    on_event: Callable[[str], None] | None = None,
    state_dir: Path | None = None,
    ca_cert: str | None = None,
) -> SessionStatus:
    """Join session ``session_id`` with your own client object and serve it until it ends.

    Parameters
    ----------
    url : str
        The server, e.g. ``"http://127.0.0.1:8000"``.
    token : str
        A token with the ``client`` scope.
    session_id : str
        A session of package ``arrays``.
    client : NumPyClient
        Implements ``get_parameters(config)``, ``fit(parameters, config) -> (parameters,
        num_examples, metrics)`` and ``evaluate(parameters, config) -> (loss, num_examples,
        metrics)``; parameters a list of numpy arrays or a dict of named arrays.
    client_name : str
        This participant's name in the session's metrics.
    num_examples, num_test_examples : int, optional
        Row counts declared on joining (see :class:`ByoClientRuntime`).
    poll_wait, reconnect_timeout, on_event, state_dir
        As for :class:`~fedsilo.client.ClientRuntime`.
    ca_cert : str, optional
        CA bundle for an HTTPS server with a private CA.

    Returns
    -------
    SessionStatus
        ``completed``, ``failed`` or ``canceled``.

    Raises
    ------
    ConfigError
        The client object lacks a method, or the session is not of package ``arrays``.
    NotFoundError, ConflictError, PermissionDenied, ServerUnavailable
        As for :meth:`ClientRuntime.run`.
    """
    api = ApiClient(url, token, ca_cert=ca_cert)
    try:
        runtime = ByoClientRuntime(
            api,
            session_id,
            client_name,
            client,
            num_examples=num_examples,
            num_test_examples=num_test_examples,
            poll_wait=poll_wait,
            reconnect_timeout=reconnect_timeout,
            on_event=on_event,
            state_dir=state_dir,
        )
        return runtime.run()
    finally:
        api.close()
