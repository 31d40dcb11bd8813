-- Check a query Gaussian (mu, sigma^2) against its model: the model exists, mu and var have
-- its dimension and every sigma^2 is > 0 (pgvector itself refuses NaN and infinity). Returns
-- the model's embedding size and match parameters, and sum sigma^2 added in float8 in the
-- order of the vector's elements.
CREATE OR REPLACE FUNCTION psm.check_query_gaussian(
    p_model_version text,
    p_mu            vector,
    p_var           vector,
    OUT embed_dim   integer,
    OUT match_a     double precision,
    OUT match_b     double precision,
    OUT var_sum     double precision)
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
BEGIN
    SELECT m.embed_dim, m.match_a, m.match_b INTO embed_dim, match_a, match_b
    FROM psm.model_versions m WHERE m.version = p_model_version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown model version %', coalesce(quote_literal(p_model_version), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List them with: SELECT version, name FROM psm.model_versions';
    END IF;
    IF p_mu IS NULL OR p_var IS NULL THEN
        RAISE EXCEPTION 'a query Gaussian needs both mu and var (sigma^2); % is NULL',
            CASE WHEN p_mu IS NULL THEN 'mu' ELSE 'var' END
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF vector_dims(p_mu) <> embed_dim OR vector_dims(p_var) <> embed_dim THEN
        RAISE EXCEPTION 'the query has % dimensions (mu) and % (var) but model % embeds in %',
            vector_dims(p_mu), vector_dims(p_var), p_model_version, embed_dim
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF bit_count(binary_quantize(p_var)) <> embed_dim THEN
        RAISE EXCEPTION 'var is sigma^2 and must be > 0 in every dimension'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass sigma^2, not log-variance: exp(logvar).';
    END IF;
    SELECT sum(x::double precision) INTO var_sum FROM unnest(p_var::real[]) AS u(x);
END $$;
COMMENT ON FUNCTION psm.check_query_gaussian(text, vector, vector) IS
    'Checks a query Gaussian against its model; returns embed_dim, match a and b, and sum sigma^2.';
