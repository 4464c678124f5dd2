"""FastAPI dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from fedsilo.server.db import Database
from fedsilo.server.engine import SessionEngine
from fedsilo.server.tables import SessionRow

__all__ = ["DbDep", "EngineDep", "get_session_row", "not_found"]


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_engine(request: Request) -> SessionEngine:
    engine: SessionEngine = request.app.state.engine
    return engine


DbDep = Annotated[Database, Depends(get_db)]
EngineDep = Annotated[SessionEngine, Depends(get_engine)]


def not_found(what: str, ident: str) -> HTTPException:
    return HTTPException(status_code=404, detail=f"{what} {ident} not found.")


def get_session_row(db: Database, session_id: str) -> SessionRow:
    with db.session() as s:
        row = s.get(SessionRow, session_id)
        if row is None:
            raise not_found("Session", session_id)
        return row
