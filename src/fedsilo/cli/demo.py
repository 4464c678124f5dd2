"""``fedsilo demo``: the FFNet tutorial end to end on this machine, in under a minute.

It starts a real server on a free loopback port (with a throw-away data dir), writes the
tutorial's synthetic data, creates and starts an ``ffnet`` session through the SDK, launches
two real client processes (one per silo), shows the rounds as they finish, then compares the
federated model with the same network trained centrally on the pooled data. Everything it
started is stopped when it ends, fails or is interrupted.

It runs with least privilege, as a deployment should: the server's admin token only creates
the users and mints their tokens. The session is driven by a ``demo-user`` token holding
only :data:`ANALYST_SCOPES`, and each silo's client joins with a ``client``-scoped token of
its own user, which can join, poll and reply as its own participant and nothing else.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsilo.errors import FedsiloError, SessionError, WaitTimeout
from fedsilo.scopes import Scope

if TYPE_CHECKING:
    import fedsilo
    from fedsilo.runners.local import ClientProcess

__all__ = ["ANALYST_SCOPES", "DATA_CONFIG", "MODEL_CONFIG", "DemoResult", "demo", "run_demo"]

#: The seed tutorial's FFNet model_config, without its differential_privacy_params: the demo
#: compares federated with central training, and DP noise would blur that comparison.
MODEL_CONFIG: dict[str, Any] = {
    "experiment_name": "test_synthetic_tabular",
    "experiment_description": "test_synthetic_tabular",
    "strategy": {"name": "FedAvg", "params": {}},
    "model": {"params": {"input_size": 15, "hidden_layer_sizes": [6, 6, 6], "output_size": 2}},
    "balance_train_datasets": False,
    "ml_task": {"type": "classification", "params": {"loss_weights": None}},
    "optimizer": {"name": "SGD", "params": {"learning_rate": 0.2, "momentum": 0.0}},
    "save_best_model": {"metric": "loss", "mode": "min"},
    "seed": 23,
}
#: The seed tutorial's data_config.
DATA_CONFIG: dict[str, Any] = {"predictors": [f"x{i}" for i in range(15)], "target": "y"}

SILOS = ("silo0", "silo1")
#: what the demo's SDK calls need: create and start the session, follow its status and
#: metrics, download its model -- all on the session the token's own user created
ANALYST_SCOPES = (
    Scope.create_session,
    Scope.start_session,
    Scope.read_user_session,
    Scope.user_model_download,
)
ANALYST = "demo-user"
# The demo's server lives for a minute; its tokens need not outlive a day.
_TOKEN_DAYS = 1
_POLL_S = 0.25
# After the session completes, a client still replies to its last task and sees the end on
# its next long-poll; seconds, not more.
_CLIENT_EXIT_TIMEOUT_S = 60.0
_COMPARED = ("test_accuracy", "test_roc_auc", "test_loss")


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes
    ----------
    session_id : str
    federated, central : dict of str to float
        ``test_loss``, ``test_accuracy``, ``test_roc_auc``, ``test_num_examples`` of the
        federated model and of the centrally trained one, both on ``test.parquet``.
    metrics : dict
        The session's ``metrics().as_dict()``.
    plot_path, model_path : Path
    seconds : float
        Wall time of the whole demo.
    """

    session_id: str
    federated: dict[str, float]
    central: dict[str, float]
    metrics: dict[str, Any]
    plot_path: Path
    model_path: Path
    seconds: float

    @property
    def accuracy_gap_points(self) -> float:
        """Central minus federated test accuracy, in percentage points."""
        return 100.0 * (self.central["test_accuracy"] - self.federated["test_accuracy"])


def demo(
    out: Annotated[
        Path,
        typer.Option("--out", help="Folder for metrics.png, the model, logs and the sample data."),
    ] = Path("demo-output"),
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, max=1000, help="Federated rounds to train.")
    ] = 5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Mini-batch size, federated and central.")
    ] = 1024,
    data_seed: Annotated[
        int, typer.Option("--data-seed", min=0, help="Seed of the synthetic data.")
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1.0, help="Seconds the federated session may take at most."),
    ] = 300.0,
) -> None:
    """Train the FFNet tutorial federated across two local silos and compare it with central
    training.

    Starts a server and two clients as local processes on 127.0.0.1, shows each round's
    metrics, prints the federated model's test accuracy beside the same network trained on
    the pooled data, and writes `<out>/metrics.png`. Everything started is stopped at the end,
    on failure and on Ctrl-C.
    """
    with _sigterm_as_interrupt():
        run_demo(
            out=out,
            rounds=rounds,
            batch_size=batch_size,
            data_seed=data_seed,
            timeout=timeout,
            # soft_wrap: long paths stay on one line (copyable) in a narrow or piped terminal.
            console=Console(highlight=False, soft_wrap=True),
        )


def run_demo(
    out: Path = Path("demo-output"),
    rounds: int = 5,
    batch_size: int = 1024,
    data_seed: int = 0,
    timeout: float = 300.0,
    console: Console | None = None,
) -> DemoResult:
    """Run the demo (see :func:`demo`) and return its numbers.

    Raises
    ------
    FedsiloError
        When the server, a client or the session fails; the message names the log to read.
    """
    import fedsilo
    from fedsilo.data.synth import ROWS_PER_SILO, TEST_ROWS, write_sample_data
    from fedsilo.runners.local import start_client, start_server

    console = console or Console(highlight=False)
    started = time.monotonic()
    out = out.expanduser().resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]fedsilo demo[/]: FFNet trained federated across {len(SILOS)} silos, "
        "compared with central training"
    )
    data = write_sample_data(out / "data", seed=data_seed)
    console.print(
        f"  data     {out / 'data'} ({len(SILOS)} silos x {ROWS_PER_SILO} training rows, "
        f"{TEST_ROWS} test rows)"
    )
    with contextlib.ExitStack() as stack:
        server_dir = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="fedsilo-demo-", ignore_cleanup_errors=True)
            )
        )
        server = stack.enter_context(
            start_server(server_dir / "server", log_path=logs / "server.log")
        )
        console.print(f"  server   {server.url} (pid {server.pid}, log {logs / 'server.log'})")
        analyst_token, silo_tokens = _mint_tokens(server.url, server.admin_token)
        console.print(
            f"  tokens   {ANALYST} ({', '.join(ANALYST_SCOPES)}); "
            f"{', '.join(SILOS)} (client); the admin token only minted them"
        )
        client = stack.enter_context(fedsilo.connect(server.url, analyst_token))
        session = client.create_fl_session(
            name="fedsilo demo",
            description="The FFNet tutorial on two local silos",
            min_num_clients=len(SILOS),
            num_rounds=rounds,
            package_name="ffnet",
            model_config=MODEL_CONFIG,
            data_config=DATA_CONFIG,
        ).start()
        console.print(f"  session  {session.id} (ffnet, {len(SILOS)} clients, {rounds} rounds)")
        # The token rides in the fragment, which a browser never sends to the server (nor to
        # its logs); the portal's sign-in page reads it from there and signs in.
        console.print(
            f"  portal   {server.url}/signin?next=/sessions/{session.id}#token={analyst_token} "
            f"(signed in as {ANALYST}; open it while the demo runs)"
        )
        clients: list[ClientProcess] = []
        for silo in SILOS:
            proc = start_client(
                session.id,
                data[f"train_{silo}"],
                data["test"],
                batch_size,
                silo,
                server.url,
                silo_tokens[silo],
                log_path=logs / f"{silo}.log",
            )
            # Registered at once, so a failure while starting the second still stops the first.
            stack.callback(proc.stop)
            clients.append(proc)
        pids = ", ".join(f"{proc.client_name} (pid {proc.pid})" for proc in clients)
        console.print(f"  clients  {pids}; logs in {logs}")

        metrics = _follow(session, clients, console, timeout)
        for proc in clients:
            _expect_clean_exit(proc)
        model = session.model()
        model_path = model.save(out / "model.safetensors")
        federated, central = _compare(model, data, rounds, batch_size, console)
        plot_path = out / "metrics.png"
        metrics.plot().savefig(plot_path, dpi=110)

    seconds = time.monotonic() - started
    result = DemoResult(
        session_id=session.id,
        federated=federated,
        central=central,
        metrics=metrics.as_dict(),
        plot_path=plot_path,
        model_path=model_path,
        seconds=seconds,
    )
    _print_summary(result, console)
    return result


def _mint_tokens(url: str, admin_token: str) -> tuple[str, dict[str, str]]:
    """Create the analyst and one user per silo, and mint each its least-privilege token:
    the analyst's secret, and each silo's by silo name."""
    from fedsilo.auth import connect_to_auth_client

    with connect_to_auth_client(url, admin_token) as auth:
        auth.create_user(ANALYST)
        analyst = auth.create_token(
            user_id=ANALYST, scopes=ANALYST_SCOPES, expires_in_days=_TOKEN_DAYS, name="notebook"
        )
        silos: dict[str, str] = {}
        for silo in SILOS:
            auth.create_user(silo)
            silos[silo] = auth.create_token(
                user_id=silo, scopes=[Scope.client], expires_in_days=_TOKEN_DAYS, name=silo
            )["token"]
    return str(analyst["token"]), silos


# ------------------------------------------------------------------ following the session


def _follow(
    session: fedsilo.Session,
    clients: Sequence[ClientProcess],
    console: Console,
    timeout: float,
) -> fedsilo.SessionMetrics:
    """Show progress and each round's metrics until the session completes."""
    deadline = time.monotonic() + timeout
    printed = 0
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds  {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=session.num_rounds, status="pending")
        while True:
            public = session.refresh()
            status = public.status
            label = "waiting for clients" if status == "pending" else str(status)
            progress.update(task, completed=public.round, status=label)
            metrics = session.metrics()
            for index in range(printed, len(metrics.federated_metrics)):
                progress.console.print(_round_line(index, metrics))
            printed = len(metrics.federated_metrics)
            if status == "completed":
                return metrics
            if status.ended:
                raise SessionError(session.id, str(status), public.failure_reason)
            for proc in clients:
                code = proc.returncode
                if code is not None:
                    raise FedsiloError(
                        f"client {proc.client_name} exited with code {code} while the session "
                        f"was {status}; expected it to run until the session completes. "
                        f"Last line: {_last_line(proc)} (log: {proc.log_path})"
                    )
            if time.monotonic() > deadline:
                raise WaitTimeout(
                    session.id,
                    str(status),
                    f"still {status} at round {public.round}/{public.num_rounds} after the "
                    f"demo's {timeout:g} s timeout (--timeout)",
                )
            time.sleep(_POLL_S)


def _round_line(index: int, metrics: fedsilo.SessionMetrics) -> str:
    """``round 2/5  loss 0.4752  accuracy 0.8027 | silo0 0.8027  silo1 0.8027``."""
    federated = metrics.federated_metrics[index]
    line = f"  round {index + 1}  loss {federated.get('loss', float('nan')):.4f}"
    if "accuracy" in federated:
        line += f"  accuracy {federated['accuracy']:.4f}"
    per_client = metrics.client_metrics[index] if index < len(metrics.client_metrics) else {}
    accuracies = [
        f"{name} {values['test_accuracy']:.4f}"
        for name, values in sorted(per_client.items())
        if "test_accuracy" in values
    ]
    if accuracies:
        line += " | test accuracy " + "  ".join(accuracies)
    return line


def _last_line(proc: ClientProcess) -> str:
    lines = [line for line in proc.log_tail(5).splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _expect_clean_exit(proc: ClientProcess) -> None:
    try:
        code = proc.wait(timeout=_CLIENT_EXIT_TIMEOUT_S)
    except TimeoutError:
        raise FedsiloError(
            f"client {proc.client_name} still running {_CLIENT_EXIT_TIMEOUT_S:g} s after the "
            f"session completed; expected it to exit 0 (log: {proc.log_path})"
        ) from None
    if code != 0:
        raise FedsiloError(
            f"client {proc.client_name} exited with code {code} after the session completed; "
            f"expected 0. Last line: {_last_line(proc)} (log: {proc.log_path})"
        )


# ------------------------------------------------------------------ comparison


def _compare(
    model: fedsilo.Model,
    data: dict[str, Path],
    rounds: int,
    batch_size: int,
    console: Console,
) -> tuple[dict[str, float], dict[str, float]]:
    """Evaluate the federated model and a centrally trained twin on the same test set."""
    import pandas as pd

    from fedsilo.packages.ffnet import PACKAGE, FFNetModel
    from fedsilo.packages.ffnet.central import evaluate, train_central

    exported = model.exported
    if not isinstance(exported, FFNetModel):
        raise FedsiloError(
            f"session {model.session_id}'s model is a {type(exported).__name__} from package "
            f"{model.package_name!r}; expected an ffnet FFNetModel"
        )
    test = pd.read_parquet(data["test"])
    federated = evaluate(exported, test)
    model_config = PACKAGE.parse_model_config(MODEL_CONFIG)
    data_config = PACKAGE.parse_data_config(DATA_CONFIG)
    # Same budget as the federation: each round every client makes local_epochs passes over
    # its silo, so the pooled data gets rounds x local_epochs passes.
    epochs = rounds * model_config.local_epochs
    with console.status(f"training the same network centrally ({epochs} epochs) ..."):
        pooled = pd.read_parquet(data["train_centralized"])
        central_model = train_central(model_config, data_config, pooled, epochs, batch_size)
        central = evaluate(central_model, test)
    return federated, central


def _print_summary(result: DemoResult, console: Console) -> None:
    rows = int(result.federated.get("test_num_examples", 0))
    table = Table(title=f"session {result.session_id}: test.parquet ({rows} rows)")
    table.add_column("metric")
    table.add_column("federated", justify="right")
    table.add_column("central", justify="right")
    table.add_column("central - federated", justify="right")
    for key in _COMPARED:
        fed, cen = result.federated[key], result.central[key]
        points = key == "test_accuracy"
        gap = f"{100 * (cen - fed):+.2f} points" if points else f"{cen - fed:+.4f}"
        table.add_row(key.removeprefix("test_"), f"{fed:.4f}", f"{cen:.4f}", gap)
    console.print(table)
    console.print(
        f"federated test accuracy {result.federated['test_accuracy']:.4f} vs central "
        f"{result.central['test_accuracy']:.4f} (gap {result.accuracy_gap_points:+.2f} points)"
    )
    console.print(f"metrics plot  {result.plot_path}")
    console.print(f"model         {result.model_path}")
    console.print(f"done in {result.seconds:.1f} s")


# ------------------------------------------------------------------ signals


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a killed demo still stops its server and clients."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
