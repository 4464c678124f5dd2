"""Users (admin): create, list, delete. Tokens belong to a user, sessions are owned by one.

A user's id is generated (``<10 hex>@<workspace>``) and never reused, so a user created
later under a deleted user's name owns none of the old one's sessions. Deleting a user
revokes its tokens (in the same transaction) and evicts them from the token cache, so they
are refused at once (401 ``The token's user was deleted.``).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from fedsilo.server import audit
from fedsilo.server.api.deps import ACCESS_RESPONSES, BODY_RESPONSES, AdminToken, StoreDep, errors
from fedsilo.server.auth import TokenCache, new_user_id
from fedsilo.server.state import StateStore, UserRecord, utcnow
from fedsilo.wire import UserCreate, UserPublic

__all__ = ["find_user", "router", "user_public"]

router = APIRouter(prefix="/users", tags=["users"], responses=ACCESS_RESPONSES)


def user_public(user: UserRecord) -> UserPublic:
    return UserPublic(
        id=user.id,
        name=user.name,
        user_type=user.user_type,
        active=user.active,
        created_by=user.created_by,
        created_at=user.created_at,
    )


def find_user(store: StateStore, name_or_id: str) -> UserRecord | None:
    """The user named ``name_or_id`` (the seed's spelling), else the one with that id."""
    return store.get_user_by_name(name_or_id) or store.get_user(name_or_id)


def user_not_found(name_or_id: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"User {name_or_id!r} not found.")


@router.post(
    "",
    status_code=201,
    responses={**BODY_RESPONSES, **errors(409, notes={409: "the name is taken"})},
)
def create_user(
    body: UserCreate, request: Request, store: StoreDep, principal: AdminToken
) -> UserPublic:
    taken = HTTPException(status_code=409, detail=f"User name {body.name!r} is taken.")
    if store.get_user_by_name(body.name) is not None:
        raise taken
    workspace: str = request.app.state.settings.workspace
    user = UserRecord(
        id=new_user_id(workspace),
        name=body.name,
        user_type=body.user_type,
        created_at=utcnow(),
        created_by=principal.user_id,
    )
    try:
        store.add_user(user)
    except ValueError as exc:  # created from elsewhere since the check above
        raise taken from exc
    audit.record(request, principal, "user.create", user.name, detail=f"id {user.id}")
    return user_public(user)


@router.get("")
def list_users(store: StoreDep, _: AdminToken) -> list[UserPublic]:
    return [user_public(user) for user in store.list_users()]


@router.delete(
    "/{name}",
    responses=errors(404, 409, notes={409: "the caller's own user (the last admin)"}),
)
def delete_user(name: str, request: Request, store: StoreDep, principal: AdminToken) -> UserPublic:
    """Delete a user and revoke its tokens; its sessions stay, owned by its (unused) id.

    The caller's own user cannot be deleted: the caller holds an admin token, so this also
    keeps at least one user able to administer the server.
    """
    user = find_user(store, name)
    if user is None:
        raise user_not_found(name)
    if user.id == principal.user_id:
        raise HTTPException(
            status_code=409,
            detail=f"Cannot delete user {user.name!r}: it is the user of the token making "
            "this call; delete it with another admin user's token.",
        )
    revoked = sum(1 for t in store.list_user_tokens(user.id) if t.revoked_at is None)
    deleted = store.delete_user(user.id)
    if deleted is None:  # deleted from elsewhere since it was read
        raise user_not_found(name)
    cache: TokenCache = request.app.state.token_cache
    cache.evict_user(user.id)
    detail = f"id {user.id}; revoked {revoked} token(s)"
    audit.record(request, principal, "user.delete", user.name, detail=detail)
    return user_public(deleted)
