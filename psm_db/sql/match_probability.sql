-- The readable match probability sigmoid(-a * d + b) with a model's learned a and b.
CREATE OR REPLACE FUNCTION psm.match_probability(d double precision, a double precision, b double precision)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT 1.0 / (1.0 + exp(LEAST(GREATEST(a * d - b, -700.0), 700.0))) $$;
