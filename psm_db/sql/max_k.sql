-- Largest k the ranking functions accept.
CREATE OR REPLACE FUNCTION psm.max_k() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10000 $$;
