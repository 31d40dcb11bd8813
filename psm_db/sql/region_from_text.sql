-- Parse a region given as text: WKT, EWKT or GeoJSON; clear errors for anything else.
CREATE OR REPLACE FUNCTION psm.region_from_text(p_text text)
RETURNS geometry
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    g geometry;
BEGIN
    BEGIN
        IF left(ltrim(p_text), 1) = '{' THEN
            g := ST_GeomFromGeoJSON(p_text);
        ELSE
            g := ST_GeomFromEWKT(p_text);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'cannot parse the region as WKT or GeoJSON: %', SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Example: POLYGON((-94 41, -93 41, -93 42, -94 42, -94 41))';
    END;
    RETURN psm.region_4326(g);
END $$;
