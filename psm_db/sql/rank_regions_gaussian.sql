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
