"""The FastAPI application factory and the ``fedsilo server start`` entry point."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import InterfaceError, InternalError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedsilo import __version__
from fedsilo.errors import ConfigError
from fedsilo.federation import PACKAGE_SOURCES
from fedsilo.packages.custom.source import StoredPackages
from fedsilo.server import portal
from fedsilo.server.access import public
from fedsilo.server.api import (
    audit,
    driver,
    packages,
    participants,
    refusals,
    relay,
    sessions,
    tokens,
    users,
)
from fedsilo.server.api.deps import ParticipantCache
from fedsilo.server.auth import TokenCache, bootstrap_admin
from fedsilo.server.datadir import local_path, private_directory
from fedsilo.server.engine import SessionEngine
from fedsilo.server.engine.health import EXIT_STORE_UNWRITABLE, STORE_UNAVAILABLE_DETAIL
from fedsilo.server.engine.relay import MessageRelay
from fedsilo.server.limits import RequestGuard, document_bearer_auth
from fedsilo.server.lock import acquire_state_lock
from fedsilo.server.logs import configure_logging
from fedsilo.server.metrics import CountingLimiter, metrics_router
from fedsilo.server.settings import Settings
from fedsilo.server.state import ArtifactStore, open_store
from fedsilo.server.state.migrations import check_revision
from fedsilo.wire import API_PREFIX, ErrorBody

__all__ = ["create_app", "serve"]

logger = logging.getLogger("fedsilo.server")


def create_app(settings: Settings) -> FastAPI:
    """Build the server: state store, artifact store, engine and routers.

    Nothing is opened until the app starts (its lifespan), so building an app has no side
    effects; on start it creates the data dir, the state store (``settings.db_url``: SQL by
    URL, ``memory://`` in memory) with its tables, the admin user and token on first start, and
    resumes the sessions that were active when the server last stopped. The routers find
    the state store on ``app.state.store`` and the artifact store on ``app.state.artifacts``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_dir = private_directory(settings.resolved_data_dir())
        db_url = settings.resolved_db_url()
        # First, before the store is opened: a second server on this state must not resume
        # (and so fail) the sessions the first one runs. Raises StateLocked naming the holder.
        state_lock = acquire_state_lock(db_url, port=settings.port)
        try:
            store = open_store(db_url)
            artifacts_dir = local_path(settings.resolved_artifacts_url())
            if artifacts_dir is not None:
                private_directory(artifacts_dir)
            artifacts = ArtifactStore(settings.resolved_artifacts_url())
            admin = settings.admin_token.get_secret_value() if settings.admin_token else None
            bootstrap_admin(store, data_dir, admin, settings.workspace)
            engine = SessionEngine(store, artifacts, settings)
            app.state.store = store
            app.state.artifacts = artifacts
            app.state.engine = engine
            app.state.metrics = engine.metrics
            # With one server per state (the lock), the token cache sees every revocation
            # made through the API at once; its TTL bounds only writes that bypass the server.
            app.state.token_cache = TokenCache()
            app.state.auth_limiter = CountingLimiter(engine.metrics)
            app.state.participant_cache = ParticipantCache()
            app.state.relay = MessageRelay()  # fast exchange: memory only, lost on restart
            # Before resuming: a session of an uploaded package needs get_package to find it.
            uploaded = StoredPackages(artifacts)
            PACKAGE_SOURCES.append(uploaded)
            resumed = engine.resume_all()
            if resumed:
                logger.warning("resumed %d active session(s): %s", len(resumed), ", ".join(resumed))
            try:
                yield
            finally:
                engine.stop()
                store.close()
                PACKAGE_SOURCES.remove(uploaded)
        finally:
            if state_lock is not None:
                state_lock.release()

    app = FastAPI(
        title="fedsilo",
        version=__version__,
        summary="Federated learning and analytics across data silos.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Authentication and the body limit come before any route reads the body.
    app.add_middleware(RequestGuard, settings=settings)

    @app.get(
        "/healthz",
        tags=["health"],
        dependencies=[Depends(public())],
        responses={503: {"model": ErrorBody, "description": "the state store refuses writes"}},
    )
    def healthz(request: Request) -> dict[str, str]:
        engine: SessionEngine | None = getattr(request.app.state, "engine", None)
        problem = engine.health.problem if engine is not None else None
        if problem is not None:
            raise HTTPException(status_code=503, detail=f"Unhealthy: {problem}.")
        return {"status": "ok", "version": __version__}

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(InternalError)
    async def _store_error(request: Request, exc: Exception) -> JSONResponse:
        # The disk is full, the file read-only, the database server gone: the request may
        # succeed later, so 503, never a bare 500 (and never the SQL, which may hold values).
        engine: SessionEngine | None = getattr(request.app.state, "engine", None)
        if engine is not None:
            engine.health.request_failed(exc)
        logger.error("state store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(status_code=503, content={"detail": STORE_UNAVAILABLE_DETAIL})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _describe(exc)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            # Starlette names the methods of the first route matching the path; a path
            # served by several routes (GET and DELETE /sessions/{id}) allows them all.
            allowed = _allowed_methods(app, request)
            exc = StarletteHTTPException(405, "Method Not Allowed", {"Allow": allowed})
        return await http_exception_handler(request, exc)

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    for module in (sessions, participants, refusals, relay, tokens, users, audit, packages, driver):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(metrics_router(settings))
    portal.install(app, settings)  # the web portal at /
    document_bearer_auth(app)
    return app


def _allowed_methods(app: FastAPI, request: Request) -> str:
    """The ``Allow`` header of a 405: every method the OpenAPI lists for the path (a path
    written out, such as ``/tokens/info``, before the templates it also fits)."""
    path = request.url.path
    paths: dict[str, Any] = app.openapi()["paths"]
    if path in paths:
        return ", ".join(sorted(method.upper() for method in paths[path]))
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(method.upper() for method in operations)
    return ", ".join(sorted(methods))


#: fields whose value is a secret: a 422 names them but never echoes what was sent
_SECRET_FIELDS = frozenset({"token", "credential", "secret", "authorization"})


def _describe(exc: RequestValidationError) -> str:
    """``field.path: message (got value)`` per problem, like the packages' config errors."""
    parts = []
    for err in exc.errors():
        path = err.get("loc", ())
        loc = ".".join(str(p) for p in path)
        given = err.get("input")
        shown = repr(given) if not isinstance(given, dict) else "{...}"
        if path and str(path[-1]).lower() in _SECRET_FIELDS:
            shown = "a value not shown"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        parts.append(f"{loc}: {err.get('msg')} (got {shown})")
    return "; ".join(parts)


def serve(settings: Settings) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM; over TLS (``https://``) when
    ``settings.tls_cert`` and ``settings.tls_key`` are set, else plain HTTP (e.g. behind a
    TLS-terminating proxy)."""
    import uvicorn

    configure_logging(settings.log_level, settings.log_format)
    # A second server on this state is refused here, as one line (StateLocked, shown by the
    # CLI), not by a traceback from inside uvicorn's startup; the app takes the lock for good.
    probe = acquire_state_lock(settings.resolved_db_url(), port=settings.port)
    if probe is not None:
        probe.release()
    # A database written by a newer fedsilo is refused here too, as one line.
    check_revision(settings.resolved_db_url())
    # JSON: uvicorn's loggers propagate to the root handler instead of their own text ones.
    log_config: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        # Long-polls hold connections open; don't let them delay a shutdown for long.
        timeout_graceful_shutdown=2,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert is not None else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key is not None else None,
        **log_config,
    )
    server = _draining_server(config, app)
    threading.Thread(target=_exit_on_fatal, args=(app, server), daemon=True).start()
    server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the server did not start (its log says why)
    engine: SessionEngine | None = getattr(app.state, "engine", None)
    if engine is not None and engine.health.fatal.is_set():
        # Sessions stay active in the store: a restarted server resumes them.
        raise SystemExit(EXIT_STORE_UNWRITABLE)


def _draining_server(config: Any, app: FastAPI) -> Any:
    """A uvicorn server whose SIGINT/SIGTERM first drains the engine: open long-polls answer
    503 at once (their clients retry, and find the restarted server), where the shutdown
    would cut them off after ``timeout_graceful_shutdown`` with uvicorn's 500, on which a
    client stops."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            engine: SessionEngine | None = getattr(app.state, "engine", None)
            if engine is not None:
                # A signal handler must not take the hub's lock (the loop may hold it): the
                # drain runs on the event loop, next iteration.
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().call_soon_threadsafe(engine.drain)
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def _exit_on_fatal(app: FastAPI, server: Any) -> None:
    """Stop the server once its engine gave up on the state store (``serve`` then exits
    with :data:`~fedsilo.server.engine.health.EXIT_STORE_UNWRITABLE`)."""
    while not server.should_exit:
        engine: SessionEngine | None = getattr(app.state, "engine", None)
        if engine is not None and engine.health.fatal.wait(timeout=0.5):
            server.should_exit = True
            return
        if engine is None:
            time.sleep(0.1)
