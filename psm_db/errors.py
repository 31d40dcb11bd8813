"""Errors raised by the storage and service layer, each with a message that says how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

T = TypeVar("T")


class ServiceError(RuntimeError):
    """A local service could not be started, stopped or reached."""


class MissingDependencyError(ServiceError):
    """A binary or PostgreSQL extension the project needs is not installed."""


class PortInUseError(ServiceError):
    """A port the project wants for its own service is taken by something else."""


class BrokerUnavailableError(ServiceError):
    """The Celery broker (or its result store) cannot be reached, so nothing was queued."""


class DatabaseURLError(ValueError):
    """The configured database URL is malformed or points nowhere."""


class NotEmbeddedError(LookupError):
    """A query asked for a (region, model, condition) that has no embeddings yet."""


class UnknownModelError(LookupError, ValueError):
    """No registered model version matches (a version, or a unique prefix of one).

    A LookupError (the lookup failed) and a ValueError (the argument is bad), so callers that
    catch either keep working.
    """

    @classmethod
    def of(cls, version: str | None, known: list[str]) -> UnknownModelError:
        """The error for ``version``, naming the (most recent) ``known`` versions."""
        hint = (f"known versions: {', '.join(known)}" if known
                else "no model is registered yet (psm train or psm register-model)")
        return cls(f"unknown model version {version!r}; {hint}")


class UnknownQueryError(LookupError, ValueError):
    """No stored query has that id (or it was encoded by another model)."""


class EmbeddingValidationError(ValueError):
    """A batch of vectors is not fit to store (NaN, wrong dimension, sigma^2 not positive)."""


def raise_sql_errors(session: Session, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a savepoint and turn the ranking SQL's errors into Python ones.

    SQLSTATE PSM01 becomes NotEmbeddedError, invalid_parameter_value (22023) a ValueError;
    both carry the server's message, detail and hint. The caller's transaction stays usable.
    """
    from sqlalchemy.exc import DBAPIError

    try:
        with session.begin_nested():
            return fn()
    except DBAPIError as e:
        orig: Any = e.orig  # a psycopg.Error: its diagnostics and SQLSTATE
        if getattr(orig, "diag", None) is not None:
            text = orig.diag.message_primary or str(orig)
            if orig.diag.message_detail:
                text += f" ({orig.diag.message_detail})"
            if orig.diag.message_hint:
                text += f". {orig.diag.message_hint}"
            if orig.sqlstate == "PSM01":
                raise NotEmbeddedError(text) from e
            if orig.sqlstate == "22023":
                raise ValueError(text) from e
        raise


__all__ = [
    "BrokerUnavailableError", "DatabaseURLError", "EmbeddingValidationError", "MissingDependencyError", "NotEmbeddedError", "PortInUseError",
    "ServiceError", "UnknownModelError", "UnknownQueryError", "raise_sql_errors",
]
