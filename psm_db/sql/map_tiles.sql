-- Every embedded tile of a region as a polygon (SRID 4326) with its match probability,
-- uncertainty (sum sigma^2) and CSD, for a stored query under one metadata condition: a
-- map layer a GIS loads straight from PostGIS, e.g. in QGIS's DB Manager:
--   SELECT * FROM psm.map_tiles(1, p_month => 5, p_hour => 6, p_audio_source => 'aporee')
CREATE OR REPLACE FUNCTION psm.map_tiles(
    p_query_id       bigint,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_region         geometry DEFAULT NULL)
RETURNS TABLE (tile_id bigint, geom geometry(Polygon, 4326), probability double precision,
               uncertainty double precision, distance double precision)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    q   record;
    g   record;
    cid integer;
    reg geometry;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, 1);
    SELECT s.model_version, s.mu, s.var INTO q FROM psm.queries s WHERE s.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'no_data_found', HINT = 'List the stored queries with: psm query list';
    END IF;
    SELECT c.var_sum, c.match_a, c.match_b INTO g FROM psm.check_query_gaussian(q.model_version, q.mu, q.var) c;
    reg := psm.region_4326(p_region);
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NULL OR NOT EXISTS (
        SELECT 1 FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
        WHERE e.model_version = q.model_version AND e.condition_id = cid AND t.zoom = p_zoom
          AND (reg IS NULL OR ST_Intersects(reg, t.centroid))) THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
    RETURN QUERY
    SELECT s.tile_id, s.geom, psm.match_probability(s.d, g.match_a, g.match_b), s.var_sum, s.d
    FROM (SELECT e.tile_id, t.geom::geometry(Polygon, 4326) AS geom, e.var_sum,
                 vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + g.var_sum AS d
          FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
          WHERE e.model_version = q.model_version AND e.condition_id = cid AND t.zoom = p_zoom
            AND (reg IS NULL OR ST_Intersects(reg, t.centroid))) s
    ORDER BY s.tile_id;
END $$;
COMMENT ON FUNCTION psm.map_tiles(bigint, integer, integer, text, text, integer, geometry) IS
    'Every embedded tile of a region as a polygon with probability, uncertainty and CSD, for a GIS.';
