"""Errors raised by the storage and service layer, each with a message that says how to fix it."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or reached."""


class MissingDependencyError(ServiceError):
    """A binary or PostgreSQL extension the project needs is not installed."""


class PortInUseError(ServiceError):
    """A port the project wants for its own service is taken by something else."""


class DatabaseURLError(ValueError):
    """The configured database URL is malformed or points nowhere."""


class NotEmbeddedError(LookupError):
    """A query asked for a (region, model, condition) that has no embeddings yet."""
