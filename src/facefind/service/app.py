"""The FastAPI application: the JSON API, the web UI, offline API docs, problem+json errors.

The library stays open for the life of the process (models loaded once, index in memory, this
process its one writer); requests run in worker threads and index jobs in a background thread.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import swagger_ui
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from facefind.api import FaceFind
from facefind.pipeline import PipelineConfig
from facefind.accounts import LoginPolicy
from facefind.errors import FaceFindError
from facefind.service import access_routes, admin_routes, api_routes, auth_routes, problems, ui_routes
from facefind.service import people_routes
from facefind.service.actor import SlidingWindow
from facefind.service.settings import ServiceSettings
from facefind.service.uploads import BodySizeLimit

API_DESCRIPTION = """The facefind library API over HTTP. Errors are RFC 9457 problem details
(`application/problem+json`) carrying the same `reason` codes as the command line."""
SWAGGER_STATIC = Path(swagger_ui.__file__).parent / "static"  # Swagger UI 5 shipped in a wheel: no CDN


def create_app(settings: ServiceSettings, facefind: FaceFind | None = None) -> FastAPI:
    """The service for ``settings``; pass ``facefind`` to serve an already configured library API.

    Refuses (``no_admin``) a library without an admin account: there are no default credentials.
    """
    library_api = facefind or FaceFind(settings.library, PipelineConfig(), max_pixels=settings.max_pixels)
    accounts = library_api.accounts
    if not accounts.has_admin():
        raise FaceFindError(
            "no admin account yet, and facefind has no default one: create it with\n"
            f"  facefind --library {library_api.library_path} users add --admin NAME\n"
            "then start the server again", reason="no_admin")
    accounts.policy = LoginPolicy(max_failures=settings.login_max_failures, lockout_s=settings.lockout_s,
                                  session_ttl_s=settings.session_hours * 3600)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        library_api.open()
        try:
            yield
        finally:
            library_api.stop_index_jobs()
            library_api.close()

    app = FastAPI(title="facefind", version="1", description=API_DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.facefind = library_api
    app.state.settings = settings
    app.state.accounts = accounts
    app.state.search_quota = SlidingWindow(settings.searches_per_hour)
    package = resources.files("facefind.service")
    app.state.templates = Jinja2Templates(directory=str(package / "templates"))
    ui_routes.add_template_helpers(app.state.templates, library_api)
    app.mount("/static", StaticFiles(directory=str(package / "static")), name="static")
    app.mount("/docs-static", StaticFiles(directory=str(SWAGGER_STATIC)), name="docs-static")
    app.include_router(api_routes.router)
    app.include_router(ui_routes.router)
    app.include_router(auth_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(access_routes.router)
    app.include_router(people_routes.api)
    app.include_router(people_routes.pages)
    problems.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title="facefind API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js", swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )

    return app
