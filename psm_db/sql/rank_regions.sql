-- Rank the regions of a region set by an aggregate of their tiles' match probabilities to a
-- stored query: the stored query's Gaussian ranked by psm.rank_regions_gaussian.
CREATE OR REPLACE FUNCTION psm.rank_regions(
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
    q record;
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
    SELECT qq.model_version, qq.mu, qq.var INTO q
    FROM psm.queries qq WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    RETURN QUERY
    SELECT * FROM psm.rank_regions_gaussian(q.model_version, q.mu, q.var, p_region_set, p_month, p_hour,
                                            p_audio_source, p_caption_source, p_zoom, p_k, p_agg,
                                            p_threshold);
END $$;
COMMENT ON FUNCTION psm.rank_regions(bigint, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities.';
