-- Raise the "not embedded" error (SQLSTATE PSM01) for a query that found nothing to rank. Its
-- hint is a command that runs as printed: the region is a bbox W,S,E,N covering p_region (its
-- bounds rounded outwards to 4 decimals), or without a region the bounds of the tiles stored
-- at that zoom; p_region_label (a region set, say) only names the region in the message.
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
    bounds geometry := p_region;
    bbox text;
BEGIN
    SELECT count(*) INTO n_tiles FROM psm.tiles t
    WHERE t.zoom = p_zoom AND (p_region IS NULL OR ST_Intersects(p_region, t.centroid));
    IF label IS NULL AND p_region IS NOT NULL THEN
        label := concat_ws(',', round(ST_XMin(p_region)::numeric, 4), round(ST_YMin(p_region)::numeric, 4),
                           round(ST_XMax(p_region)::numeric, 4), round(ST_YMax(p_region)::numeric, 4));
    END IF;
    IF bounds IS NULL THEN
        SELECT ST_SetSRID(ST_Extent(t.geom)::geometry, 4326) INTO bounds FROM psm.tiles t WHERE t.zoom = p_zoom;
    END IF;
    IF bounds IS NOT NULL THEN
        bbox := concat_ws(',', trim_scale(floor(ST_XMin(bounds)::numeric * 10000) / 10000),
                          trim_scale(floor(ST_YMin(bounds)::numeric * 10000) / 10000),
                          trim_scale(ceil(ST_XMax(bounds)::numeric * 10000) / 10000),
                          trim_scale(ceil(ST_YMax(bounds)::numeric * 10000) / 10000));
    END IF;
    RAISE EXCEPTION 'nothing to rank: model % has no embeddings for month=%, hour=%, audio_source=%, caption_source=% at zoom % in %',
        p_model, coalesce(p_month::text, 'NULL'), coalesce(p_hour::text, 'NULL'),
        coalesce(p_audio_source, 'NULL'), coalesce(p_caption_source, 'NULL'), p_zoom,
        coalesce(p_region_label, CASE WHEN p_region IS NULL THEN 'any region' ELSE 'the region ' || label END)
        USING ERRCODE = 'PSM01',
              DETAIL = format('%s tiles at zoom %s lie in the region; condition id %s.', n_tiles,
                              p_zoom, coalesce(p_condition_id::text, 'none (never embedded)')),
              HINT = psm.embed_hint(p_model, p_month, p_hour, p_audio_source, p_caption_source,
                                    p_zoom, bbox);
END $$;
