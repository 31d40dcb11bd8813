-- A region argument in EPSG:4326: SRID 0 is taken as lon/lat, other SRIDs are transformed.
CREATE OR REPLACE FUNCTION psm.region_4326(p_region geometry)
RETURNS geometry
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    g geometry := p_region;
BEGIN
    IF g IS NULL THEN
        RETURN NULL;
    END IF;
    IF ST_IsEmpty(g) THEN
        RAISE EXCEPTION 'the region geometry is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF ST_Dimension(g) <> 2 THEN
        RAISE EXCEPTION 'the region must be a Polygon or MultiPolygon, got %', GeometryType(g)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Buffer a point by metres: ST_Buffer(ST_MakePoint(lon, lat)::geography, 50000)::geometry';
    END IF;
    IF ST_SRID(g) = 0 THEN
        g := ST_SetSRID(g, 4326);
    ELSIF ST_SRID(g) <> 4326 THEN
        IF NOT EXISTS (SELECT 1 FROM spatial_ref_sys WHERE srid = ST_SRID(g)) THEN
            RAISE EXCEPTION 'the region has SRID %, which PostGIS does not know', ST_SRID(g)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Give the region in EPSG:4326 (lon/lat) or a known SRID.';
        END IF;
        g := ST_Transform(g, 4326);
    END IF;
    IF ST_XMin(g) < -180.0000001 OR ST_XMax(g) > 180.0000001
       OR ST_YMin(g) < -90.0000001 OR ST_YMax(g) > 90.0000001 THEN
        RAISE EXCEPTION 'the region lies outside lon/lat bounds (%); it is probably in another SRID',
            ST_AsText(ST_Envelope(g))
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set its SRID with ST_SetSRID(geom, srid) so that it can be transformed.';
    END IF;
    IF NOT ST_IsValid(g) THEN
        RAISE EXCEPTION 'the region geometry is not valid: %', ST_IsValidReason(g)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Repair it with ST_MakeValid(geom).';
    END IF;
    RETURN g;
END $$;
