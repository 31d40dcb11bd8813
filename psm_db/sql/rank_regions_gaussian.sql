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
-- The slice of one (model, condition) lies in runs of psm.embeddings' pages (the worker writes
-- each chunk's rows condition by condition; the demo's slice is a quarter), but the planner
-- costs a bitmap scan of the primary key as if the slice were spread over every page, and
-- picks a sequential scan of the whole table: every model's and every condition's rows. Without sequential scans, the slice
-- is read through the primary key (demo database: 3,594 of 14,335 pages; bench/region_bench.py).
-- A table with no index to use then costs 1e10 (psm.conditions in psm.find_condition), which
-- would start JIT compilation (about 50 ms); the function's queries are small, so JIT is off.
-- The planner knows nothing of a materialized CTE's keys, so it expects some 60 rows from the
-- join of scores and memberships where there are 28k, and sorts them to group by region; with
-- sorting off it hashes the few regions instead (1.5-2 ms of about 32).
SET enable_seqscan = off
SET enable_sort = off
SET jit = off
AS $$
DECLARE
    q         record;
    cid       integer;
    n_out     bigint;
    n_members bigint;
    n_tiles   double precision;
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
        -- Membership comes from psm.region_tiles (kept exact by triggers), not from ST_Intersects
        -- per call. The sigmoid is psm.match_probability written out: called here, in the plan
        -- PL/pgSQL caches after five calls, it measured 137 ms against 48 ms for the expression
        -- (bench/region_bench.py, demo database).
        --
        -- The planner's count of tiles (-1, read as 0, for a psm.tiles never analysed), and the
        -- set's memberships at the zoom counted only as far as half of it: enough to choose.
        n_tiles := greatest((SELECT c.reltuples FROM pg_class c WHERE c.oid = 'psm.tiles'::regclass), 0);
        SELECT count(*) INTO n_members FROM (
            SELECT 1 FROM psm.region_tiles m
            WHERE m.zoom = p_zoom
              AND m.region_id IN (SELECT r.id FROM psm.regions r WHERE r.set_name = p_region_set)
            LIMIT ceil(n_tiles / 2)::bigint) s;
        IF 2 * n_members >= n_tiles THEN
            -- A set that holds half of all tiles or more (the slice has at most one row per
            -- tile, so the pass reads at most two rows per member): score the condition's whole
            -- slice in one pass, each tile once, and join the narrow scores to the memberships
            -- by hash. Looking up a member's row through an index costs about twice a row of
            -- the pass: on the demo database the two break even near 13k members of 25k tiles.
            RETURN QUERY
            WITH tile AS MATERIALIZED (
                SELECT e.tile_id, e.var_sum,
                       1.0 / (1.0 + exp(LEAST(GREATEST(
                           q.match_a * (vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum) - q.match_b,
                           -700.0), 700.0))) AS p
                FROM psm.embeddings e
                WHERE e.model_version = q.model_version AND e.condition_id = cid)
            SELECT r.id, r.name,
                   CASE p_agg WHEN 'mean' THEN a.mean_p
                              WHEN 'max' THEN a.max_p
                              ELSE a.share END AS score,
                   a.n, a.uncertainty
            FROM (SELECT m.region_id, sum(t.p) / count(*) AS mean_p, max(t.p) AS max_p,
                         count(*) FILTER (WHERE t.p >= p_threshold)::double precision / count(*) AS share,
                         count(*) AS n, sum(t.var_sum) / count(*) AS uncertainty
                  FROM psm.region_tiles m JOIN tile t ON t.tile_id = m.tile_id
                  WHERE m.zoom = p_zoom
                    AND m.region_id IN (SELECT r.id FROM psm.regions r WHERE r.set_name = p_region_set)
                  GROUP BY m.region_id) a
            JOIN psm.regions r ON r.id = a.region_id
            ORDER BY 3 DESC, a.mean_p DESC, r.name
            LIMIT p_k;
        ELSE
            -- A smaller set: look up each member's row.
            RETURN QUERY
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
            FROM (SELECT s.region_id, sum(s.p) / count(*) AS mean_p, max(s.p) AS max_p,
                         count(*) FILTER (WHERE s.p >= p_threshold)::double precision / count(*) AS share,
                         count(*) AS n, sum(s.var_sum) / count(*) AS uncertainty
                  FROM scored s GROUP BY s.region_id) a
            JOIN psm.regions r ON r.id = a.region_id
            ORDER BY 3 DESC, a.mean_p DESC, r.name
            LIMIT p_k;
        END IF;
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
