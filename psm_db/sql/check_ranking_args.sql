-- Refuse bad metadata, zoom and k with messages that say what is allowed.
CREATE OR REPLACE FUNCTION psm.check_ranking_args(p_month integer, p_hour integer, p_audio_source text,
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
