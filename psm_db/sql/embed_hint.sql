-- The command that embeds a missing (model, condition, zoom, region) slice, as a shell runs it:
-- every value quoted as Python's shlex.quote does (bare when it holds only [A-Za-z0-9_@%+=:,./-],
-- else in single quotes with each ' written '"'"'). p_region is a region argument the command
-- accepts (a bbox W,S,E,N, say); NULL prints the placeholder W,S,E,N.
CREATE OR REPLACE FUNCTION psm.embed_hint(p_model text, p_month integer, p_hour integer,
                                          p_audio_source text, p_caption_source text, p_zoom integer,
                                          p_region text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'Embed it first: psm embed-region'
        || (SELECT string_agg(' ' || a.flag || ' ' || CASE
                       WHEN a.value ~ '^[A-Za-z0-9_@%+=:,./-]+$' THEN a.value
                       ELSE '''' || replace(a.value, '''', '''"''"''') || '''' END, '' ORDER BY a.n)
            FROM (VALUES (1, '--model', p_model), (2, '--region', coalesce(p_region, 'W,S,E,N')),
                         (3, '--zoom', p_zoom::text), (4, '--month', p_month::text),
                         (5, '--hour', p_hour::text), (6, '--audio-source', p_audio_source),
                         (7, '--caption-source', p_caption_source)) AS a(n, flag, value)
            WHERE a.value IS NOT NULL)
        || CASE WHEN p_region IS NULL THEN '  (W,S,E,N: the bbox of the region to embed, in degrees)' ELSE '' END
        || '  (or the same flags with: celery -A worker embed_region)'
$$;
