-- The command that embeds a missing (model, condition, zoom, region) slice.
CREATE OR REPLACE FUNCTION psm.embed_hint(p_model text, p_month integer, p_hour integer,
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
