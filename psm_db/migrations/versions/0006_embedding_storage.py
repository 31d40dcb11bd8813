"""Keep mu inline (var out of line) in psm.embeddings; fewer ANN candidates to re-rank.

A vector(512) is 2,056 bytes, so a row with mu and var is ~4.2 kB and PostgreSQL moves both
vectors to TOAST: every exact score then costs two TOAST index lookups. With
toast_tuple_target = 4080, mu STORAGE MAIN and var STORAGE EXTERNAL, only var (which the
ranking never reads, it uses var_sum) goes out of line; exact top-100 over 100k rows went
from 861 ms to 188 ms and the table shrank slightly (docs/benchmarks.md, "Queries").
Existing rows keep their old layout until the table is rewritten (VACUUM FULL
psm.embeddings, which also rebuilds the HNSW indexes) or re-embedded.

The index candidates re-ranked by the exact CSD now default to k + max(k/4, 10) (was 2k): on
1M clustered embeddings recall rose with ef_search but not with more candidates, which only
cost time (each is scored exactly).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

from psm_db.migrate import revision_module

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_EF = "LEAST(GREATEST(coalesce(knob_ef, GREATEST(4 * p_k, 400)), 10), 1000)"
OLD_CAND = "LEAST(GREATEST(coalesce(knob_cand, 2 * p_k), p_k), 50000)"
NEW_EF = OLD_EF
NEW_CAND = "LEAST(GREATEST(coalesce(knob_cand, p_k + GREATEST(p_k / 4, 10)), p_k), 50000)"


def _previous_rank_tiles() -> str:
    sql = revision_module("0005_region_first_exact.py").RANK_TILES
    assert OLD_EF in sql and OLD_CAND in sql
    return sql


def upgrade() -> None:
    op.execute("""
        ALTER TABLE psm.embeddings SET (toast_tuple_target = 4080);
        ALTER TABLE psm.embeddings ALTER COLUMN mu SET STORAGE MAIN;
        ALTER TABLE psm.embeddings ALTER COLUMN var SET STORAGE EXTERNAL;
    """)
    op.execute(_previous_rank_tiles().replace(OLD_EF, NEW_EF).replace(OLD_CAND, NEW_CAND))


def downgrade() -> None:
    op.execute("""
        ALTER TABLE psm.embeddings RESET (toast_tuple_target);
        ALTER TABLE psm.embeddings ALTER COLUMN mu SET STORAGE EXTENDED;
        ALTER TABLE psm.embeddings ALTER COLUMN var SET STORAGE EXTENDED;
    """)
    op.execute(_previous_rank_tiles())
