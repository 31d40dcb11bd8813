"""The module ``celery -A worker`` loads: the app built from the environment's settings."""

from __future__ import annotations

from worker.app import create_app

app = create_app()

__all__ = ["app"]
