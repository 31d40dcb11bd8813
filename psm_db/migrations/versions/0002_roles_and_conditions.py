"""Reader and writer roles, their grants, and condition lookup functions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'psm_reader') THEN
        CREATE ROLE psm_reader LOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'psm_writer') THEN
        CREATE ROLE psm_writer LOGIN;
    END IF;
END $$;
ALTER ROLE psm_reader SET statement_timeout = '30s';
ALTER ROLE psm_reader SET default_transaction_read_only = on;

-- Only the writer may create temporary (staging) tables in this database.
DO $$
BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO psm_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO psm_reader', current_database());
END $$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA psm TO psm_reader, psm_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA psm TO psm_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA psm TO psm_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA psm TO psm_writer;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA psm TO psm_reader, psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm GRANT SELECT ON TABLES TO psm_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm GRANT USAGE, SELECT ON SEQUENCES TO psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm GRANT EXECUTE ON FUNCTIONS TO psm_reader, psm_writer;

-- Look a condition up (readers); NULL arguments mean "left out", matched as NULL.
CREATE FUNCTION psm.find_condition(p_month integer, p_hour integer,
                                   p_audio_source text, p_caption_source text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT id FROM psm.conditions
    WHERE month IS NOT DISTINCT FROM p_month::smallint
      AND hour IS NOT DISTINCT FROM p_hour::smallint
      AND audio_source IS NOT DISTINCT FROM p_audio_source
      AND caption_source IS NOT DISTINCT FROM p_caption_source
$$;

-- Get or create a condition (writers). Range and vocabulary are checked by the table.
CREATE FUNCTION psm.ensure_condition(p_month integer, p_hour integer,
                                     p_audio_source text, p_caption_source text)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    cid integer;
BEGIN
    INSERT INTO psm.conditions (month, hour, audio_source, caption_source)
    VALUES (p_month, p_hour, p_audio_source, p_caption_source)
    ON CONFLICT ON CONSTRAINT conditions_key DO NOTHING
    RETURNING id INTO cid;
    IF cid IS NULL THEN
        cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    END IF;
    RETURN cid;
END $$;
REVOKE EXECUTE ON FUNCTION psm.ensure_condition(integer, integer, text, text) FROM PUBLIC, psm_reader;
GRANT EXECUTE ON FUNCTION psm.ensure_condition(integer, integer, text, text) TO psm_writer;
"""

DOWNGRADE = """
DROP FUNCTION IF EXISTS psm.ensure_condition(integer, integer, text, text);
DROP FUNCTION IF EXISTS psm.find_condition(integer, integer, text, text);
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON TABLES FROM psm_reader, psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON SEQUENCES FROM psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON FUNCTIONS FROM psm_reader, psm_writer;
REVOKE ALL ON ALL TABLES IN SCHEMA psm FROM psm_reader, psm_writer;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA psm FROM psm_writer;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA psm FROM psm_reader, psm_writer;
REVOKE ALL ON SCHEMA psm FROM psm_reader, psm_writer;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM psm_reader, psm_writer', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
END $$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # Roles are cluster-wide and may serve other databases, so they are kept.
    op.execute(DOWNGRADE)
