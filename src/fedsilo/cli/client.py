"""``fedsilo client``: run a silo's client for one session."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Any

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
ThreadsOption = Annotated[
    int,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads for local computation (torch). Keep it low when several clients "
        "share a machine.",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print no progress lines, only errors.")
]

__all__ = ["app", "eda", "join", "train"]

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
    threads: ThreadsOption = 1,
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
    _set_threads(threads)
    _run(
        url,
        token,
        quiet,
        session_id=session,
        client_name=client_name,
        tables={"train": train_path, "test": test_path},
        batch_size=batch_size,
        poll_wait=poll_wait,
        reconnect_timeout=reconnect_timeout,
    )


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
    _run(
        url,
        token,
        quiet,
        session_id=session,
        client_name=client_name if client_name is not None else dataset_name,
        tables={"dataset": dataset_path},
        dataset_name=dataset_name,
        batch_size=1,  # no mini-batches in analytics
        poll_wait=poll_wait,
        reconnect_timeout=reconnect_timeout,
    )


@app.command()
def join(
    session: Annotated[
        str, typer.Option("--session", help="Id of the session to join (10 hex characters).")
    ],
    table: Annotated[
        list[str],
        typer.Option(
            "--table",
            help="A table by role, ROLE=PATH (repeat for each): the roles the session's "
            "package reads, e.g. train=a.parquet test=b.csv, or dataset=d.parquet with "
            "--dataset-name.",
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
    dataset_name: Annotated[
        str | None,
        typer.Option(
            "--dataset-name",
            help="For sessions of named datasets (EDA): the dataset's name.",
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
    threads: ThreadsOption = 1,
    quiet: QuietOption = False,
) -> None:
    """Join any session with the tables its package reads, given by role.

    `train` and `eda` are this command with their roles named. The tables are loaded and
    checked before joining; exits 0 when the session completes, 6 with the server's reason
    when it fails or is canceled.
    """
    tables: dict[str, str | None] = {}
    for item in table:
        role, sep, path = item.partition("=")
        if not sep or not role or not path:
            raise typer.BadParameter(
                f"expected ROLE=PATH (e.g. train=silo0.parquet). Got {item!r}.",
                param_hint="--table",
            )
        if role in tables:
            raise typer.BadParameter(f"role {role!r} given twice.", param_hint="--table")
        tables[role] = path
    _set_threads(threads)
    _run(
        url,
        token,
        quiet,
        session_id=session,
        client_name=client_name,
        tables=tables,
        dataset_name=dataset_name,
        batch_size=batch_size,
        poll_wait=poll_wait,
        reconnect_timeout=reconnect_timeout,
    )


def _run(url: str | None, token: str | None, quiet: bool, **options: Any) -> None:
    """Run one participant to the end of its session; a session that did not complete is
    a :class:`~fedsilo.errors.SessionError` (exit 6)."""
    from fedsilo.client.runtime import ClientRuntime
    from fedsilo.errors import SessionError
    from fedsilo.wire import SessionStatus

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")

    with open_api(url, token) as api:
        runtime = ClientRuntime(api, on_event=progress, **options)
        status = runtime.run()
    if status is not SessionStatus.completed:
        reason = runtime.ended.reason if runtime.ended is not None else None
        raise SessionError(runtime.session_id, str(status), reason)


def _set_threads(threads: int) -> None:
    # Two clients and a server often share a small machine; torch's default of one thread
    # per core makes them fight over the cores and run slower than with one thread each.
    # torch reads OMP_NUM_THREADS when it is first imported, so a package that never needs
    # torch (echo, eda) does not pay ~200 MB and a second of import for this setting.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
