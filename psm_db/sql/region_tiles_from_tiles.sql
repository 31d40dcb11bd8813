-- Keep psm.region_tiles exact when tiles arrive or move: after each statement that inserts
-- psm.tiles, add the regions holding each new tile's centroid; after an update, redo the tiles
-- whose centroid or zoom changed. Deleted tiles leave through ON DELETE CASCADE.
CREATE OR REPLACE FUNCTION psm.region_tiles_from_tiles()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Tile writers and region loads would otherwise miss each other's uncommitted rows. Tile
    -- writers share this transaction lock and region loads take it alone, so one waits for the
    -- other to commit; the statements below then read it (each takes a new snapshot under READ
    -- COMMITTED, the isolation every psm writer uses).
    PERFORM pg_advisory_xact_lock_shared(7301611);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, t.zoom, t.id
        FROM new_tiles t JOIN psm.regions r ON ST_Intersects(r.geom, t.centroid)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM psm.region_tiles m
        USING new_tiles n JOIN old_tiles o ON o.id = n.id
        WHERE m.tile_id = n.id AND (o.zoom <> n.zoom OR NOT ST_Equals(o.centroid, n.centroid));
        INSERT INTO psm.region_tiles (region_id, zoom, tile_id)
        SELECT r.id, n.zoom, n.id
        FROM new_tiles n JOIN old_tiles o ON o.id = n.id
        JOIN psm.regions r ON ST_Intersects(r.geom, n.centroid)
        WHERE o.zoom <> n.zoom OR NOT ST_Equals(o.centroid, n.centroid)
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION psm.region_tiles_from_tiles() IS
    'Trigger: the regions that hold the centroids of inserted or moved tiles, into psm.region_tiles.';
