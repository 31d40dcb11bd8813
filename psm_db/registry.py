"""Model versions: register a checkpoint in psm.model_versions and look versions up.

These take a psycopg connection (the worker's) and return :class:`psm_db.models.ModelVersion`
rows, detached from any session; the columns are the ORM mapping's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from psm_db.errors import UnknownModelError
from psm_db.models import ModelVersion

log = logging.getLogger(__name__)

_NAMES = tuple(c.name for c in ModelVersion.__table__.columns)
_COLUMNS = ", ".join(_NAMES)


def _model(row: tuple[Any, ...]) -> ModelVersion:
    return ModelVersion(**dict(zip(_NAMES, row, strict=True)))


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix`` (``%``, ``_`` and backslash escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def register_model(
    conn: psycopg.Connection,
    checkpoint_path: str | Path,
    *,
    name: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> ModelVersion:
    """Load a checkpoint written by ``psm_model.save_checkpoint`` and upsert its version row.

    The feature width is measured with one forward pass, so the row always matches what
    ``image_features`` returns. Registering the same checkpoint twice is a no-op apart from
    merging ``metrics`` into the stored ones. Commits.

    Raises:
        FileNotFoundError: when the checkpoint does not exist.
        ValueError: when the file is not a loadable PSM checkpoint.
    """
    import torch

    from psm_model import load_checkpoint

    path = Path(checkpoint_path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train one with `psm train` first")
    model, info = load_checkpoint(path)
    cfg = model.config
    size = cfg.image.image_size
    with torch.no_grad():
        feats = model.image_features(torch.zeros(1, 3, size, size), gsd=cfg.image.default_gsd, zoom=1)
    feature_dim = int(feats.shape[-1])
    a, b = model.match_params()
    all_metrics = {**(info.get("metrics") or {}), **(metrics or {})}
    values: dict[str, Any] = {
        "version": info["version"],
        "name": name or f"{info.get('preset') or cfg.preset}-{info['version'][:8]}",
        "preset": info.get("preset") or cfg.preset,
        "loss": cfg.loss,
        "embed_dim": int(cfg.embed_dim),
        "feature_dim": feature_dim,
        "match_a": float(a),
        "match_b": float(b),
        "checkpoint_path": str(path),
        "config": Jsonb(info.get("config") or cfg.to_dict()),
        "metrics": Jsonb(all_metrics),
    }
    row = conn.execute(
        f"INSERT INTO psm.model_versions ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) "
        "ON CONFLICT (version) DO UPDATE SET metrics = psm.model_versions.metrics || EXCLUDED.metrics, "
        "checkpoint_path = EXCLUDED.checkpoint_path "
        f"RETURNING {_COLUMNS}",
        tuple(values.values()),
    ).fetchone()
    conn.commit()
    assert row is not None
    mv = _model(row)
    log.info("registered model version %s (%s) from %s", mv.version, mv.preset, path)
    return mv


def get_model_version(conn: psycopg.Connection, version: str) -> ModelVersion:
    """The registered version ``version`` (a unique prefix of at least 8 hex digits also works).

    The prefix is matched literally: LIKE wildcards in it are escaped.

    Raises:
        UnknownModelError: naming the known versions when nothing matches.
        LookupError: when a prefix matches several versions.
    """
    v = (version or "").strip().lower()
    rows = []
    if len(v) >= 8:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM psm.model_versions WHERE version LIKE %s ESCAPE '\\' ORDER BY version",
            (like_prefix(v),),
        ).fetchall()
    if len(rows) == 1:
        return _model(rows[0])
    if len(rows) > 1:
        raise LookupError(f"model version prefix {version!r} is ambiguous: {', '.join(r[0] for r in rows)}")
    known = [r[0] for r in conn.execute(
        "SELECT version FROM psm.model_versions ORDER BY created_at DESC LIMIT 10").fetchall()]
    raise UnknownModelError.of(version, known)


def update_metrics(conn: psycopg.Connection, version: str, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into a version's stored metrics. Commits."""
    conn.execute("UPDATE psm.model_versions SET metrics = metrics || %s WHERE version = %s",
                 (Jsonb(metrics), version))
    conn.commit()
