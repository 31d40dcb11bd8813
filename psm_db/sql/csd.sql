-- Paper Eq. 7: ||mu_p - mu_q||^2 + ||sigma_p^2 + sigma_q^2||_1, on pgvector's C kernels.
-- l1_distance(a, -b) = ||a + b||_1; pgvector has no unary minus, so -b = b - b - b.
-- Every sigma^2 must be > 0 (binary_quantize sets a bit exactly where an element is > 0), as in
-- psm.embeddings and psm.queries: a negative one would lower the distance below the means' part.
CREATE OR REPLACE FUNCTION psm.csd(mu_p vector, var_p vector, mu_q vector, var_q vector)
RETURNS double precision
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
BEGIN
    IF bit_count(binary_quantize(var_p)) <> vector_dims(var_p)
       OR bit_count(binary_quantize(var_q)) <> vector_dims(var_q) THEN
        RAISE EXCEPTION 'psm.csd needs every sigma^2 > 0; % holds a value <= 0',
            CASE WHEN bit_count(binary_quantize(var_p)) <> vector_dims(var_p) THEN 'var_p' ELSE 'var_q' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The var arguments are variances sigma^2 (not log-variances or standard deviations).';
    END IF;
    RETURN vector_l2_squared_distance(mu_p, mu_q) + l1_distance(var_p, var_q - var_q - var_q);
END $$;
COMMENT ON FUNCTION psm.csd(vector, vector, vector, vector) IS
    'Closed-form sampled distance between two Gaussians (PSM paper Eq. 7); var arguments are sigma^2 (each > 0).';
