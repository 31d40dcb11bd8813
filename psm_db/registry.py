"""Model versions: register a checkpoint in psm.model_versions and look versions up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version (one row of psm.model_versions)."""

    version: str
    name: str
    preset: str
    loss: str
    embed_dim: int
    feature_dim: int
    match_a: float
    match_b: float
    checkpoint_path: str
    config: dict[str, Any]
    metrics: dict[str, Any]


_COLUMNS = ("version, name, preset, loss, embed_dim, feature_dim, match_a, match_b, "
            "checkpoint_path, config, metrics")


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
    row = conn.execute(
        f"INSERT INTO psm.model_versions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (version) DO UPDATE SET metrics = psm.model_versions.metrics || EXCLUDED.metrics, "
        "checkpoint_path = EXCLUDED.checkpoint_path "
        f"RETURNING {_COLUMNS}",
        (
            info["version"],
            name or f"{info.get('preset') or cfg.preset}-{info['version'][:8]}",
            info.get("preset") or cfg.preset,
            cfg.loss,
            int(cfg.embed_dim),
            feature_dim,
            float(a),
            float(b),
            str(path),
            Jsonb(info.get("config") or cfg.to_dict()),
            Jsonb(all_metrics),
        ),
    ).fetchone()
    conn.commit()
    assert row is not None
    log.info("registered model version %s (%s) from %s", row[0], row[2], path)
    return ModelVersion(*row)


def get_model_version(conn: psycopg.Connection, version: str) -> ModelVersion:
    """The registered version ``version`` (a unique prefix of at least 8 hex digits also works).

    Raises:
        LookupError: naming the known versions when there is no (unique) match.
    """
    v = (version or "").strip().lower()
    rows = []
    if len(v) >= 8:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM psm.model_versions WHERE version LIKE %s ORDER BY version",
            (v.replace("%", "").replace("_", "") + "%",),
        ).fetchall()
    if len(rows) == 1:
        return ModelVersion(*rows[0])
    known = [r[0] for r in conn.execute(
        "SELECT version FROM psm.model_versions ORDER BY created_at DESC LIMIT 10").fetchall()]
    if len(rows) > 1:
        raise LookupError(f"model version prefix {version!r} is ambiguous: {', '.join(r[0] for r in rows)}")
    hint = f"known versions: {', '.join(known)}" if known else "no model is registered yet (psm train or psm register-model)"
    raise LookupError(f"unknown model version {version!r}; {hint}")


def update_metrics(conn: psycopg.Connection, version: str, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into a version's stored metrics. Commits."""
    conn.execute("UPDATE psm.model_versions SET metrics = metrics || %s WHERE version = %s",
                 (Jsonb(metrics), version))
    conn.commit()
