-- Paper Eq. 7: ||mu_p - mu_q||^2 + ||sigma_p^2 + sigma_q^2||_1, on pgvector's C kernels.
-- l1_distance(a, -b) = ||a + b||_1; pgvector has no unary minus, so -b = b - b - b.
CREATE OR REPLACE FUNCTION psm.csd(mu_p vector, var_p vector, mu_q vector, var_q vector)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT vector_l2_squared_distance(mu_p, mu_q) + l1_distance(var_p, var_q - var_q - var_q) $$;
COMMENT ON FUNCTION psm.csd(vector, vector, vector, vector) IS
    'Closed-form sampled distance between two Gaussians (PSM paper Eq. 7); var arguments are sigma^2.';
