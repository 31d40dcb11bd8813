"""Initial schema: extensions, the psm schema, all tables, indexes and psm.csd.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from alembic import op

from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _in_list(column: str, names: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{n}'" for n in names)
    return f"{column} IN ({quoted})"


# A (mu, sigma^2) pair is valid when both have the model's dimension and every sigma^2 is
# strictly positive and finite. pgvector itself refuses NaN and infinity inside vectors;
# binary_quantize sets a bit exactly where an element is > 0.
GAUSSIAN_CHECKS = """
    CONSTRAINT {t}_dims CHECK (vector_dims(mu) = dim AND vector_dims(var) = dim),
    CONSTRAINT {t}_var_positive CHECK (
        var_sum > 0 AND var_sum < 'Infinity'::float8
        AND bit_count(binary_quantize(var)) = dim)
"""

UPGRADE = f"""
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS psm;

CREATE TABLE psm.model_versions (
    version         text PRIMARY KEY CHECK (version ~ '^[0-9a-f]{{8,64}}$'),
    name            text NOT NULL,
    preset          text NOT NULL,
    loss            text NOT NULL CHECK (loss IN ('pcmepp', 'infonce')),
    embed_dim       integer NOT NULL CHECK (embed_dim BETWEEN 1 AND 16000),
    feature_dim     integer NOT NULL CHECK (feature_dim BETWEEN 1 AND 16000),
    match_a         double precision NOT NULL,
    match_b         double precision NOT NULL,
    checkpoint_path text NOT NULL,
    config          jsonb NOT NULL DEFAULT '{{}}',
    metrics         jsonb NOT NULL DEFAULT '{{}}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (version, embed_dim),
    UNIQUE (version, feature_dim)
);

CREATE TABLE psm.tiles (
    id             bigserial PRIMARY KEY,
    imagery_source text NOT NULL,
    gsd            double precision NOT NULL CHECK (gsd > 0),
    size_px        integer NOT NULL CHECK (size_px > 0),
    zoom           smallint NOT NULL CHECK (zoom >= 1),
    grid_row       integer NOT NULL,
    grid_col       integer NOT NULL,
    geom           geometry(Polygon, 4326) NOT NULL CHECK (ST_IsValid(geom)),
    centroid       geometry(Point, 4326) NOT NULL,
    pixel_ref      text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tiles_grid_key UNIQUE (imagery_source, gsd, size_px, zoom, grid_row, grid_col)
);
CREATE INDEX tiles_geom_gist ON psm.tiles USING gist (geom);
CREATE INDEX tiles_centroid_gist ON psm.tiles USING gist (centroid);
CREATE INDEX tiles_zoom ON psm.tiles (zoom);

CREATE TABLE psm.tile_features (
    model_version text NOT NULL,
    tile_id       bigint NOT NULL REFERENCES psm.tiles (id) ON DELETE CASCADE,
    dim           integer NOT NULL,
    features      vector NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, tile_id),
    FOREIGN KEY (model_version, dim)
        REFERENCES psm.model_versions (version, feature_dim) ON DELETE CASCADE,
    CONSTRAINT tile_features_dims CHECK (vector_dims(features) = dim)
);
CREATE INDEX tile_features_tile ON psm.tile_features (tile_id);

CREATE TABLE psm.conditions (
    id             serial PRIMARY KEY,
    month          smallint CHECK (month BETWEEN 1 AND 12),
    hour           smallint CHECK (hour BETWEEN 0 AND 23),
    audio_source   text CHECK ({_in_list("audio_source", AUDIO_SOURCES)}),
    caption_source text CHECK ({_in_list("caption_source", CAPTION_SOURCES)}),
    CONSTRAINT conditions_key UNIQUE NULLS NOT DISTINCT (month, hour, audio_source, caption_source)
);
COMMENT ON TABLE psm.conditions IS
    'Metadata conditions of embeddings; NULL means that metadata type is left out (masked).';

CREATE TABLE psm.embeddings (
    model_version text NOT NULL,
    condition_id  integer NOT NULL REFERENCES psm.conditions (id),
    tile_id       bigint NOT NULL REFERENCES psm.tiles (id) ON DELETE CASCADE,
    dim           integer NOT NULL,
    mu            vector NOT NULL,
    var           vector NOT NULL,
    var_sum       double precision NOT NULL,
    PRIMARY KEY (model_version, condition_id, tile_id),
    FOREIGN KEY (model_version, dim)
        REFERENCES psm.model_versions (version, embed_dim) ON DELETE CASCADE,
    {GAUSSIAN_CHECKS.format(t="embeddings")}
);
CREATE INDEX embeddings_tile ON psm.embeddings (tile_id);
COMMENT ON COLUMN psm.embeddings.var IS 'sigma^2 per dimension (not log-variance).';

CREATE TABLE psm.queries (
    id            bigserial PRIMARY KEY,
    model_version text NOT NULL,
    name          text,
    kind          text NOT NULL CHECK (kind IN ('text', 'audio', 'audio+text')),
    text          text,
    audio_name    text,
    dim           integer NOT NULL,
    mu            vector NOT NULL,
    var           vector NOT NULL,
    var_sum       double precision NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (model_version, dim)
        REFERENCES psm.model_versions (version, embed_dim) ON DELETE CASCADE,
    {GAUSSIAN_CHECKS.format(t="queries")}
);
CREATE INDEX queries_model ON psm.queries (model_version);

CREATE TABLE psm.region_sets (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    description text,
    source      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE psm.regions (
    id         bigserial PRIMARY KEY,
    set_name   text NOT NULL REFERENCES psm.region_sets (name) ON DELETE CASCADE,
    name       text NOT NULL,
    properties jsonb NOT NULL DEFAULT '{{}}',
    geom       geometry(MultiPolygon, 4326) NOT NULL CHECK (ST_IsValid(geom)),
    UNIQUE (set_name, name)
);
CREATE INDEX regions_geom_gist ON psm.regions USING gist (geom);

CREATE TABLE psm.jobs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind           text NOT NULL CHECK (kind IN ('embed_region', 'train', 'evaluate')),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params         jsonb NOT NULL DEFAULT '{{}}',
    model_version  text REFERENCES psm.model_versions (version) ON DELETE SET NULL,
    total          integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    done           integer NOT NULL DEFAULT 0 CHECK (done >= 0),
    message        text,
    error          text,
    result         jsonb,
    celery_task_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_status_created ON psm.jobs (status, created_at DESC);

CREATE TABLE psm.job_chunks (
    job_id     uuid NOT NULL REFERENCES psm.jobs (id) ON DELETE CASCADE,
    chunk      integer NOT NULL CHECK (chunk >= 0),
    status     text NOT NULL DEFAULT 'queued'
               CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    tiles      integer NOT NULL DEFAULT 0,
    attempts   integer NOT NULL DEFAULT 0,
    error      text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, chunk)
);

CREATE TABLE psm.job_events (
    id      bigserial PRIMARY KEY,
    job_id  uuid NOT NULL REFERENCES psm.jobs (id) ON DELETE CASCADE,
    at      timestamptz NOT NULL DEFAULT now(),
    level   text NOT NULL DEFAULT 'info' CHECK (level IN ('debug', 'info', 'warning', 'error')),
    message text NOT NULL
);
CREATE INDEX job_events_job ON psm.job_events (job_id, at);

CREATE TABLE psm.eval_runs (
    id            bigserial PRIMARY KEY,
    model_version text NOT NULL REFERENCES psm.model_versions (version) ON DELETE CASCADE,
    dataset       text NOT NULL,
    split         text NOT NULL,
    config        jsonb NOT NULL DEFAULT '{{}}',
    results       jsonb NOT NULL DEFAULT '{{}}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE psm.eval_metrics (
    run_id      bigint NOT NULL REFERENCES psm.eval_runs (id) ON DELETE CASCADE,
    scorer      text NOT NULL DEFAULT 'model' CHECK (scorer IN ('model', 'oracle')),
    direction   text NOT NULL CHECK (direction IN ('i2a', 'a2i')),
    zoom        smallint NOT NULL CHECK (zoom >= 1),
    with_text   boolean NOT NULL,
    metadata    text NOT NULL,
    r_at_10     double precision NOT NULL CHECK (r_at_10 BETWEEN 0 AND 1),
    median_rank double precision NOT NULL CHECK (median_rank >= 1),
    n           integer NOT NULL CHECK (n > 0),
    PRIMARY KEY (run_id, scorer, direction, zoom, with_text, metadata)
);

-- Paper Eq. 7: ||mu_p - mu_q||^2 + ||sigma_p^2 + sigma_q^2||_1, on pgvector's C kernels.
-- l1_distance(a, -b) = ||a + b||_1; pgvector has no unary minus, so -b = b - b - b.
CREATE FUNCTION psm.csd(mu_p vector, var_p vector, mu_q vector, var_q vector)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT vector_l2_squared_distance(mu_p, mu_q) + l1_distance(var_p, var_q - var_q - var_q) $$;
COMMENT ON FUNCTION psm.csd(vector, vector, vector, vector) IS
    'Closed-form sampled distance between two Gaussians (PSM paper Eq. 7); var arguments are sigma^2.';

-- The readable match probability sigmoid(-a * d + b) with a model's learned a and b.
CREATE FUNCTION psm.match_probability(d double precision, a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 1.0 / (1.0 + exp(LEAST(GREATEST(a * d - b, -700.0), 700.0))) $$;
"""

DOWNGRADE = """
DROP SCHEMA IF EXISTS psm CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # The extensions stay: other schemas of a shared database may use PostGIS or pgvector.
    op.execute(DOWNGRADE)
