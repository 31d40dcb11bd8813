"""HNSW keys may be stored as halfvec: half the index size, candidates re-ranked exactly.

``psm.ann_indexes.key_type`` says how an index stores its key [mu, sqrt(sum sigma^2)]:
``vector`` (float32, the default, as before) or ``halfvec`` (float16). A halfvec graph over
1M tiles at d = 512 is half the size (1.3 GB against 2.6 GB), which matters when shared
buffers cannot hold the float32 one. The index only proposes candidates; ``psm.rank_tiles``
re-ranks them with the exact float32 CSD, so returned distances are exact either way. But
float16 rounds sqrt(sum sigma^2) (about 3 for a d = 512 model) to steps of ~0.002, which is
a distance error of ~0.006: when sigma^2 barely varies between tiles and the top-k lie
within a few hundredths of each other, that costs recall (docs/benchmarks.md, "Queries").

Search defaults, measured on 1M real-model embeddings (docs/benchmarks.md):

- the HNSW beam (hnsw.ef_search) defaults to its maximum, 1000 (was max(4k, 400));
- the candidates re-ranked exactly default to ef_search + k (was k + max(k/4, 10)). Asking
  for more rows than the beam holds makes pgvector's iterative scan run a second round from
  where the first stopped, which rescues the queries whose first walk ended among
  equally-near tiles elsewhere: with m = 8, recall@100 rose from 0.90 to 0.95 at 13 ms p50.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from alembic import op

from psm_db.migrate import revision_module

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_SELECT = "SELECT a.index_name, a.dim INTO idx"
NEW_SELECT = "SELECT a.index_name, a.dim, a.key_type INTO idx"
OLD_ORDER = """ORDER BY psm.ann_vector(e.mu, e.var_sum)::vector(%s) <-> $7
                   LIMIT $8) c', region_clause, idx.dim)"""
NEW_ORDER = """ORDER BY psm.ann_vector(e.mu, e.var_sum)::%s(%s) <-> $7::%s
                   LIMIT $8) c', region_clause, idx.key_type, idx.dim, idx.key_type)"""
OLD_EF = "LEAST(GREATEST(coalesce(knob_ef, GREATEST(4 * p_k, 400)), 10), 1000)"
NEW_EF = "LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000)"
OLD_CAND = "LEAST(GREATEST(coalesce(knob_cand, p_k + GREATEST(p_k / 4, 10)), p_k), 50000)"
NEW_CAND = f"LEAST(GREATEST(coalesce(knob_cand, {NEW_EF} + p_k), p_k), 50000)"


def _previous_rank_tiles() -> str:
    """psm.rank_tiles as migration 0006 left it."""
    module = revision_module("0006_embedding_storage.py")
    sql = module._previous_rank_tiles().replace(module.OLD_EF, module.NEW_EF).replace(
        module.OLD_CAND, module.NEW_CAND)
    assert OLD_SELECT in sql and OLD_ORDER in sql and OLD_EF in sql and OLD_CAND in sql
    return sql


def upgrade() -> None:
    op.execute("""
        ALTER TABLE psm.ann_indexes ADD COLUMN key_type text NOT NULL DEFAULT 'vector'
            CONSTRAINT ann_indexes_key_type_check CHECK (key_type IN ('vector', 'halfvec'));
        COMMENT ON COLUMN psm.ann_indexes.key_type IS
            'How the HNSW key [mu, sqrt(var_sum)] is stored: vector (float32) or halfvec (float16).';
    """)
    op.execute(_previous_rank_tiles().replace(OLD_SELECT, NEW_SELECT).replace(OLD_ORDER, NEW_ORDER)
               .replace(OLD_EF, NEW_EF).replace(OLD_CAND, NEW_CAND))


def downgrade() -> None:
    op.execute("""
        DO $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT index_name FROM psm.ann_indexes WHERE key_type = 'halfvec' LOOP
                EXECUTE format('DROP INDEX IF EXISTS psm.%I', r.index_name);
            END LOOP;
            DELETE FROM psm.ann_indexes WHERE key_type = 'halfvec';
        END $$;
    """)
    op.execute(_previous_rank_tiles())
    op.execute("ALTER TABLE psm.ann_indexes DROP COLUMN key_type")
