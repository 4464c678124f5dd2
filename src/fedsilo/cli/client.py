"""``fedsilo client``: run a silo's client for one session, and read its log afterwards.

The seed documentation's spellings are accepted as they are written: ``--session-id`` for
``--session`` and ``--instruction-polling-time`` for ``--poll-wait`` (its AWS Batch job
definition), ``--log-interval``, ``--remove-after-complete``, ``fedsilo client version`` and
``fedsilo client log`` (the seed's ``iai client version`` / ``iai client log``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from fedsilo.cli.client_options import RunOptions, SessionOption, client_command

ApproveCustomOption = Annotated[
    bool,
    typer.Option(
        "--approve-custom-package",
        help="Run the session's uploaded custom package, whatever its digest (it is logged). "
        "Its code runs in this process with this client's permissions on the silo.",
    ),
]
ApprovePackageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--approve-package",
        metavar="NAME@SHA256",
        help="Run the uploaded package NAME only if its archive has this SHA-256 digest "
        "(`fedsilo package list` shows it); repeatable.",
        show_default=False,
    ),
]

__all__ = ["app", "eda", "join", "log", "prl", "train", "version", "vfl_predict", "vfl_train"]

app = typer.Typer(
    rich_markup_mode="markdown",
    help="Run a client next to your data: it joins a session and works on its tasks.",
    no_args_is_help=True,
)


@app.command()
@client_command()
def train(
    session: SessionOption,
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
    *,
    options: RunOptions,
    approve_custom_package: ApproveCustomOption = False,
    approve_package: ApprovePackageOption = None,
) -> None:
    """Join a session with this silo's data, work on its tasks, exit when it ends.

    The data is loaded and validated before joining: a dataset the session cannot use is
    refused with every problem listed, and the server is told only that this client refused
    and why, in one line (no paths, no values). Exits 0 when the session completes, 6 with
    the server's reason when it fails or is canceled.

    A session of an uploaded custom package runs that package's code here only with
    `--approve-custom-package` or `--approve-package NAME@SHA256`; without approval the client
    refuses before joining and prints the package's name and digest to review.
    """
    options.run(
        session_id=session,
        client_name=client_name,
        tables={"train": train_path, "test": test_path},
        batch_size=batch_size,
        approve_custom_package=approve_custom_package,
        approve_package=approve_package or [],
    )


@app.command()
@client_command(threads=False)
def eda(
    session: SessionOption,
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
    *,
    options: RunOptions,
) -> None:
    """Join an EDA session with one dataset: send its per-column aggregates, never rows.

    The dataset is loaded and checked before joining (the selected columns exist, the
    session's minimum row count is met): a dataset the session cannot use is refused with
    every problem listed, and the server is told only that this client refused and why, in
    one line (no paths, no values). With the session's epsilon set, noise is
    added here, before anything leaves. Exits 0 when the session completes, 6 with the
    server's reason when it fails or is canceled.
    """
    options.run(
        session_id=session,
        client_name=client_name if client_name is not None else dataset_name,
        tables={"dataset": dataset_path},
        dataset_name=dataset_name,
        batch_size=1,  # no mini-batches in analytics
    )


@app.command()
@client_command(threads=False)
def prl(
    session: SessionOption,
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
            help="This client's name: one of the clients the session's data_config names "
            "(its id columns are read from there).",
        ),
    ],
    test_path: Annotated[
        str | None,
        typer.Option(
            "--test-path",
            help="Test table, same format rules; aligned separately from the training "
            "table. Either every client of the session gives one or none does.",
            show_default=False,
        ),
    ] = None,
    *,
    options: RunOptions,
) -> None:
    """Join a private record linkage session: find the records this silo shares with the
    others without sending an id.

    The id columns are checked before joining (present, no nulls, integers or strings, no
    repeated id tuple): a table that fails is refused with every problem listed (counts and
    row positions, never values), and the server is told only that this client refused and
    why. Only keyed hashes (or, with psi_protocol ecdh, blinded points sealed to the other
    client) leave the silo. Keep this client's state directory: a later VFL session checks
    the same tables against the digest key kept there (--remove-after-complete removes it).
    Exits 0 when the session completes, 6 with the server's reason when it fails or is
    canceled.
    """
    options.run(
        session_id=session,
        client_name=client_name,
        tables={"train": train_path, "test": test_path},
        batch_size=1,  # no mini-batches in linkage
    )


@app.command("vfl-train")
@client_command()
def vfl_train(
    session: SessionOption,
    train_path: Annotated[
        str,
        typer.Option(
            "--train-path",
            help="Training table (the one linked in the PRL session): .parquet/.pq or .csv; "
            "a local path or an fsspec URL.",
        ),
    ],
    test_path: Annotated[
        str,
        typer.Option(
            "--test-path",
            help="Test table (the one linked in the PRL session); the active party reports "
            "each round's metrics on its aligned rows.",
        ),
    ],
    storage_path: Annotated[
        str,
        typer.Option(
            "--storage-path",
            help="Local folder where this party keeps its part of the network (a checkpoint "
            "per round, under <session>-<client name>/); it never leaves this machine.",
        ),
    ],
    client_name: Annotated[
        str,
        typer.Option(
            "--client-name",
            help="This client's name: the one it had in the PRL session, and a key of the "
            "session's data_config.",
        ),
    ],
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Mini-batch size; the label client's is used by every party.",
        ),
    ] = 1024,
    *,
    options: RunOptions,
) -> None:
    """Join a VFL training session (SplitNN) as one party.

    Run with the state directory and client name of the PRL session: the tables are checked
    against the digests kept from it. Only embeddings (passive party) or their gradients
    (active party) leave the silo, sealed to the other party. Exits 0 when the session
    completes, 6 with the server's reason when it fails or is canceled.
    """
    options.run(
        session_id=session,
        client_name=client_name,
        tables={"train": train_path, "test": test_path},
        batch_size=batch_size,
        package_options={"storage_path": storage_path},
    )


@app.command("vfl-predict")
@client_command()
def vfl_predict(
    session: SessionOption,
    dataset_path: Annotated[
        str,
        typer.Option(
            "--dataset-path",
            help="The table to predict: the test table linked in the PRL session.",
        ),
    ],
    storage_path: Annotated[
        str,
        typer.Option(
            "--storage-path",
            help="Active party: the CSV file the predictions are written to. Passive party: "
            "ignored (it writes nothing).",
        ),
    ],
    client_name: Annotated[
        str,
        typer.Option(
            "--client-name",
            help="This client's name, as in the training session (its model part is found "
            "through this client's state directory).",
        ),
    ],
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per embedding message.")
    ] = 1024,
    raw_output: Annotated[
        bool,
        typer.Option(
            "--raw-output",
            help="Write the label model's raw outputs (logits) instead of class probabilities.",
        ),
    ] = False,
    *,
    options: RunOptions,
) -> None:
    """Join a VFL prediction session as one party: the active party writes one CSV row per
    aligned record (its id columns, then the predictions) at --storage-path.

    Exits 0 when the session completes, 6 with the server's reason when it fails or is
    canceled.
    """
    options.run(
        session_id=session,
        client_name=client_name,
        tables={"test": dataset_path},
        batch_size=batch_size,
        package_options={"storage_path": storage_path, "raw_output": raw_output},
    )


@app.command()
@client_command()
def join(
    session: SessionOption,
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
    *,
    options: RunOptions,
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
    options.run(
        session_id=session,
        client_name=client_name,
        tables=tables,
        dataset_name=dataset_name,
        batch_size=batch_size,
    )


@app.command()
def version() -> None:
    """Print the client's version (the seed's `iai client version`)."""
    from fedsilo import __version__

    typer.echo(f"fedsilo client {__version__}")


@app.command()
def log(
    session: SessionOption,
    client_name: Annotated[
        str | None,
        typer.Option(
            "--client-name",
            help="Print only this client's log. Default: every client of the session that "
            "ran with this state directory.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print this machine's client log of a session, to debug it (the seed's `iai client log`).

    Every client run writes its progress lines, the refusal or error that stopped it and the
    session's end, with UTC times, to its state directory ($FEDSILO_CLIENT_STATE_DIR, else
    ~/.fedsilo/client). Several clients of one session on this machine are printed one after
    the other, each under a `== name ==` line.
    """
    from fedsilo.client.replies import default_state_dir
    from fedsilo.client.sessionlog import session_logs
    from fedsilo.errors import FedsiloError
    from fedsilo.wire import SESSION_ID_PATTERN

    if not SESSION_ID_PATTERN.match(session):
        raise typer.BadParameter(
            f"expected 10 lowercase hex characters (e.g. '3f9a0c12de'). Got {session!r}.",
            param_hint="--session",
        )
    state_dir = default_state_dir()
    logs = session_logs(state_dir, session)
    if client_name is not None:
        logs = {name: path for name, path in logs.items() if name == client_name}
    if not logs:
        who = f"client {client_name!r} of session" if client_name else "session"
        raise FedsiloError(
            f"No client log of {who} {session} in {state_dir}: a client writes one when it "
            "runs the session (fedsilo client train/eda/join) with this state directory "
            "($FEDSILO_CLIENT_STATE_DIR, else ~/.fedsilo/client)."
        )
    for name, path in logs.items():
        if len(logs) > 1:
            typer.echo(f"== {name} ({path}) ==")
        typer.echo(path.read_text(encoding="utf-8"), nl=False)
