"""``fedsilo client``: run a silo's client for one session."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from fedsilo.cli import TokenOption, UrlOption, open_api

# Options the client commands share (one definition, so their help and limits agree).
PollWaitOption = Annotated[
    float,
    typer.Option(
        "--poll-wait", min=0.1, help="Seconds each long-poll for a task waits on the server."
    ),
]
ReconnectTimeoutOption = Annotated[
    float,
    typer.Option(
        "--reconnect-timeout",
        min=0.0,
        help="Seconds to keep retrying while the server is unreachable (e.g. restarting).",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print no progress lines, only errors.")
]

__all__ = ["app", "eda", "train"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run a client next to your data: it joins a session and works on its tasks.",
    no_args_is_help=True,
)


@app.command()
def train(
    session: Annotated[
        str, typer.Option("--session", help="Id of the session to join (10 hex characters).")
    ],
    train_path: Annotated[
        str,
        typer.Option(
            "--train-path",
            help="Training table: .parquet/.pq or .csv; a local path or an fsspec URL "
            "(file://, s3:// with `fedsilo[s3]`).",
        ),
    ],
    client_name: Annotated[
        str,
        typer.Option(
            "--client-name",
            help="This client's name in the session. Restarting with the same name resumes "
            "the same participant.",
        ),
    ],
    test_path: Annotated[
        str | None,
        typer.Option(
            "--test-path",
            help="Test table, same format rules. Optional: without it the package evaluates "
            "on the training data.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Mini-batch size for local work.")
    ] = 1024,
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for local computation (torch). Keep it low when several clients "
            "share a machine.",
        ),
    ] = 1,
    quiet: QuietOption = False,
    remove_after_complete: Annotated[
        bool,
        typer.Option(
            "--remove-after-complete",
            hidden=True,
            help="Accepted for compatibility with integrate.ai's client; has no effect.",
        ),
    ] = False,
) -> None:
    """Join a session with this silo's data, work on its tasks, exit when it ends.

    The data is loaded and validated before joining: a dataset the session cannot use is
    refused with every problem listed, and nothing is sent. Exits 0 when the session
    completes, 6 with the server's reason when it fails or is canceled.
    """
    from fedsilo.client.runtime import ClientRuntime
    from fedsilo.errors import SessionError
    from fedsilo.wire import SessionStatus

    _set_threads(threads)

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")

    with open_api(url, token) as api:
        runtime = ClientRuntime(
            api,
            session_id=session,
            client_name=client_name,
            train_path=train_path,
            test_path=test_path,
            batch_size=batch_size,
            poll_wait=poll_wait,
            reconnect_timeout=reconnect_timeout,
            on_event=progress,
        )
        status = runtime.run()
    if status is not SessionStatus.completed:
        reason = runtime.ended.reason if runtime.ended is not None else None
        raise SessionError(session, str(status), reason)


@app.command()
def eda(
    session: Annotated[
        str, typer.Option("--session", help="Id of the session to join (10 hex characters).")
    ],
    dataset_path: Annotated[
        str,
        typer.Option(
            "--dataset-path",
            help="The dataset: .parquet/.pq or .csv; a local path or an fsspec URL "
            "(file://, s3:// with `fedsilo[s3]`).",
        ),
    ],
    dataset_name: Annotated[
        str,
        typer.Option(
            "--dataset-name",
            help="The dataset's name; the session's data_config says which of its columns "
            "are analysed (all, when it does not name it).",
        ),
    ],
    client_name: Annotated[
        str | None,
        typer.Option(
            "--client-name",
            help="This client's name in the session. Default: the dataset name.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    quiet: QuietOption = False,
    remove_after_complete: Annotated[
        bool,
        typer.Option(
            "--remove-after-complete",
            hidden=True,
            help="Accepted for compatibility with integrate.ai's client; has no effect.",
        ),
    ] = False,
) -> None:
    """Join an EDA session with one dataset: send its per-column aggregates, never rows.

    The dataset is loaded and checked before joining (the selected columns exist, the
    session's minimum row count is met): a dataset the session cannot use is refused with
    every problem listed, and nothing is sent. With the session's epsilon set, noise is
    added here, before anything leaves. Exits 0 when the session completes, 6 with the
    server's reason when it fails or is canceled.
    """
    from fedsilo.client.runtime import ClientRuntime
    from fedsilo.errors import SessionError
    from fedsilo.wire import SessionStatus

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")

    with open_api(url, token) as api:
        runtime = ClientRuntime.for_dataset(
            api,
            session_id=session,
            dataset_path=dataset_path,
            dataset_name=dataset_name,
            client_name=client_name,
            poll_wait=poll_wait,
            reconnect_timeout=reconnect_timeout,
            on_event=progress,
        )
        status = runtime.run()
    if status is not SessionStatus.completed:
        reason = runtime.ended.reason if runtime.ended is not None else None
        raise SessionError(session, str(status), reason)


def _set_threads(threads: int) -> None:
    # Two clients and a server often share a small machine; torch's default of one thread
    # per core makes them fight over the cores and run slower than with one thread each.
    # torch reads OMP_NUM_THREADS when it is first imported, so a package that never needs
    # torch (echo, eda) does not pay ~200 MB and a second of import for this setting.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
