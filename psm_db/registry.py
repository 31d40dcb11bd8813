"""Model versions: register a checkpoint in psm.model_versions and look versions up.

These take a SQLAlchemy connection or session (:data:`psm_db.engine.Db`) and return
:class:`psm_db.models.ModelVersion` rows, detached from any session; the columns are the ORM mapping's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from psm_db.engine import Db
from psm_db.errors import UnknownModelError
from psm_db.models import ModelVersion, table_of

log = logging.getLogger(__name__)

_versions = table_of(ModelVersion)


def _model(row: Row[Any]) -> ModelVersion:
    """A ModelVersion of a row of every column, not attached to a session."""
    return ModelVersion(**row._asdict())


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching the strings that start with ``prefix`` (``%``, ``_`` and backslash escaped)."""
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def register_model(
    db: Db,
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
        "config": info.get("config") or cfg.to_dict(),
        "metrics": all_metrics,
    }
    stmt = pg_insert(_versions).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[_versions.c.version],
        set_={"metrics": _versions.c.metrics.op("||")(stmt.excluded.metrics),
              "checkpoint_path": stmt.excluded.checkpoint_path},
    )
    row = db.execute(stmt.returning(*_versions.c)).one()
    db.commit()
    mv = _model(row)
    log.info("registered model version %s (%s) from %s", mv.version, mv.preset, path)
    return mv


def get_model_version(db: Db, version: str) -> ModelVersion:
    """The registered version ``version`` (a unique prefix of at least 8 hex digits also works).

    The prefix is matched literally: LIKE wildcards in it are escaped.

    Raises:
        UnknownModelError: naming the known versions when nothing matches.
        LookupError: when a prefix matches several versions.
    """
    v = (version or "").strip().lower()
    rows: list[Row[Any]] = []
    if len(v) >= 8:
        rows = list(db.execute(select(*_versions.c).where(_versions.c.version.like(like_prefix(v), escape="\\"))
                               .order_by(_versions.c.version)).all())
    if len(rows) == 1:
        return _model(rows[0])
    if len(rows) > 1:
        raise LookupError(f"model version prefix {version!r} is ambiguous: {', '.join(r.version for r in rows)}")
    known = list(db.scalars(select(_versions.c.version).order_by(_versions.c.created_at.desc()).limit(10)))
    raise UnknownModelError.of(version, known)


def update_metrics(db: Db, version: str, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into a version's stored metrics. Commits."""
    db.execute(update(_versions).where(_versions.c.version == version)
               .values(metrics=_versions.c.metrics.op("||")(bindparam("extra", metrics, type_=JSONB))))
    db.commit()
