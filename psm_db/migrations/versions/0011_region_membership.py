"""Region membership: psm.region_tiles holds which tiles each region holds, kept exact both ways.

psm.rank_regions (and psm.rank_regions_gaussian) tested ST_Intersects(region, tile centroid)
for every region and tile on every call, and scored a tile once per region holding it. Now:

* psm.region_tiles (region_id, zoom, tile_id) has a row for every region whose geometry
  intersects a tile's centroid, the test the ranking used. Statement-level triggers keep it
  exact: inserting tiles (the worker's upsert) adds their regions, inserting regions (psm
  regions load) adds their tiles, and an update that moves a tile or reshapes a region redoes
  that row's memberships. Deleting either side removes its rows by ON DELETE CASCADE. The
  upgrade fills it for the regions and tiles already stored.
* psm.rank_regions_gaussian aggregates by a join on psm.region_tiles, and computes each
  tile's match probability once however many regions of the set hold it. Arguments, results,
  ordering and errors are unchanged.
* psm.match_probability clamps with float8larger/float8smaller (strict) instead of
  GREATEST/LEAST (not strict), so its body is strict and PostgreSQL inlines it into every
  ranking and map query rather than calling it per row. Same values.

The downgrade restores the functions of 0008 and 0007 and drops the table and its triggers.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE psm.region_tiles (
    region_id bigint NOT NULL REFERENCES psm.regions (id) ON DELETE CASCADE,
    zoom      smallint NOT NULL,
    tile_id   bigint NOT NULL REFERENCES psm.tiles (id) ON DELETE CASCADE,
    PRIMARY KEY (region_id, zoom, tile_id)
);
CREATE INDEX region_tiles_tile ON psm.region_tiles (tile_id);
COMMENT ON TABLE psm.region_tiles IS
    'Which tiles each region holds (the region intersects the tile centroid); kept exact by triggers on psm.tiles and psm.regions.';

-- Keep psm.region_tiles exact when tiles arrive or move: after each statement that inserts
-- psm.tiles, add the regions holding each new tile's centroid; after an update, redo the tiles
-- whose centroid or zoom changed. Deleted tiles leave through ON DELETE CASCADE.
CREATE OR REPLACE FUNCTION psm.region_tiles_from_tiles()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Tile writers and region loads would otherwise miss each other's uncommitted rows. Tile
    -- writers share this transaction lock and region loads take it alone, so one waits for the
    -- other to commit; the statements below then read it (each takes a new snapshot under READ
    -- COMMITTED, the isolation every psm writer uses).
    PERFORM pg_advisory_xact_lock_shared(7301611);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, t.zoom, t.id
        FROM new_tiles t JOIN psm.regions r ON ST_Intersects(r.geom, t.centroid)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM psm.region_tiles m
        USING new_tiles n JOIN old_tiles o ON o.id = n.id
        WHERE m.tile_id = n.id AND (o.zoom <> n.zoom OR NOT ST_Equals(o.centroid, n.centroid));
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, n.zoom, n.id
        FROM new_tiles n JOIN old_tiles o ON o.id = n.id
        JOIN psm.regions r ON ST_Intersects(r.geom, n.centroid)
        WHERE o.zoom <> n.zoom OR NOT ST_Equals(o.centroid, n.centroid)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION psm.region_tiles_from_tiles() IS
    'Trigger: the regions that hold the centroids of inserted or moved tiles, into psm.region_tiles.';

-- Keep psm.region_tiles exact when regions are loaded or reshaped: after each statement that
-- inserts psm.regions, add the tiles (every zoom) whose centroid each new region holds; after an
-- update, redo the regions whose geometry changed. Deleted regions and region sets leave
-- through ON DELETE CASCADE.
CREATE OR REPLACE FUNCTION psm.region_tiles_from_regions()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Tile writers and region loads would otherwise miss each other's uncommitted rows. Tile
    -- writers share this transaction lock and region loads take it alone, so one waits for the
    -- other to commit; the statements below then read it (each takes a new snapshot under READ
    -- COMMITTED, the isolation every psm writer uses).
    PERFORM pg_advisory_xact_lock(7301611);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, t.zoom, t.id
        FROM new_regions r JOIN psm.tiles t ON ST_Intersects(r.geom, t.centroid)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM psm.region_tiles m
        USING new_regions n JOIN old_regions o ON o.id = n.id
        WHERE m.region_id = n.id AND NOT ST_Equals(o.geom, n.geom);
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT n.id, t.zoom, t.id
        FROM new_regions n JOIN old_regions o ON o.id = n.id
        JOIN psm.tiles t ON ST_Intersects(n.geom, t.centroid)
        WHERE NOT ST_Equals(o.geom, n.geom)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION psm.region_tiles_from_regions() IS
    'Trigger: the tiles whose centroids inserted or reshaped regions hold, into psm.region_tiles.';

CREATE TRIGGER tiles_region_members_insert AFTER INSERT ON psm.tiles
    REFERENCING NEW TABLE AS new_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION psm.region_tiles_from_tiles();
CREATE TRIGGER tiles_region_members_update AFTER UPDATE ON psm.tiles
    REFERENCING OLD TABLE AS old_tiles NEW TABLE AS new_tiles
    FOR EACH STATEMENT EXECUTE FUNCTION psm.region_tiles_from_tiles();
CREATE TRIGGER regions_region_members_insert AFTER INSERT ON psm.regions
    REFERENCING NEW TABLE AS new_regions
    FOR EACH STATEMENT EXECUTE FUNCTION psm.region_tiles_from_regions();
CREATE TRIGGER regions_region_members_update AFTER UPDATE ON psm.regions
    REFERENCING OLD TABLE AS old_regions NEW TABLE AS new_regions
    FOR EACH STATEMENT EXECUTE FUNCTION psm.region_tiles_from_regions();

INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
SELECT r.id, t.zoom, t.id FROM psm.regions r JOIN psm.tiles t ON ST_Intersects(r.geom, t.centroid);
ANALYZE psm.region_tiles;

-- The readable match probability sigmoid(-a * d + b) with a model's learned a and b.
-- The clamp (exp overflows past 709) uses float8larger/float8smaller, which are strict, rather
-- than GREATEST/LEAST, which are not: so the body is strict and PostgreSQL inlines the call into
-- the query that uses it, instead of running a function call per row (2.5x on a 100k-row scan).
CREATE OR REPLACE FUNCTION psm.match_probability(d double precision, a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 1.0 / (1.0 + exp(float8smaller(float8larger(a * d - b, -700.0), 700.0))) $$;

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities to a
-- query Gaussian (mu, sigma^2) of a model. psm.rank_regions(query_id, ...) ranks a stored query with it.
CREATE OR REPLACE FUNCTION psm.rank_regions_gaussian(
    p_model_version  text,
    p_mu             vector,
    p_var            vector,
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
    SELECT p_model_version AS model_version, p_mu AS mu, g.var_sum, g.embed_dim, g.match_a, g.match_b
    INTO q FROM psm.check_query_gaussian(p_model_version, p_mu, p_var) g;
    IF NOT EXISTS (SELECT 1 FROM psm.region_sets s WHERE s.name = p_region_set) THEN
        RAISE EXCEPTION 'unknown region set %', coalesce(quote_literal(p_region_set), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Load one with: psm regions load FILE.geojson --set NAME';
    END IF;
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NOT NULL THEN
        RETURN QUERY
        -- Membership comes from psm.region_tiles (kept exact by triggers), not from ST_Intersects
        -- per call. The sigmoid is psm.match_probability written out: called here, in the plan
        -- PL/pgSQL caches after five calls, it measured 137 ms against 48 ms for the expression
        -- (bench/region_bench.py, demo database).
        WITH scored AS (
            SELECT m.region_id, e.var_sum,
                   1.0 / (1.0 + exp(LEAST(GREATEST(
                       q.match_a * (vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum) - q.match_b,
                       -700.0), 700.0))) AS p
            FROM psm.region_tiles m
            JOIN psm.embeddings e
              ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = m.tile_id
            WHERE m.zoom = p_zoom
              AND m.region_id IN (SELECT r.id FROM psm.regions r WHERE r.set_name = p_region_set))
        SELECT r.id, r.name,
               CASE p_agg WHEN 'mean' THEN a.mean_p
                          WHEN 'max' THEN a.max_p
                          ELSE a.share END AS score,
               a.n, a.uncertainty
        FROM (SELECT s.region_id, avg(s.p) AS mean_p, max(s.p) AS max_p,
                     avg((s.p >= p_threshold)::integer::double precision) AS share,
                     count(*) AS n, avg(s.var_sum) AS uncertainty
              FROM scored s GROUP BY s.region_id) a
        JOIN psm.regions r ON r.id = a.region_id
        ORDER BY 3 DESC, a.mean_p DESC, r.name
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
COMMENT ON FUNCTION psm.rank_regions_gaussian(text, vector, vector, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities to a query Gaussian.';
"""

DOWNGRADE = r"""
-- The readable match probability sigmoid(-a * d + b) with a model's learned a and b.
CREATE OR REPLACE FUNCTION psm.match_probability(d double precision, a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 1.0 / (1.0 + exp(LEAST(GREATEST(a * d - b, -700.0), 700.0))) $$;

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities to a
-- query Gaussian (mu, sigma^2) of a model. psm.rank_regions(query_id, ...) ranks a stored query with it.
CREATE OR REPLACE FUNCTION psm.rank_regions_gaussian(
    p_model_version  text,
    p_mu             vector,
    p_var            vector,
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
    SELECT p_model_version AS model_version, p_mu AS mu, g.var_sum, g.embed_dim, g.match_a, g.match_b
    INTO q FROM psm.check_query_gaussian(p_model_version, p_mu, p_var) g;
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
COMMENT ON FUNCTION psm.rank_regions_gaussian(text, vector, vector, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities to a query Gaussian.';

DROP TRIGGER tiles_region_members_insert ON psm.tiles;
DROP TRIGGER tiles_region_members_update ON psm.tiles;
DROP TRIGGER regions_region_members_insert ON psm.regions;
DROP TRIGGER regions_region_members_update ON psm.regions;
DROP TABLE psm.region_tiles;
DROP FUNCTION psm.region_tiles_from_tiles();
DROP FUNCTION psm.region_tiles_from_regions();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
