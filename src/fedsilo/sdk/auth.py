"""Users, scoped tokens and the audit log, from Python: the seed's ``auth_client``.

::

    from fedsilo.auth import connect_to_auth_client, Scope

    auth = connect_to_auth_client(token=ADMIN_TOKEN)     # url: $FEDSILO_URL, else local
    user = auth.create_user("demo-user")
    tok = auth.create_token(user_id="demo-user",
                            scopes=[Scope.create_session, Scope.read_user_session])
    auth.token_info(tok["token"])
    auth.revoke_token(tok["token_id"])
    auth.delete_user("demo-user")

Every call needs an ``admin`` token, but :meth:`AuthClient.token_info` and
:meth:`AuthClient.revoke_token` on the caller's own token. Answers
are plain dicts in the server's JSON shape (times as ISO 8601 strings), as the seed returns
them. :meth:`AuthClient.create_user` logs to the ``fedsilo.auth`` logger at INFO; a notebook
shows those lines after ``logging.basicConfig(level=logging.INFO)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import httpx

from fedsilo.http import ApiClient, resolve_token, resolve_url
from fedsilo.scopes import Scope, parse_scopes
from fedsilo.wire import (
    AuditEntry,
    TokenCreated,
    TokenInfo,
    TokenPublic,
    UserPublic,
)

__all__ = ["AuthClient", "connect_to_auth_client"]

logger = logging.getLogger("fedsilo.auth")

ScopeNames = Iterable[Scope | str] | str


class AuthClient:
    """Manage users and tokens and read the audit log of one fedsilo server.

    Parameters
    ----------
    api : ApiClient
        The authenticated connection to use (``connect_to_auth_client`` makes one; a
        :class:`fedsilo.Client`'s ``.api`` serves too). Closing the AuthClient closes it.
    """

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    @property
    def url(self) -> str:
        return self._api.url

    @property
    def api(self) -> ApiClient:
        """The underlying HTTP client."""
        return self._api

    # --------------------------------------------------------------------- users

    def create_user(self, name: str, user_type: str = "generated") -> dict[str, Any]:
        """Create a user; the server generates its unique, email-like ``id``.

        Parameters
        ----------
        name : str
            The user's name, e.g. ``"demo-user"`` or ``"user1@mycompany.com"``; tokens are
            created for it by this name (``create_token(user_id=name)``).
        user_type : {"generated", "human"}
            ``generated`` for a machine user made through the SDK (the seed's kind), ``human``
            for a person.

        Returns
        -------
        dict
            ``id``, ``name``, ``user_type``, ``active``, ``created_by`` (the creator's id),
            ``created_at``.

        Raises
        ------
        ConflictError
            When a user of that name exists.
        PermissionDenied
            When the token is not an admin token.
        """
        answer = self._api.post_json("/users", {"name": name, "user_type": user_type})
        user = UserPublic.model_validate(answer)
        kind = "Machine user" if user.user_type == "generated" else "User"
        logger.info(
            "%s %s(%s) created by %s.", kind, user.name, user.id, user.created_by or "the server"
        )
        if user.active:
            logger.info("User activated.")
        return user.model_dump(mode="json")

    def list_users(self) -> list[dict[str, Any]]:
        """Every user, oldest first (dicts as :meth:`create_user` returns)."""
        return [
            UserPublic.model_validate(item).model_dump(mode="json")
            for item in self._api.get_json("/users")
        ]

    def delete_user(self, name: str) -> dict[str, Any]:
        """Delete the user called ``name`` and revoke all its tokens.

        The sessions it owns stay; a new user given the same name does not own them (user ids
        are never reused).

        Raises
        ------
        NotFoundError
            When no user has that name.
        ConflictError
            For the caller's own user, or the last admin user.
        """
        answer = self._api.request("DELETE", f"/users/{name}").json()
        return UserPublic.model_validate(answer).model_dump(mode="json")

    # -------------------------------------------------------------------- tokens

    def create_token(
        self,
        user_id: str | None = None,
        scopes: ScopeNames | None = None,
        expires_in_days: float | None = 30,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Create a token for a user and return it with its secret (shown only this once).

        Parameters
        ----------
        user_id : str, optional
            The user's name (the seed passes the name here) or generated id; the caller's
            own user when omitted.
        scopes : list of Scope or str, or str, optional
            What the token may do; a string is read as space-separated names (the ``scope``
            of :meth:`token_info`). Default: the server's least privilege
            (``read_user_session``), never ``admin``.
        expires_in_days : float or None, default 30
            Days until the token expires: at most 30 for a scoped token; a token whose only
            scope is ``admin`` may live longer, or never expire (None).
        name : str, optional
            A label for the token, e.g. ``"silo-a"``; the server picks one when omitted.

        Returns
        -------
        dict
            ``token`` (the secret), ``token_id`` (the seed's key, the same as ``id``),
            ``id``, ``name``, ``scopes``, ``user_id`` (the user's generated id),
            ``user_name``, ``created_at``, ``expires_at``, ``revoked_at``, ``last_used_at``.

        Raises
        ------
        ValueError
            When a scope name is unknown (the message lists the known ones).
        ValidationError
            When the server refuses a field, e.g. a scoped token asked to live 31 days.
        NotFoundError
            When no user has that name or id.
        """
        body: dict[str, Any] = {"expires_in_days": expires_in_days}
        if user_id is not None:
            body["user_id"] = user_id
        if name is not None:
            body["name"] = name
        if scopes is not None:
            body["scopes"] = [str(scope) for scope in scope_list(scopes, "create_token")]
        created = TokenCreated.model_validate(self._api.post_json("/tokens", body))
        return {"token_id": created.id, **created.model_dump(mode="json")}

    def token_info(self, token: str) -> dict[str, Any]:
        """What a token is: the seed's ``token_info`` shape.

        Parameters
        ----------
        token : str
            The secret of the token to inspect. Any token may inspect itself; inspecting
            another needs an admin token.

        Returns
        -------
        dict
            ``customer``, ``email`` (the user's generated id), ``realm``, ``role`` (``admin``
            or ``user``), ``env``, ``token_id``, ``iss``, ``iat`` and ``expires`` (epoch
            seconds; ``expires`` None for a token that never expires), ``renewable``,
            ``scope`` (space-separated), ``user_id`` (the user's name), ``user_type``,
            ``active``.
        """
        answer = self._api.post_json("/tokens/info", {"token": token})
        return TokenInfo.model_validate(answer).model_dump(mode="json")

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token by its id (``create_token(...)["token_id"]``): calls made with it are
        refused (401) from now on. Needs an admin token, or the token being revoked.

        Raises
        ------
        NotFoundError
            When no token has that id.
        """
        answer = self._api.request("DELETE", f"/tokens/{token_id}").json()
        return TokenPublic.model_validate(answer).model_dump(mode="json")

    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every token (never a secret), or only those of ``user`` (a name or id)."""
        params = {"user": user} if user is not None else None
        return [
            TokenPublic.model_validate(item).model_dump(mode="json")
            for item in self._api.get_json("/tokens", params=params)
        ]

    # --------------------------------------------------------------------- audit

    def audit(
        self,
        user: str | None = None,
        action: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        *,
        target: str | None = None,
    ) -> list[dict[str, Any]]:
        """Audit entries matching every filter given, oldest first.

        Parameters
        ----------
        user : str, optional
            A user's name or generated id.
        action : str, optional
            Exactly, or a dotted prefix: ``"session"`` matches ``session.create``,
            ``session.start``, ...
        since : datetime or str, optional
            Entries at or after this time (a str in ISO 8601; naive times are UTC).
        limit : int, optional
            At most this many, the newest when more match; default: the server's.
        target : str, optional
            What the call acted on: a session id, token id or user name.

        Returns
        -------
        list of dict
            ``seq``, ``at``, ``action``, ``target``, ``outcome`` (``ok`` or ``denied``),
            ``user_id``, ``token_id``, ``address``, ``detail``.
        """
        params: dict[str, Any] = {}
        if user is not None:
            params["user"] = user
        if action is not None:
            params["action"] = action
        if target is not None:
            params["target"] = target
        if since is not None:
            params["since"] = since.isoformat() if isinstance(since, datetime) else since
        if limit is not None:
            params["limit"] = limit
        return [
            AuditEntry.model_validate(item).model_dump(mode="json")
            for item in self._api.get_json("/audit", params=params or None)
        ]

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the connection; no call can be made afterwards."""
        self._api.close()

    def __enter__(self) -> AuthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuthClient(url={self.url!r})"


def scope_list(scopes: ScopeNames, where: str) -> tuple[Scope, ...]:
    """``scopes`` as :class:`Scope` values; ``ValueError`` naming ``where`` and every
    unknown name."""
    names = scopes.split() if isinstance(scopes, str) else [str(scope) for scope in scopes]
    try:
        return parse_scopes(names)
    except ValueError as exc:
        raise ValueError(f"The 'scopes' parameter of {where}: {exc}.") from None


def connect_to_auth_client(
    url: str | None = None,
    token: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float = 30.0,
    ca_cert: str | os.PathLike[str] | None = None,
) -> AuthClient:
    """Connect to a fedsilo server to manage users and tokens.

    Parameters
    ----------
    url : str, optional
        Server base URL; defaults to ``$FEDSILO_URL``, then ``http://127.0.0.1:8765``.
    token : str, optional
        Bearer token (an admin token, the seed's "unscoped" one); defaults to
        ``$FEDSILO_TOKEN``.
    transport : httpx.BaseTransport, optional
        Send requests through this transport instead of the network.
    timeout : float
        Seconds for each request.
    ca_cert : path, optional
        CA bundle (PEM) to verify an ``https://`` server with; defaults to
        ``$FEDSILO_CA_BUNDLE``, then the system's trusted CAs.

    Returns
    -------
    AuthClient

    Raises
    ------
    AuthenticationError
        When no token is given and ``$FEDSILO_TOKEN`` is not set.
    """
    api = ApiClient(
        resolve_url(url),
        resolve_token(token),
        transport=transport,
        timeout=timeout,
        ca_cert=ca_cert,
    )
    return AuthClient(api)
