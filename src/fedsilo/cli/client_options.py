"""The options every ``fedsilo client`` command shares, declared once, and the run they feed.

A command of :mod:`fedsilo.cli.client` declares only its own options (its tables, its name,
its batch size) and is wrapped by :func:`client_command`, which appends the shared ones
(``--url``, ``--token``, ``--ca-cert``, ``--poll-wait``, ``--reconnect-timeout``,
``--threads``, ``--quiet``, ``--log-interval``, ``--remove-after-complete``, ``--policy``) to
its signature for typer and hands them to the command as one :class:`RunOptions`. So their
names, help texts, limits and defaults are the same in every command.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from fedsilo.cli import CaCertOption, TokenOption, UrlOption, open_api

__all__ = ["RunOptions", "SessionOption", "client_command"]

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


@dataclass(frozen=True)
class RunOptions:
    """The shared options of one ``fedsilo client`` command, as the user gave them.

    ``threads`` is None for a command without ``--threads`` (one whose packages never run
    torch), which then leaves the thread settings alone.
    """

    url: str | None = None
    token: str | None = None
    ca_cert: str | None = None
    poll_wait: float = 30.0
    reconnect_timeout: float = 300.0
    threads: int | None = 1
    quiet: bool = False
    log_interval: float = 0.0
    remove_after_complete: bool = False
    policy: str | None = None

    def run(
        self,
        *,
        approve_custom_package: bool = False,
        approve_package: list[str] | None = None,
        **runtime_options: Any,
    ) -> None:
        """Run one participant to the end of its session; a session that did not complete
        is a :class:`~fedsilo.errors.SessionError` (exit 6).

        ``runtime_options`` are the command's own (session id, client name, tables by
        role, batch size, package options), passed to
        :class:`~fedsilo.client.runtime.ClientRuntime`.
        """
        from fedsilo.client.policy import load_policy
        from fedsilo.client.runtime import ClientRuntime
        from fedsilo.errors import SessionError
        from fedsilo.packages.custom.source import (
            ApprovedPackages,
            PackageApproval,
            package_source,
        )
        from fedsilo.wire import SessionStatus

        if self.threads is not None:
            _set_threads(self.threads)
        # Read before connecting: a policy file in error stops the client before anything.
        policy = load_policy(self.policy) if self.policy else None
        # The policy's approved digests are approvals too (checked on the downloaded archive).
        pins = [*(approve_package or []), *(policy.approved_package_digests if policy else [])]
        approval = PackageApproval.parse(approve_custom_package, pins)

        def progress(line: str) -> None:
            if not self.quiet:
                typer.echo(f"[{time.strftime('%H:%M:%S')}] {line}")

        with open_api(self.url, self.token, self.ca_cert) as api:
            runtime = ClientRuntime(
                api,
                on_event=progress,
                policy=policy,
                poll_wait=self.poll_wait,
                reconnect_timeout=self.reconnect_timeout,
                log_interval=self.log_interval,
                remove_after_complete=self.remove_after_complete,
                **runtime_options,
            )
            # An uploaded package is found (and run only when approved) through this source.
            uploaded = ApprovedPackages(api, runtime.state_dir, approval, progress)
            with package_source(uploaded):
                status = runtime.run()
        if status is not SessionStatus.completed:
            reason = runtime.ended.reason if runtime.ended is not None else None
            raise SessionError(runtime.session_id, str(status), reason)


def _shared(name: str, annotation: Any) -> inspect.Parameter:
    default = getattr(RunOptions, name)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


# In the order --help lists them, after the command's own options.
_SHARED = (
    _shared("url", UrlOption),
    _shared("token", TokenOption),
    _shared("ca_cert", CaCertOption),
    _shared("poll_wait", PollWaitOption),
    _shared("reconnect_timeout", ReconnectTimeoutOption),
    _shared("threads", ThreadsOption),
    _shared("quiet", QuietOption),
    _shared("log_interval", LogIntervalOption),
    _shared("remove_after_complete", RemoveAfterCompleteOption),
    _shared("policy", PolicyOption),
)


def client_command(*, threads: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a client command the shared options.

    The decorated function takes its own options plus a keyword ``options: RunOptions``;
    typer sees its own options followed by the shared ones. ``threads=False`` leaves out
    ``--threads``, for commands whose packages never import torch.
    """

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "options"]
        shared = [p for p in _SHARED if threads or p.name != "threads"]

        @functools.wraps(func)
        def command(**values: Any) -> None:
            given = {p.name: values.pop(p.name) for p in shared}
            if not threads:
                given["threads"] = None
            func(options=RunOptions(**given), **values)

        parameters = [*own, *shared]
        # typer reads the signature (inspect honours __signature__ before __wrapped__) and
        # the type hints; both must show the shared options, not `options`.
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
        return command

    return decorate


def _set_threads(threads: int) -> None:
    # Two clients and a server often share a small machine; torch's default of one thread
    # per core makes them fight over the cores and run slower than with one thread each.
    # torch reads OMP_NUM_THREADS when it is first imported, so a package that never needs
    # torch (echo, eda) does not pay ~200 MB and a second of import for this setting.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
