"""``fedsilo client``: run a silo's client for one session, and read its log afterwards.

The seed documentation's spellings are accepted as they are written: ``--session-id`` for
``--session`` and ``--instruction-polling-time`` for ``--poll-wait`` (its AWS Batch job
definition), ``--log-interval``, ``--remove-after-complete``, ``fedsilo client version`` and
``fedsilo client log`` (the seed's ``iai client version`` / ``iai client log``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Any

import typer

from fedsilo.cli import TokenOption, UrlOption, open_api

# Options the client commands share (one definition, so their help and limits agree).
SessionOption = Annotated[
    str,
    typer.Option(
        "--session",
        "--session-id",
        help="Id of the session (10 hex characters).",
    ),
]
PollWaitOption = Annotated[
    float,
    typer.Option(
        "--poll-wait",
        "--instruction-polling-time",
        min=0.1,
        help="Seconds each long-poll for the next task (instruction) waits on the server; "
        "tasks arrive as soon as they are sent, so this is the longest wait per request.",
    ),
]
LogIntervalOption = Annotated[
    float,
    typer.Option(
        "--log-interval",
        min=0.0,
        help="Seconds between the per-task progress lines printed (task received, reply "
        "sent); 0 prints each. Other lines always print; the client's log keeps every line "
        "(`fedsilo client log`).",
    ),
]
RemoveAfterCompleteOption = Annotated[
    bool,
    typer.Option(
        "--remove-after-complete",
        help="Once the session completes, remove this client's local state for it (key "
        "pair, credential, released replies). Its log stays for `fedsilo client log`; a "
        "failed or canceled session keeps its state.",
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
PolicyOption = Annotated[
    str | None,
    typer.Option(
        "--policy",
        # fedsilo.client.policy.POLICY_ENV (not imported: the CLI starts without pydantic)
        envvar="FEDSILO_CLIENT_POLICY",
        help="The data owner's policy file (TOML: min_rows, max_epsilon, require_dp, "
        "require_secure_aggregation, allowed_packages, approved_package_digests), enforced "
        "before joining and on every release; a refusal names its rule.",
        show_default=False,
    ),
]
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    threads: ThreadsOption = 1,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
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
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
        approve_custom_package=approve_custom_package,
        approve_package=approve_package or [],
    )


@app.command()
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
) -> None:
    """Join an EDA session with one dataset: send its per-column aggregates, never rows.

    The dataset is loaded and checked before joining (the selected columns exist, the
    session's minimum row count is met): a dataset the session cannot use is refused with
    every problem listed, and the server is told only that this client refused and why, in
    one line (no paths, no values). With the session's epsilon set, noise is
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
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
    )


@app.command()
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
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
    _run(
        url,
        token,
        quiet,
        session_id=session,
        client_name=client_name,
        tables={"train": train_path, "test": test_path},
        batch_size=1,  # no mini-batches in linkage
        poll_wait=poll_wait,
        reconnect_timeout=reconnect_timeout,
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
    )


@app.command("vfl-train")
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    threads: ThreadsOption = 1,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
) -> None:
    """Join a VFL training session (SplitNN) as one party.

    Run with the state directory and client name of the PRL session: the tables are checked
    against the digests kept from it. Only embeddings (passive party) or their gradients
    (active party) leave the silo, sealed to the other party. Exits 0 when the session
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
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
        package_options={"storage_path": storage_path},
    )


@app.command("vfl-predict")
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    threads: ThreadsOption = 1,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
) -> None:
    """Join a VFL prediction session as one party: the active party writes one CSV row per
    aligned record (its id columns, then the predictions) at --storage-path.

    Exits 0 when the session completes, 6 with the server's reason when it fails or is
    canceled.
    """
    _set_threads(threads)
    _run(
        url,
        token,
        quiet,
        session_id=session,
        client_name=client_name,
        tables={"test": dataset_path},
        batch_size=batch_size,
        poll_wait=poll_wait,
        reconnect_timeout=reconnect_timeout,
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
        package_options={"storage_path": storage_path, "raw_output": raw_output},
    )


@app.command()
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
    url: UrlOption = None,
    token: TokenOption = None,
    poll_wait: PollWaitOption = 30.0,
    reconnect_timeout: ReconnectTimeoutOption = 300.0,
    threads: ThreadsOption = 1,
    quiet: QuietOption = False,
    log_interval: LogIntervalOption = 0.0,
    remove_after_complete: RemoveAfterCompleteOption = False,
    policy: PolicyOption = None,
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
        log_interval=log_interval,
        remove_after_complete=remove_after_complete,
        policy=policy,
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


def _run(url: str | None, token: str | None, quiet: bool, **options: Any) -> None:
    """Run one participant to the end of its session; a session that did not complete is
    a :class:`~fedsilo.errors.SessionError` (exit 6)."""
    from fedsilo.client.policy import load_policy
    from fedsilo.client.runtime import ClientRuntime
    from fedsilo.errors import SessionError
    from fedsilo.packages.custom.source import ApprovedPackages, PackageApproval, package_source
    from fedsilo.wire import SessionStatus

    # Read before connecting: a policy file in error stops the client before anything.
    policy_path = options.pop("policy", None)
    policy = load_policy(policy_path) if policy_path else None
    # The policy's approved digests are approvals too (checked on the downloaded archive).
    pins = [
        *options.pop("approve_package", []),
        *(policy.approved_package_digests if policy else []),
    ]
    approval = PackageApproval.parse(options.pop("approve_custom_package", False), pins)

    def progress(line: str) -> None:
        if not quiet:
            typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")

    with open_api(url, token) as api:
        runtime = ClientRuntime(api, on_event=progress, policy=policy, **options)
        # An uploaded package is found (and run only when approved) through this source.
        uploaded = ApprovedPackages(api, runtime.state_dir, approval, progress)
        with package_source(uploaded):
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
