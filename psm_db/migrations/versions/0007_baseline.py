"""Baseline: the whole schema as the retired revisions 0001-0007 left it, frozen as literal SQL.

Extensions, the psm schema and its tables, the reader and writer roles and their grants,
psm.csd and the other SQL functions, the ANN registry (with its key types), the storage
settings of psm.embeddings and the ranking functions with their measured search defaults
(docs/benchmarks.md, "Queries").

This revision keeps the id 0007 of the last revision of the old chain 0001-0007, so every
database migrated by an earlier release (all of them are at 0007) is recognised as being
here. A database stamped at one of the retired ids 0001-0006 is refused by psm_db.migrate
with a message that says what to do. The SQL is frozen: it never changes and it imports
nothing (the audio and caption vocabularies are written out; tests/db/test_migrations.py
checks them against psm_model.metadata). Later revisions change the schema.

Revision ID: 0007
Revises:
Create Date: 2026-11-26
"""

from alembic import op

revision = "0007"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS psm;

CREATE TABLE psm.model_versions (
    version         text PRIMARY KEY CHECK (version ~ '^[0-9a-f]{8,64}$'),
    name            text NOT NULL,
    preset          text NOT NULL,
    loss            text NOT NULL CHECK (loss IN ('pcmepp', 'infonce')),
    embed_dim       integer NOT NULL CHECK (embed_dim BETWEEN 1 AND 16000),
    feature_dim     integer NOT NULL CHECK (feature_dim BETWEEN 1 AND 16000),
    match_a         double precision NOT NULL,
    match_b         double precision NOT NULL,
    checkpoint_path text NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}',
    metrics         jsonb NOT NULL DEFAULT '{}',
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
    audio_source   text CHECK (audio_source IN ('yfcc', 'inaturalist', 'aporee', 'freesound')),
    caption_source text CHECK (caption_source IN ('metadata', 'captioner_a', 'captioner_b')),
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
    
    CONSTRAINT embeddings_dims CHECK (vector_dims(mu) = dim AND vector_dims(var) = dim),
    CONSTRAINT embeddings_var_positive CHECK (
        var_sum > 0 AND var_sum < 'Infinity'::float8
        AND bit_count(binary_quantize(var)) = dim)

);
CREATE INDEX embeddings_tile ON psm.embeddings (tile_id);
-- Keep mu inline and var out of line: a row with two vector(512) is ~4.2 kB, which would move
-- both to TOAST; the ranking reads mu and var_sum, never var.
ALTER TABLE psm.embeddings SET (toast_tuple_target = 4080);
ALTER TABLE psm.embeddings ALTER COLUMN mu SET STORAGE MAIN;
ALTER TABLE psm.embeddings ALTER COLUMN var SET STORAGE EXTERNAL;
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
    
    CONSTRAINT queries_dims CHECK (vector_dims(mu) = dim AND vector_dims(var) = dim),
    CONSTRAINT queries_var_positive CHECK (
        var_sum > 0 AND var_sum < 'Infinity'::float8
        AND bit_count(binary_quantize(var)) = dim)

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
    properties jsonb NOT NULL DEFAULT '{}',
    geom       geometry(MultiPolygon, 4326) NOT NULL CHECK (ST_IsValid(geom)),
    UNIQUE (set_name, name)
);
CREATE INDEX regions_geom_gist ON psm.regions USING gist (geom);

CREATE TABLE psm.jobs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind           text NOT NULL CHECK (kind IN ('embed_region', 'train', 'evaluate')),
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    params         jsonb NOT NULL DEFAULT '{}',
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
    config        jsonb NOT NULL DEFAULT '{}',
    results       jsonb NOT NULL DEFAULT '{}',
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

-- Reader and writer roles, their grants, and condition lookup functions.
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

-- Ranking: the ANN key, the per-slice HNSW registry, argument checks and the ranking functions.
-- The augmented vector a = [mu, sqrt(sum sigma^2)]. Searched with q = [mu_q, 0],
-- ||a - q||^2 = ||mu_p - mu_q||^2 + sum sigma_p^2, which is CSD minus the query's own
-- (constant) sum sigma_q^2: L2 order on a is exactly CSD order. HNSW indexes are built on
-- this expression, per (model, condition), so nothing extra is stored in the table and
-- writers need not fill any column.
CREATE FUNCTION psm.ann_vector(mu vector, var_sum double precision)
RETURNS vector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT mu || ARRAY[sqrt(var_sum)]::vector $$;
COMMENT ON FUNCTION psm.ann_vector(vector, double precision) IS
    'ANN key [mu, sqrt(var_sum)]: L2 order against [mu_q, 0] equals CSD order.';

CREATE TABLE psm.ann_indexes (
    model_version   text NOT NULL REFERENCES psm.model_versions (version) ON DELETE CASCADE,
    condition_id    integer NOT NULL REFERENCES psm.conditions (id) ON DELETE CASCADE,
    index_name      text NOT NULL UNIQUE,
    dim             integer NOT NULL CHECK (dim > 1),
    m               integer NOT NULL,
    ef_construction integer NOT NULL,
    rows            bigint NOT NULL DEFAULT 0,
    build_seconds   double precision NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    key_type        text NOT NULL DEFAULT 'vector'
                    CONSTRAINT ann_indexes_key_type_check CHECK (key_type IN ('vector', 'halfvec')),
    PRIMARY KEY (model_version, condition_id)
);
COMMENT ON TABLE psm.ann_indexes IS
    'HNSW indexes on psm.ann_vector(mu, var_sum)::vector(dim), one per (model, condition).';
COMMENT ON COLUMN psm.ann_indexes.key_type IS
    'How the HNSW key [mu, sqrt(var_sum)] is stored: vector (float32) or halfvec (float16).';

-- Largest k the ranking functions accept.
CREATE FUNCTION psm.max_k() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10000 $$;

-- Candidate sets up to this size are ranked exactly (a GiST-filtered scan is then both
-- faster than the ANN index and perfect); larger ones use the HNSW index when it exists.
-- An analyst may change it per session: SET psm.exact_threshold = ...
CREATE FUNCTION psm.exact_threshold() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(current_setting('psm.exact_threshold', true), '')::integer, 50000) $$;

-- Refuse bad metadata, zoom and k with messages that say what is allowed.
CREATE FUNCTION psm.check_ranking_args(p_month integer, p_hour integer, p_audio_source text,
                                       p_caption_source text, p_zoom integer, p_k integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    IF p_month IS NOT NULL AND p_month NOT BETWEEN 1 AND 12 THEN
        RAISE EXCEPTION 'month must be in 1..12 (or NULL to leave it out), got %', p_month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_hour IS NOT NULL AND p_hour NOT BETWEEN 0 AND 23 THEN
        RAISE EXCEPTION 'hour must be in 0..23 (or NULL to leave it out), got %', p_hour
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_audio_source IS NOT NULL AND NOT p_audio_source = ANY (ARRAY['yfcc', 'inaturalist', 'aporee', 'freesound']::text[]) THEN
        RAISE EXCEPTION 'unknown audio source %; expected one of yfcc, inaturalist, aporee, freesound (or NULL)',
            quote_literal(p_audio_source) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_caption_source IS NOT NULL AND NOT p_caption_source = ANY (ARRAY['metadata', 'captioner_a', 'captioner_b']::text[]) THEN
        RAISE EXCEPTION 'unknown caption source %; expected one of metadata, captioner_a, captioner_b (or NULL)',
            quote_literal(p_caption_source) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_zoom IS NULL OR p_zoom < 1 THEN
        RAISE EXCEPTION 'zoom must be an integer >= 1, got %', coalesce(p_zoom::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_k IS NULL OR p_k < 1 OR p_k > psm.max_k() THEN
        RAISE EXCEPTION 'k must be in 1..%, got %', psm.max_k(), coalesce(p_k::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- A region argument in EPSG:4326: SRID 0 is taken as lon/lat, other SRIDs are transformed.
CREATE FUNCTION psm.region_4326(p_region geometry)
RETURNS geometry
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    g geometry := p_region;
BEGIN
    IF g IS NULL THEN
        RETURN NULL;
    END IF;
    IF ST_IsEmpty(g) THEN
        RAISE EXCEPTION 'the region geometry is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ST_Dimension(g) <> 2 THEN
        RAISE EXCEPTION 'the region must be a Polygon or MultiPolygon, got %', GeometryType(g)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Buffer a point by metres: ST_Buffer(ST_MakePoint(lon, lat)::geography, 50000)::geometry';
    END IF;
    IF ST_SRID(g) = 0 THEN
        g := ST_SetSRID(g, 4326);
    ELSIF ST_SRID(g) <> 4326 THEN
        IF NOT EXISTS (SELECT 1 FROM spatial_ref_sys WHERE srid = ST_SRID(g)) THEN
            RAISE EXCEPTION 'the region has SRID %, which PostGIS does not know', ST_SRID(g)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the region in EPSG:4326 (lon/lat) or a known SRID.';
        END IF;
        g := ST_Transform(g, 4326);
    END IF;
    IF ST_XMin(g) < -180.0000001 OR ST_XMax(g) > 180.0000001
       OR ST_YMin(g) < -90.0000001 OR ST_YMax(g) > 90.0000001 THEN
        RAISE EXCEPTION 'the region lies outside lon/lat bounds (%); it is probably in another SRID',
            ST_AsText(ST_Envelope(g))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set its SRID with ST_SetSRID(geom, srid) so that it can be transformed.';
    END IF;
    IF NOT ST_IsValid(g) THEN
        RAISE EXCEPTION 'the region geometry is not valid: %', ST_IsValidReason(g)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Repair it with ST_MakeValid(geom).';
    END IF;
    RETURN g;
END $$;

-- Parse a region given as text: WKT, EWKT or GeoJSON; clear errors for anything else.
CREATE FUNCTION psm.region_from_text(p_text text)
RETURNS geometry
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    g geometry;
BEGIN
    BEGIN
        IF left(ltrim(p_text), 1) = '{' THEN
            g := ST_GeomFromGeoJSON(p_text);
        ELSE
            g := ST_GeomFromEWKT(p_text);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'cannot parse the region as WKT or GeoJSON: %', SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: POLYGON((-94 41, -93 41, -93 42, -94 42, -94 41))';
    END;
    RETURN psm.region_4326(g);
END $$;

-- The geometry of one named region of a region set.
CREATE FUNCTION psm.region(p_region_set text, p_name text)
RETURNS geometry
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    g geometry;
BEGIN
    SELECT r.geom INTO g FROM psm.regions r WHERE r.set_name = p_region_set AND r.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no region % in region set %', quote_literal(p_name), quote_literal(p_region_set)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List them with: SELECT name FROM psm.regions WHERE set_name = ''...''';
    END IF;
    RETURN g;
END $$;

-- The command that embeds a missing (model, condition, zoom, region) slice.
CREATE FUNCTION psm.embed_hint(p_model text, p_month integer, p_hour integer,
                               p_audio_source text, p_caption_source text, p_zoom integer,
                               p_region text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'Embed it first: psm embed-region --model ' || p_model
        || ' --region ' || quote_literal(coalesce(p_region, 'REGION'))
        || ' --zoom ' || p_zoom
        || coalesce(' --month ' || p_month, '') || coalesce(' --hour ' || p_hour, '')
        || coalesce(' --audio-source ' || p_audio_source, '')
        || coalesce(' --caption-source ' || p_caption_source, '')
        || '  (or the same flags with: celery -A worker embed_region)'
$$;

-- Raise the "not embedded" error (SQLSTATE PSM01) for a query that found nothing to rank.
CREATE FUNCTION psm.raise_not_embedded(p_model text, p_condition_id integer, p_month integer,
                                       p_hour integer, p_audio_source text,
                                       p_caption_source text, p_zoom integer,
                                       p_region geometry, p_region_label text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    n_tiles bigint;
    label text := p_region_label;
BEGIN
    SELECT count(*) INTO n_tiles FROM psm.tiles t
    WHERE t.zoom = p_zoom AND (p_region IS NULL OR ST_Intersects(p_region, t.centroid));
    IF label IS NULL AND p_region IS NOT NULL THEN
        label := concat_ws(',', round(ST_XMin(p_region)::numeric, 4), round(ST_YMin(p_region)::numeric, 4),
                           round(ST_XMax(p_region)::numeric, 4), round(ST_YMax(p_region)::numeric, 4));
    END IF;
    RAISE EXCEPTION 'nothing to rank: model % has no embeddings for month=%, hour=%, audio_source=%, caption_source=% at zoom % in %',
        p_model, coalesce(p_month::text, 'NULL'), coalesce(p_hour::text, 'NULL'),
        coalesce(p_audio_source, 'NULL'), coalesce(p_caption_source, 'NULL'), p_zoom,
        coalesce(p_region_label, CASE WHEN p_region IS NULL THEN 'any region' ELSE 'the region ' || label END)
        USING ERRCODE = 'PSM01',
              DETAIL = format('%s tiles at zoom %s lie in the region; condition id %s.', n_tiles,
                              p_zoom, coalesce(p_condition_id::text, 'none (never embedded)')),
              HINT = psm.embed_hint(p_model, p_month, p_hour, p_audio_source, p_caption_source,
                                    p_zoom, label);
END $$;

-- Top-k tiles by CSD to a stored query under one metadata condition.
CREATE FUNCTION psm.rank_tiles(
    p_query_id       bigint,
    p_region         geometry DEFAULT NULL,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_method         text DEFAULT 'auto')
RETURNS TABLE (tile_id bigint, geom geometry, distance double precision,
               probability double precision, uncertainty double precision)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
AS $$
DECLARE
    q        record;
    cid      integer;
    reg      geometry;
    idx      record;
    n_cand   bigint;
    n_out    bigint;
    use_ann  boolean := false;
    region_clause text;
    ann_ids  bigint[];
    ann_d    double precision[];
    ann_var  double precision[];
    knob_ef   integer := nullif(current_setting('psm.ann_ef_search', true), '')::integer;
    knob_cand integer := nullif(current_setting('psm.ann_candidates', true), '')::integer;
    thr       integer := psm.exact_threshold();
    has_index boolean := false;
    cap       integer;
    cand_ids  bigint[];
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_method IS NULL OR p_method NOT IN ('auto', 'exact', 'ann') THEN
        RAISE EXCEPTION 'method must be auto, exact or ann, got %', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var_sum, m.embed_dim, m.match_a, m.match_b INTO q
    FROM psm.queries qq JOIN psm.model_versions m ON m.version = qq.model_version
    WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    IF vector_dims(q.mu) <> q.embed_dim THEN
        RAISE EXCEPTION 'query % has % dimensions but model % embeds in %', p_query_id,
            vector_dims(q.mu), q.model_version, q.embed_dim USING ERRCODE = 'invalid_parameter_value';
    END IF;
    reg := psm.region_4326(p_region);
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NULL THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;

    region_clause := CASE WHEN reg IS NULL THEN '' ELSE ' AND ST_Intersects($6, t.centroid)' END;

    IF p_method <> 'exact' THEN
        SELECT a.index_name, a.dim, a.key_type INTO idx
        FROM psm.ann_indexes a
        JOIN pg_class c ON c.relname = a.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'psm'
        JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
        WHERE a.model_version = q.model_version AND a.condition_id = cid;
        has_index := FOUND;
        IF NOT has_index AND p_method = 'ann' THEN
            RAISE EXCEPTION 'no ANN index for model % and condition %', q.model_version, cid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Build it with: psm query index --model %s (and the condition''s flags)',
                                    q.model_version);
        END IF;
    END IF;

    IF reg IS NOT NULL THEN
        -- The GiST-filtered candidate set; counted only up to the threshold when the index
        -- could take over, so a large region costs no more than a small one here.
        cap := CASE WHEN has_index THEN thr + 1 END;
        SELECT array_agg(s.id) INTO cand_ids
        FROM (SELECT t.id FROM psm.tiles t
              WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid) LIMIT cap) s;
        n_cand := coalesce(cardinality(cand_ids), 0);
        use_ann := has_index AND (p_method = 'ann' OR n_cand > thr);
    ELSE
        use_ann := has_index;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000)::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. Only the index dimension is formatted in.
        EXECUTE format(
            'SELECT array_agg(c.tile_id ORDER BY c.d, c.tile_id), array_agg(c.d ORDER BY c.d, c.tile_id),
                    array_agg(c.var_sum ORDER BY c.d, c.tile_id)
             FROM (SELECT e.tile_id, e.var_sum,
                          vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                   FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
                   WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
                   ORDER BY psm.ann_vector(e.mu, e.var_sum)::%s(%s) <-> $7::%s
                   LIMIT $8) c', region_clause, idx.key_type, idx.dim, idx.key_type)
        INTO ann_ids, ann_d, ann_var
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg,
              q.mu || '[0]'::vector, LEAST(GREATEST(coalesce(knob_cand, LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000) + p_k), p_k), 50000);
        IF coalesce(cardinality(ann_ids), 0) >= p_k THEN
            RETURN QUERY
            SELECT u.id, t.geom, u.d, psm.match_probability(u.d, q.match_a, q.match_b), u.v
            FROM unnest(ann_ids[1:p_k], ann_d[1:p_k], ann_var[1:p_k]) WITH ORDINALITY AS u(id, d, v, ord)
            JOIN psm.tiles t ON t.id = u.id
            ORDER BY u.ord;
            RETURN;
        END IF;
        -- The index walk ran out (a very selective filter): fall back to the exact scan.
        RAISE NOTICE 'ANN search returned % of % rows; ranking exactly instead',
            coalesce(cardinality(ann_ids), 0), p_k;
    END IF;

    IF reg IS NOT NULL THEN
        IF cap IS NOT NULL AND n_cand > thr THEN
            SELECT array_agg(t.id) INTO cand_ids
            FROM psm.tiles t WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid);
        END IF;
        -- Distances only for the region's tiles (OFFSET 0 keeps the planner from sorting the
        -- whole slice by distance first), then the geometry of the top k.
        RETURN QUERY
        SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, q.match_a, q.match_b), r.var_sum
        FROM (SELECT s.tile_id, s.var_sum, s.d
              FROM (SELECT e.tile_id, e.var_sum,
                           vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum AS d
                    FROM unnest(cand_ids) AS c(id)
                    JOIN psm.embeddings e
                      ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = c.id
                    OFFSET 0) s
              ORDER BY s.d, s.tile_id
              LIMIT p_k) r
        JOIN psm.tiles t ON t.id = r.tile_id
        ORDER BY r.d, r.tile_id;
    ELSE
        RETURN QUERY EXECUTE
            'SELECT e.tile_id, t.geom, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d,
                    psm.match_probability(vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4, $6, $7),
                    e.var_sum
             FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
             WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5
             ORDER BY d, e.tile_id LIMIT $8'
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, q.match_a, q.match_b, p_k;
    END IF;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a stored query under a metadata condition (NULL = left out) in a region.';

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities.
CREATE FUNCTION psm.rank_regions(
    p_query_id       bigint,
    p_region_set     text,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_agg            text DEFAULT 'mean',
    p_threshold      double precision DEFAULT 0.5)
RETURNS TABLE (region_id bigint, region_name text, score double precision, tile_count bigint,
               uncertainty double precision)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    q      record;
    cid    integer;
    n_out  bigint;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_agg IS NULL OR p_agg NOT IN ('mean', 'max', 'share') THEN
        RAISE EXCEPTION 'agg must be mean, max or share, got %', coalesce(quote_literal(p_agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_threshold IS NULL OR NOT (p_threshold >= 0 AND p_threshold <= 1) THEN
        RAISE EXCEPTION 'threshold must be a probability in [0, 1], got %', coalesce(p_threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var_sum, m.embed_dim, m.match_a, m.match_b INTO q
    FROM psm.queries qq JOIN psm.model_versions m ON m.version = qq.model_version
    WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM psm.region_sets s WHERE s.name = p_region_set) THEN
        RAISE EXCEPTION 'unknown region set %', coalesce(quote_literal(p_region_set), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Load one with: psm regions load FILE.geojson --set NAME';
    END IF;
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NOT NULL THEN
        RETURN QUERY
        WITH scored AS (
            SELECT r.id, r.name, e.var_sum,
                   psm.match_probability(vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum,
                                         q.match_a, q.match_b) AS p
            FROM psm.regions r
            JOIN psm.tiles t ON t.zoom = p_zoom AND ST_Intersects(r.geom, t.centroid)
            JOIN psm.embeddings e
              ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = t.id
            WHERE r.set_name = p_region_set)
        SELECT s.id, s.name,
               CASE p_agg WHEN 'mean' THEN avg(s.p)
                          WHEN 'max' THEN max(s.p)
                          ELSE avg((s.p >= p_threshold)::integer::double precision) END AS score,
               count(*), avg(s.var_sum)
        FROM scored s
        GROUP BY s.id, s.name
        ORDER BY 3 DESC, avg(s.p) DESC, s.name
        LIMIT p_k;
        GET DIAGNOSTICS n_out = ROW_COUNT;
    END IF;
    IF cid IS NULL OR n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
            p_caption_source, p_zoom,
            (SELECT ST_Union(r.geom) FROM psm.regions r WHERE r.set_name = p_region_set),
            'region set ' || quote_literal(p_region_set));
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_regions(bigint, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities.';

GRANT SELECT ON psm.ann_indexes TO psm_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON psm.ann_indexes TO psm_writer;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA psm TO psm_reader, psm_writer;
REVOKE EXECUTE ON FUNCTION psm.ensure_condition(integer, integer, text, text) FROM PUBLIC, psm_reader;
"""

DOWNGRADE = r"""
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON TABLES FROM psm_reader, psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON SEQUENCES FROM psm_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA psm REVOKE ALL ON FUNCTIONS FROM psm_reader, psm_writer;
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM psm_reader, psm_writer', current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
END $$;
DROP SCHEMA IF EXISTS psm CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # The extensions stay (other schemas of a shared database may use PostGIS or pgvector),
    # and so do the roles: they are cluster-wide and may serve other databases.
    op.execute(DOWNGRADE)
