"""Ranking: psm.rank_tiles, psm.rank_regions, the ANN vector and its per-slice HNSW registry.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from alembic import op

from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _array(names: tuple[str, ...]) -> str:
    return "ARRAY[" + ", ".join(f"'{n}'" for n in names) + "]::text[]"


UPGRADE = f"""
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
    PRIMARY KEY (model_version, condition_id)
);
COMMENT ON TABLE psm.ann_indexes IS
    'HNSW indexes on psm.ann_vector(mu, var_sum)::vector(dim), one per (model, condition).';

-- Largest k the ranking functions accept.
CREATE FUNCTION psm.max_k() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10000 $$;

-- Candidate sets up to this size are ranked exactly (a GiST-filtered scan is then both
-- faster than the ANN index and perfect); larger ones use the HNSW index when it exists.
CREATE FUNCTION psm.exact_threshold() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10000 $$;

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
    IF p_audio_source IS NOT NULL AND NOT p_audio_source = ANY ({_array(AUDIO_SOURCES)}) THEN
        RAISE EXCEPTION 'unknown audio source %; expected one of {", ".join(AUDIO_SOURCES)} (or NULL)',
            quote_literal(p_audio_source) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_caption_source IS NOT NULL AND NOT p_caption_source = ANY ({_array(CAPTION_SOURCES)}) THEN
        RAISE EXCEPTION 'unknown caption source %; expected one of {", ".join(CAPTION_SOURCES)} (or NULL)',
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
        IF left(ltrim(p_text), 1) = '{{' THEN
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
        SELECT a.index_name, a.dim INTO idx
        FROM psm.ann_indexes a
        JOIN pg_class c ON c.relname = a.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'psm'
        JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
        WHERE a.model_version = q.model_version AND a.condition_id = cid;
        IF FOUND THEN
            IF p_method = 'ann' OR reg IS NULL THEN
                use_ann := true;
            ELSE
                SELECT count(*) INTO n_cand FROM (
                    SELECT 1 FROM psm.tiles t
                    WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid)
                    LIMIT psm.exact_threshold() + 1) s;
                use_ann := n_cand > psm.exact_threshold();
            END IF;
        ELSIF p_method = 'ann' THEN
            RAISE EXCEPTION 'no ANN index for model % and condition %', q.model_version, cid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Build it with: psm query index --model %s --condition %s',
                                    q.model_version, cid);
        END IF;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', LEAST(GREATEST(2 * p_k, 100), 1000)::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. Only the index dimension is formatted in.
        EXECUTE format(
            'SELECT array_agg(c.tile_id ORDER BY c.d, c.tile_id), array_agg(c.d ORDER BY c.d, c.tile_id),
                    array_agg(c.var_sum ORDER BY c.d, c.tile_id)
             FROM (SELECT e.tile_id, e.var_sum,
                          vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                   FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
                   WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
                   ORDER BY psm.ann_vector(e.mu, e.var_sum)::vector(%s) <-> $7
                   LIMIT $8) c', region_clause, idx.dim)
        INTO ann_ids, ann_d, ann_var
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg,
              q.mu || '[0]'::vector, p_k + GREATEST(p_k / 2, 20);
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

    RETURN QUERY EXECUTE format(
        'SELECT e.tile_id, t.geom, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d,
                psm.match_probability(vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4, $7, $8),
                e.var_sum
         FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
         WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
         ORDER BY d, e.tile_id LIMIT $9', region_clause)
    USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg, q.match_a, q.match_b, p_k;
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

DOWNGRADE = """
DROP FUNCTION IF EXISTS psm.rank_regions(bigint, text, integer, integer, text, text, integer, integer, text, double precision);
DROP FUNCTION IF EXISTS psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text);
DROP FUNCTION IF EXISTS psm.raise_not_embedded(text, integer, integer, integer, text, text, integer, geometry, text);
DROP FUNCTION IF EXISTS psm.embed_hint(text, integer, integer, text, text, integer, text);
DROP FUNCTION IF EXISTS psm.region(text, text);
DROP FUNCTION IF EXISTS psm.region_from_text(text);
DROP FUNCTION IF EXISTS psm.region_4326(geometry);
DROP FUNCTION IF EXISTS psm.check_ranking_args(integer, integer, text, text, integer, integer);
DROP FUNCTION IF EXISTS psm.exact_threshold();
DROP FUNCTION IF EXISTS psm.max_k();
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT index_name FROM psm.ann_indexes LOOP
        EXECUTE format('DROP INDEX IF EXISTS psm.%I', r.index_name);
    END LOOP;
END $$;
DROP TABLE IF EXISTS psm.ann_indexes;
DROP FUNCTION IF EXISTS psm.ann_vector(vector, double precision);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
