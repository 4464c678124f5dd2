"""The scopes a token may carry: the seed's nine, plus ``admin`` and ``client``.

Shared by the server (which enforces them), the SDK and the CLI (which name them). What each
one lets a token do:

========================  ==============================================================
``start_session``         start a created session (any user's)
``create_session``        create a session; the token's user owns it
``cancel_user_session``   cancel a session the token's user owns
``read_user_session``     read a session the token's user owns (status, metrics, logs,
                          participants) and list the user's sessions
``read_all_session``      read any user's session, and list them all
``custom_model``          upload and use a custom model package
``delete_user_session``   delete a session the token's user owns
``model_download``        download any session's trained model
``user_model_download``   download the trained model of a session the token's user owns
``admin``                 users, tokens and the audit log; holds every other scope
``client``                a silo client: join sessions, then poll, reply and relay only as
                          the participant whose credential it presents
========================  ==============================================================

The ``*_user_*`` scopes act only on sessions whose owner is the token's user; an admin token
(the seed's "unscoped" token) holds every scope, ``client`` included.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "MAX_SCOPED_TOKEN_DAYS",
    "MAX_TOKEN_DAYS",
    "OWNER_SCOPES",
    "SCOPE_HELP",
    "Scope",
    "parse_scopes",
]


class Scope(StrEnum):
    """A permission a token carries; the value is what the API and ``token_info`` spell."""

    start_session = "start_session"
    create_session = "create_session"
    cancel_user_session = "cancel_user_session"
    read_user_session = "read_user_session"
    read_all_session = "read_all_session"
    custom_model = "custom_model"
    delete_user_session = "delete_user_session"
    model_download = "model_download"
    user_model_download = "user_model_download"
    admin = "admin"
    client = "client"


#: scopes that act only on sessions the token's own user owns
OWNER_SCOPES = frozenset(
    {
        Scope.cancel_user_session,
        Scope.read_user_session,
        Scope.delete_user_session,
        Scope.user_model_download,
    }
)

SCOPE_HELP: dict[Scope, str] = {
    Scope.start_session: "start a created session",
    Scope.create_session: "create a session (owned by the token's user)",
    Scope.cancel_user_session: "cancel a session the user created",
    Scope.read_user_session: "read sessions the user created",
    Scope.read_all_session: "read every user's sessions",
    Scope.custom_model: "upload and use a custom model package",
    Scope.delete_user_session: "delete a session the user created",
    Scope.model_download: "download any session's trained model",
    Scope.user_model_download: "download the model of a session the user created",
    Scope.admin: "users, tokens and the audit log; holds every scope",
    Scope.client: "a silo client: join sessions, poll and reply as its own participant",
}

#: the longest life of a token carrying any scope but ``admin`` (the seed: 30 days)
MAX_SCOPED_TOKEN_DAYS = 30
#: the longest life any token may be given (an admin token may also never expire)
MAX_TOKEN_DAYS = 3650


def parse_scopes(names: list[str] | tuple[str, ...]) -> tuple[Scope, ...]:
    """The scopes named, in order without repeats; ``ValueError`` naming every unknown one."""
    unknown = [name for name in names if name not in Scope.__members__]
    if unknown:
        known = ", ".join(Scope.__members__)
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; known: {known}")
    return tuple(dict.fromkeys(Scope(name) for name in names))
