-- Candidate sets up to this size are ranked exactly (a GiST-filtered scan is then both
-- faster than the ANN index and perfect); larger ones use the HNSW index when it exists.
-- An analyst may change it per session: SET psm.exact_threshold = ...
CREATE OR REPLACE FUNCTION psm.exact_threshold() RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(current_setting('psm.exact_threshold', true), '')::integer, 50000) $$;
