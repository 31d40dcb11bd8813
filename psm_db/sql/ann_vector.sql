-- Ranking: the ANN key, the per-slice HNSW registry, argument checks and the ranking functions.
-- The augmented vector a = [mu, sqrt(sum sigma^2)]. Searched with q = [mu_q, 0],
-- ||a - q||^2 = ||mu_p - mu_q||^2 + sum sigma_p^2, which is CSD minus the query's own
-- (constant) sum sigma_q^2: L2 order on a is exactly CSD order. HNSW indexes are built on
-- this expression, per (model, condition), so nothing extra is stored in the table and
-- writers need not fill any column.
CREATE OR REPLACE FUNCTION psm.ann_vector(mu vector, var_sum double precision)
RETURNS vector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT mu || ARRAY[sqrt(var_sum)]::vector $$;
COMMENT ON FUNCTION psm.ann_vector(vector, double precision) IS
    'ANN key [mu, sqrt(var_sum)]: L2 order against [mu_q, 0] equals CSD order.';
