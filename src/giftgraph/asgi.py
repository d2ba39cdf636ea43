"""The ASGI entry point for uvicorn: `uvicorn --factory giftgraph.asgi:create`."""

from starlette.applications import Starlette

from giftgraph.app import create_app
from giftgraph.config import get_settings


def create() -> Starlette:
    """Build the app from env/.env settings (called once per worker)."""
    return create_app(get_settings())
