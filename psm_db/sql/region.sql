-- The geometry of one named region of a region set.
CREATE OR REPLACE FUNCTION psm.region(p_region_set text, p_name text)
RETURNS geometry
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    g geometry;
BEGIN
    SELECT r.geom INTO g FROM psm.regions r WHERE r.set_name = p_region_set AND r.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no region % in region set %', quote_literal(p_name), quote_literal(p_region_set)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List them with: SELECT name FROM psm.regions WHERE set_name = ''...''';
    END IF;
    RETURN g;
END $$;
