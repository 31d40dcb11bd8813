-- Raise the "not embedded" error (SQLSTATE PSM01) for a query that found nothing to rank.
CREATE OR REPLACE FUNCTION psm.raise_not_embedded(p_model text, p_condition_id integer, p_month integer,
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
