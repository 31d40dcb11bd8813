-- Keep psm.region_tiles exact when regions are loaded or reshaped: after each statement that
-- inserts psm.regions, add the tiles (every zoom) whose centroid each new region holds; after an
-- update, redo the regions whose geometry changed. Deleted regions and region sets leave
-- through ON DELETE CASCADE.
CREATE OR REPLACE FUNCTION psm.region_tiles_from_regions()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Tile writers and region loads would otherwise miss each other's uncommitted rows. Tile
    -- writers share this transaction lock and region loads take it alone, so one waits for the
    -- other to commit; the statements below then read it (each takes a new snapshot under READ
    -- COMMITTED, the isolation every psm writer uses).
    PERFORM pg_advisory_xact_lock(7301611);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, t.zoom, t.id
        FROM new_regions r JOIN psm.tiles t ON ST_Intersects(r.geom, t.centroid)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM psm.region_tiles m
        USING new_regions n JOIN old_regions o ON o.id = n.id
        WHERE m.region_id = n.id AND NOT ST_Equals(o.geom, n.geom);
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT n.id, t.zoom, t.id
        FROM new_regions n JOIN old_regions o ON o.id = n.id
        JOIN psm.tiles t ON ST_Intersects(n.geom, t.centroid)
        WHERE NOT ST_Equals(o.geom, n.geom)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION psm.region_tiles_from_regions() IS
    'Trigger: the tiles whose centroids inserted or reshaped regions hold, into psm.region_tiles.';
