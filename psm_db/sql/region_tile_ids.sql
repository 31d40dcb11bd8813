-- The ids of the tiles at a zoom whose centroid a region holds (ST_Intersects(region, centroid),
-- as everywhere), at most p_cap of them (NULL: all). A rectangle is answered by the centroid
-- index's box test and exact ranges on the stored lon/lat (the index boxes are float4, rounded
-- outwards), with no geometry test per tile; other regions by ST_Intersects.
CREATE OR REPLACE FUNCTION psm.region_tile_ids(p_region geometry, p_zoom integer, p_cap integer DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    ids bigint[];
BEGIN
    IF ST_Equals(p_region, ST_Envelope(p_region)) THEN
        SELECT array_agg(s.id) INTO ids
        FROM (SELECT t.id FROM psm.tiles t
              WHERE t.zoom = p_zoom AND t.centroid && p_region
                AND t.lon BETWEEN ST_XMin(p_region) AND ST_XMax(p_region)
                AND t.lat BETWEEN ST_YMin(p_region) AND ST_YMax(p_region)
              LIMIT p_cap) s;
    ELSE
        SELECT array_agg(s.id) INTO ids
        FROM (SELECT t.id FROM psm.tiles t
              WHERE t.zoom = p_zoom AND ST_Intersects(p_region, t.centroid) LIMIT p_cap) s;
    END IF;
    RETURN ids;
END $$;
COMMENT ON FUNCTION psm.region_tile_ids(geometry, integer, integer) IS
    'Ids of the tiles at a zoom whose centroid a region holds, at most p_cap (NULL: all).';
