-- Top-k tiles by CSD to a stored query under one metadata condition: the stored query's
-- Gaussian ranked by psm.rank_tiles_gaussian.
CREATE OR REPLACE FUNCTION psm.rank_tiles(
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
AS $$
DECLARE
    q record;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_method IS NULL OR p_method NOT IN ('auto', 'exact', 'ann') THEN
        RAISE EXCEPTION 'method must be auto, exact or ann, got %', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var, m.embed_dim INTO q
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
    RETURN QUERY
    SELECT * FROM psm.rank_tiles_gaussian(q.model_version, q.mu, q.var, p_region, p_month, p_hour,
                                          p_audio_source, p_caption_source, p_zoom, p_k, p_method);
END $$;
COMMENT ON FUNCTION psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a stored query under a metadata condition (NULL = left out) in a region.';
