"""Gaussian forms of the ranking functions: rank a query given as (model, mu, sigma^2).

psm.rank_tiles_gaussian(model_version, mu, var, region, month, hour, audio_source,
caption_source, zoom, k, method) and psm.rank_regions_gaussian(model_version, mu, var,
region_set, month, hour, audio_source, caption_source, zoom, k, agg, threshold) take the
arguments of psm.rank_tiles and psm.rank_regions with a query Gaussian in place of the id
of a stored query, so a query can be ranked in SQL without being written to psm.queries
(the read-only role can use them). They have new names rather than overloading the old
ones, so no call of the old functions (an untyped NULL first argument, say) can become
ambiguous. psm.check_query_gaussian checks the Gaussian against its model and adds up
sum sigma^2 (in float8, in the order of the vector's elements).

psm.rank_tiles(query_id, ...) and psm.rank_regions(query_id, ...) keep their names,
arguments, results and error messages; they are now thin wrappers that look up the stored
query and rank its Gaussian with the new functions. The query's sum sigma^2 is now added
up from its var by psm.check_query_gaussian instead of read from psm.queries.var_sum (the
same sum of the same float32 values, up to float8 rounding).

The downgrade restores the functions of 0007.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
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

-- Top-k tiles by CSD to a query Gaussian (mu, sigma^2) of a model under one metadata condition.
-- psm.rank_tiles(query_id, ...) ranks a stored query with it.
CREATE OR REPLACE FUNCTION psm.rank_tiles_gaussian(
    p_model_version  text,
    p_mu             vector,
    p_var            vector,
    p_region         geometry DEFAULT NULL,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_method         text DEFAULT 'auto')
RETURNS TABLE (tile_id bigint, geom geometry, distance double precision,
               probability double precision, uncertainty double precision)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
AS $$
DECLARE
    q        record;
    cid      integer;
    reg      geometry;
    idx      record;
    n_cand   bigint;
    n_out    bigint;
    use_ann  boolean := false;
    region_clause text;
    ann_ids  bigint[];
    ann_d    double precision[];
    ann_var  double precision[];
    knob_ef   integer := nullif(current_setting('psm.ann_ef_search', true), '')::integer;
    knob_cand integer := nullif(current_setting('psm.ann_candidates', true), '')::integer;
    thr       integer := psm.exact_threshold();
    has_index boolean := false;
    cap       integer;
    cand_ids  bigint[];
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_method IS NULL OR p_method NOT IN ('auto', 'exact', 'ann') THEN
        RAISE EXCEPTION 'method must be auto, exact or ann, got %', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p_model_version AS model_version, p_mu AS mu, g.var_sum, g.embed_dim, g.match_a, g.match_b
    INTO q FROM psm.check_query_gaussian(p_model_version, p_mu, p_var) g;
    reg := psm.region_4326(p_region);
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NULL THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;

    region_clause := CASE WHEN reg IS NULL THEN '' ELSE ' AND ST_Intersects($6, t.centroid)' END;

    IF p_method <> 'exact' THEN
        SELECT a.index_name, a.dim, a.key_type INTO idx
        FROM psm.ann_indexes a
        JOIN pg_class c ON c.relname = a.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'psm'
        JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
        WHERE a.model_version = q.model_version AND a.condition_id = cid;
        has_index := FOUND;
        IF NOT has_index AND p_method = 'ann' THEN
            RAISE EXCEPTION 'no ANN index for model % and condition %', q.model_version, cid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Build it with: psm query index --model %s (and the condition''s flags)',
                                    q.model_version);
        END IF;
    END IF;

    IF reg IS NOT NULL THEN
        -- The GiST-filtered candidate set; counted only up to the threshold when the index
        -- could take over, so a large region costs no more than a small one here.
        cap := CASE WHEN has_index THEN thr + 1 END;
        SELECT array_agg(s.id) INTO cand_ids
        FROM (SELECT t.id FROM psm.tiles t
              WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid) LIMIT cap) s;
        n_cand := coalesce(cardinality(cand_ids), 0);
        use_ann := has_index AND (p_method = 'ann' OR n_cand > thr);
    ELSE
        use_ann := has_index;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000)::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. Only the index dimension is formatted in.
        EXECUTE format(
            'SELECT array_agg(c.tile_id ORDER BY c.d, c.tile_id), array_agg(c.d ORDER BY c.d, c.tile_id),
                    array_agg(c.var_sum ORDER BY c.d, c.tile_id)
             FROM (SELECT e.tile_id, e.var_sum,
                          vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                   FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
                   WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
                   ORDER BY psm.ann_vector(e.mu, e.var_sum)::%s(%s) <-> $7::%s
                   LIMIT $8) c', region_clause, idx.key_type, idx.dim, idx.key_type)
        INTO ann_ids, ann_d, ann_var
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg,
              q.mu || '[0]'::vector, LEAST(GREATEST(coalesce(knob_cand, LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000) + p_k), p_k), 50000);
        IF coalesce(cardinality(ann_ids), 0) >= p_k THEN
            RETURN QUERY
            SELECT u.id, t.geom, u.d, psm.match_probability(u.d, q.match_a, q.match_b), u.v
            FROM unnest(ann_ids[1:p_k], ann_d[1:p_k], ann_var[1:p_k]) WITH ORDINALITY AS u(id, d, v, ord)
            JOIN psm.tiles t ON t.id = u.id
            ORDER BY u.ord;
            RETURN;
        END IF;
        -- The index walk ran out (a very selective filter): fall back to the exact scan.
        RAISE NOTICE 'ANN search returned % of % rows; ranking exactly instead',
            coalesce(cardinality(ann_ids), 0), p_k;
    END IF;

    IF reg IS NOT NULL THEN
        IF cap IS NOT NULL AND n_cand > thr THEN
            SELECT array_agg(t.id) INTO cand_ids
            FROM psm.tiles t WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid);
        END IF;
        -- Distances only for the region's tiles (OFFSET 0 keeps the planner from sorting the
        -- whole slice by distance first), then the geometry of the top k.
        RETURN QUERY
        SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, q.match_a, q.match_b), r.var_sum
        FROM (SELECT s.tile_id, s.var_sum, s.d
              FROM (SELECT e.tile_id, e.var_sum,
                           vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum AS d
                    FROM unnest(cand_ids) AS c(id)
                    JOIN psm.embeddings e
                      ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = c.id
                    OFFSET 0) s
              ORDER BY s.d, s.tile_id
              LIMIT p_k) r
        JOIN psm.tiles t ON t.id = r.tile_id
        ORDER BY r.d, r.tile_id;
    ELSE
        RETURN QUERY EXECUTE
            'SELECT e.tile_id, t.geom, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d,
                    psm.match_probability(vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4, $6, $7),
                    e.var_sum
             FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
             WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5
             ORDER BY d, e.tile_id LIMIT $8'
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, q.match_a, q.match_b, p_k;
    END IF;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles_gaussian(text, vector, vector, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a query Gaussian (model, mu, sigma^2) under a metadata condition (NULL = left out) in a region.';

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities to a
-- query Gaussian (mu, sigma^2) of a model. psm.rank_regions(query_id, ...) ranks a stored query with it.
CREATE OR REPLACE FUNCTION psm.rank_regions_gaussian(
    p_model_version  text,
    p_mu             vector,
    p_var            vector,
    p_region_set     text,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_agg            text DEFAULT 'mean',
    p_threshold      double precision DEFAULT 0.5)
RETURNS TABLE (region_id bigint, region_name text, score double precision, tile_count bigint,
               uncertainty double precision)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    q      record;
    cid    integer;
    n_out  bigint;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_agg IS NULL OR p_agg NOT IN ('mean', 'max', 'share') THEN
        RAISE EXCEPTION 'agg must be mean, max or share, got %', coalesce(quote_literal(p_agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_threshold IS NULL OR NOT (p_threshold >= 0 AND p_threshold <= 1) THEN
        RAISE EXCEPTION 'threshold must be a probability in [0, 1], got %', coalesce(p_threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT p_model_version AS model_version, p_mu AS mu, g.var_sum, g.embed_dim, g.match_a, g.match_b
    INTO q FROM psm.check_query_gaussian(p_model_version, p_mu, p_var) g;
    IF NOT EXISTS (SELECT 1 FROM psm.region_sets s WHERE s.name = p_region_set) THEN
        RAISE EXCEPTION 'unknown region set %', coalesce(quote_literal(p_region_set), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Load one with: psm regions load FILE.geojson --set NAME';
    END IF;
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NOT NULL THEN
        RETURN QUERY
        WITH scored AS (
            SELECT r.id, r.name, e.var_sum,
                   psm.match_probability(vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum,
                                         q.match_a, q.match_b) AS p
            FROM psm.regions r
            JOIN psm.tiles t ON t.zoom = p_zoom AND ST_Intersects(r.geom, t.centroid)
            JOIN psm.embeddings e
              ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = t.id
            WHERE r.set_name = p_region_set)
        SELECT s.id, s.name,
               CASE p_agg WHEN 'mean' THEN avg(s.p)
                          WHEN 'max' THEN max(s.p)
                          ELSE avg((s.p >= p_threshold)::integer::double precision) END AS score,
               count(*), avg(s.var_sum)
        FROM scored s
        GROUP BY s.id, s.name
        ORDER BY 3 DESC, avg(s.p) DESC, s.name
        LIMIT p_k;
        GET DIAGNOSTICS n_out = ROW_COUNT;
    END IF;
    IF cid IS NULL OR n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
            p_caption_source, p_zoom,
            (SELECT ST_Union(r.geom) FROM psm.regions r WHERE r.set_name = p_region_set),
            'region set ' || quote_literal(p_region_set));
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_regions_gaussian(text, vector, vector, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities to a query Gaussian.';

-- Top-k tiles by CSD to a stored query under one metadata condition: the stored query's
-- Gaussian ranked by psm.rank_tiles_gaussian.
CREATE OR REPLACE FUNCTION psm.rank_tiles(
    p_query_id       bigint,
    p_region         geometry DEFAULT NULL,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_method         text DEFAULT 'auto')
RETURNS TABLE (tile_id bigint, geom geometry, distance double precision,
               probability double precision, uncertainty double precision)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
AS $$
DECLARE
    q record;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_method IS NULL OR p_method NOT IN ('auto', 'exact', 'ann') THEN
        RAISE EXCEPTION 'method must be auto, exact or ann, got %', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var, m.embed_dim INTO q
    FROM psm.queries qq JOIN psm.model_versions m ON m.version = qq.model_version
    WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    IF vector_dims(q.mu) <> q.embed_dim THEN
        RAISE EXCEPTION 'query % has % dimensions but model % embeds in %', p_query_id,
            vector_dims(q.mu), q.model_version, q.embed_dim USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    SELECT * FROM psm.rank_tiles_gaussian(q.model_version, q.mu, q.var, p_region, p_month, p_hour,
                                          p_audio_source, p_caption_source, p_zoom, p_k, p_method);
END $$;
COMMENT ON FUNCTION psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a stored query under a metadata condition (NULL = left out) in a region.';

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities to a
-- stored query: the stored query's Gaussian ranked by psm.rank_regions_gaussian.
CREATE OR REPLACE FUNCTION psm.rank_regions(
    p_query_id       bigint,
    p_region_set     text,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_agg            text DEFAULT 'mean',
    p_threshold      double precision DEFAULT 0.5)
RETURNS TABLE (region_id bigint, region_name text, score double precision, tile_count bigint,
               uncertainty double precision)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    q record;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_agg IS NULL OR p_agg NOT IN ('mean', 'max', 'share') THEN
        RAISE EXCEPTION 'agg must be mean, max or share, got %', coalesce(quote_literal(p_agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_threshold IS NULL OR NOT (p_threshold >= 0 AND p_threshold <= 1) THEN
        RAISE EXCEPTION 'threshold must be a probability in [0, 1], got %', coalesce(p_threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var INTO q
    FROM psm.queries qq WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    RETURN QUERY
    SELECT * FROM psm.rank_regions_gaussian(q.model_version, q.mu, q.var, p_region_set, p_month, p_hour,
                                            p_audio_source, p_caption_source, p_zoom, p_k, p_agg,
                                            p_threshold);
END $$;
COMMENT ON FUNCTION psm.rank_regions(bigint, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities.';

GRANT EXECUTE ON FUNCTION
    psm.check_query_gaussian(text, vector, vector),
    psm.rank_tiles_gaussian(text, vector, vector, geometry, integer, integer, text, text, integer, integer, text),
    psm.rank_regions_gaussian(text, vector, vector, text, integer, integer, text, text, integer, integer, text, double precision)
    TO psm_reader, psm_writer;
"""

# psm.rank_tiles and psm.rank_regions as revision 0007 created them.
DOWNGRADE = r"""
-- Top-k tiles by CSD to a stored query under one metadata condition.
CREATE OR REPLACE FUNCTION psm.rank_tiles(
    p_query_id       bigint,
    p_region         geometry DEFAULT NULL,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_method         text DEFAULT 'auto')
RETURNS TABLE (tile_id bigint, geom geometry, distance double precision,
               probability double precision, uncertainty double precision)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET hnsw.iterative_scan = 'relaxed_order'
SET hnsw.ef_search = 100
AS $$
DECLARE
    q        record;
    cid      integer;
    reg      geometry;
    idx      record;
    n_cand   bigint;
    n_out    bigint;
    use_ann  boolean := false;
    region_clause text;
    ann_ids  bigint[];
    ann_d    double precision[];
    ann_var  double precision[];
    knob_ef   integer := nullif(current_setting('psm.ann_ef_search', true), '')::integer;
    knob_cand integer := nullif(current_setting('psm.ann_candidates', true), '')::integer;
    thr       integer := psm.exact_threshold();
    has_index boolean := false;
    cap       integer;
    cand_ids  bigint[];
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_method IS NULL OR p_method NOT IN ('auto', 'exact', 'ann') THEN
        RAISE EXCEPTION 'method must be auto, exact or ann, got %', coalesce(quote_literal(p_method), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var_sum, m.embed_dim, m.match_a, m.match_b INTO q
    FROM psm.queries qq JOIN psm.model_versions m ON m.version = qq.model_version
    WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    IF vector_dims(q.mu) <> q.embed_dim THEN
        RAISE EXCEPTION 'query % has % dimensions but model % embeds in %', p_query_id,
            vector_dims(q.mu), q.model_version, q.embed_dim USING ERRCODE = 'invalid_parameter_value';
    END IF;
    reg := psm.region_4326(p_region);
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NULL THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;

    region_clause := CASE WHEN reg IS NULL THEN '' ELSE ' AND ST_Intersects($6, t.centroid)' END;

    IF p_method <> 'exact' THEN
        SELECT a.index_name, a.dim, a.key_type INTO idx
        FROM psm.ann_indexes a
        JOIN pg_class c ON c.relname = a.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'psm'
        JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
        WHERE a.model_version = q.model_version AND a.condition_id = cid;
        has_index := FOUND;
        IF NOT has_index AND p_method = 'ann' THEN
            RAISE EXCEPTION 'no ANN index for model % and condition %', q.model_version, cid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Build it with: psm query index --model %s (and the condition''s flags)',
                                    q.model_version);
        END IF;
    END IF;

    IF reg IS NOT NULL THEN
        -- The GiST-filtered candidate set; counted only up to the threshold when the index
        -- could take over, so a large region costs no more than a small one here.
        cap := CASE WHEN has_index THEN thr + 1 END;
        SELECT array_agg(s.id) INTO cand_ids
        FROM (SELECT t.id FROM psm.tiles t
              WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid) LIMIT cap) s;
        n_cand := coalesce(cardinality(cand_ids), 0);
        use_ann := has_index AND (p_method = 'ann' OR n_cand > thr);
    ELSE
        use_ann := has_index;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000)::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. Only the index dimension is formatted in.
        EXECUTE format(
            'SELECT array_agg(c.tile_id ORDER BY c.d, c.tile_id), array_agg(c.d ORDER BY c.d, c.tile_id),
                    array_agg(c.var_sum ORDER BY c.d, c.tile_id)
             FROM (SELECT e.tile_id, e.var_sum,
                          vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                   FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
                   WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
                   ORDER BY psm.ann_vector(e.mu, e.var_sum)::%s(%s) <-> $7::%s
                   LIMIT $8) c', region_clause, idx.key_type, idx.dim, idx.key_type)
        INTO ann_ids, ann_d, ann_var
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg,
              q.mu || '[0]'::vector, LEAST(GREATEST(coalesce(knob_cand, LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000) + p_k), p_k), 50000);
        IF coalesce(cardinality(ann_ids), 0) >= p_k THEN
            RETURN QUERY
            SELECT u.id, t.geom, u.d, psm.match_probability(u.d, q.match_a, q.match_b), u.v
            FROM unnest(ann_ids[1:p_k], ann_d[1:p_k], ann_var[1:p_k]) WITH ORDINALITY AS u(id, d, v, ord)
            JOIN psm.tiles t ON t.id = u.id
            ORDER BY u.ord;
            RETURN;
        END IF;
        -- The index walk ran out (a very selective filter): fall back to the exact scan.
        RAISE NOTICE 'ANN search returned % of % rows; ranking exactly instead',
            coalesce(cardinality(ann_ids), 0), p_k;
    END IF;

    IF reg IS NOT NULL THEN
        IF cap IS NOT NULL AND n_cand > thr THEN
            SELECT array_agg(t.id) INTO cand_ids
            FROM psm.tiles t WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid);
        END IF;
        -- Distances only for the region's tiles (OFFSET 0 keeps the planner from sorting the
        -- whole slice by distance first), then the geometry of the top k.
        RETURN QUERY
        SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, q.match_a, q.match_b), r.var_sum
        FROM (SELECT s.tile_id, s.var_sum, s.d
              FROM (SELECT e.tile_id, e.var_sum,
                           vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum AS d
                    FROM unnest(cand_ids) AS c(id)
                    JOIN psm.embeddings e
                      ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = c.id
                    OFFSET 0) s
              ORDER BY s.d, s.tile_id
              LIMIT p_k) r
        JOIN psm.tiles t ON t.id = r.tile_id
        ORDER BY r.d, r.tile_id;
    ELSE
        RETURN QUERY EXECUTE
            'SELECT e.tile_id, t.geom, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d,
                    psm.match_probability(vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4, $6, $7),
                    e.var_sum
             FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
             WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5
             ORDER BY d, e.tile_id LIMIT $8'
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, q.match_a, q.match_b, p_k;
    END IF;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a stored query under a metadata condition (NULL = left out) in a region.';

-- Rank the regions of a region set by an aggregate of their tiles' match probabilities.
CREATE OR REPLACE FUNCTION psm.rank_regions(
    p_query_id       bigint,
    p_region_set     text,
    p_month          integer DEFAULT NULL,
    p_hour           integer DEFAULT NULL,
    p_audio_source   text DEFAULT NULL,
    p_caption_source text DEFAULT NULL,
    p_zoom           integer DEFAULT 1,
    p_k              integer DEFAULT 100,
    p_agg            text DEFAULT 'mean',
    p_threshold      double precision DEFAULT 0.5)
RETURNS TABLE (region_id bigint, region_name text, score double precision, tile_count bigint,
               uncertainty double precision)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    q      record;
    cid    integer;
    n_out  bigint;
BEGIN
    PERFORM psm.check_ranking_args(p_month, p_hour, p_audio_source, p_caption_source, p_zoom, p_k);
    IF p_agg IS NULL OR p_agg NOT IN ('mean', 'max', 'share') THEN
        RAISE EXCEPTION 'agg must be mean, max or share, got %', coalesce(quote_literal(p_agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_threshold IS NULL OR NOT (p_threshold >= 0 AND p_threshold <= 1) THEN
        RAISE EXCEPTION 'threshold must be a probability in [0, 1], got %', coalesce(p_threshold::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT qq.model_version, qq.mu, qq.var_sum, m.embed_dim, m.match_a, m.match_b INTO q
    FROM psm.queries qq JOIN psm.model_versions m ON m.version = qq.model_version
    WHERE qq.id = p_query_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no stored query with id %', coalesce(p_query_id::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Create one with: psm query embed --model MODEL --text "..."';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM psm.region_sets s WHERE s.name = p_region_set) THEN
        RAISE EXCEPTION 'unknown region set %', coalesce(quote_literal(p_region_set), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Load one with: psm regions load FILE.geojson --set NAME';
    END IF;
    cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    IF cid IS NOT NULL THEN
        RETURN QUERY
        WITH scored AS (
            SELECT r.id, r.name, e.var_sum,
                   psm.match_probability(vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum,
                                         q.match_a, q.match_b) AS p
            FROM psm.regions r
            JOIN psm.tiles t ON t.zoom = p_zoom AND ST_Intersects(r.geom, t.centroid)
            JOIN psm.embeddings e
              ON e.model_version = q.model_version AND e.condition_id = cid AND e.tile_id = t.id
            WHERE r.set_name = p_region_set)
        SELECT s.id, s.name,
               CASE p_agg WHEN 'mean' THEN avg(s.p)
                          WHEN 'max' THEN max(s.p)
                          ELSE avg((s.p >= p_threshold)::integer::double precision) END AS score,
               count(*), avg(s.var_sum)
        FROM scored s
        GROUP BY s.id, s.name
        ORDER BY 3 DESC, avg(s.p) DESC, s.name
        LIMIT p_k;
        GET DIAGNOSTICS n_out = ROW_COUNT;
    END IF;
    IF cid IS NULL OR n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
            p_caption_source, p_zoom,
            (SELECT ST_Union(r.geom) FROM psm.regions r WHERE r.set_name = p_region_set),
            'region set ' || quote_literal(p_region_set));
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_regions(bigint, text, integer, integer, text, text, integer, integer, text, double precision) IS
    'Regions of a set ranked by mean/max/share-above-threshold of tile match probabilities.';

DROP FUNCTION psm.rank_regions_gaussian(text, vector, vector, text, integer, integer, text, text, integer, integer, text, double precision);
DROP FUNCTION psm.rank_tiles_gaussian(text, vector, vector, geometry, integer, integer, text, text, integer, integer, text);
DROP FUNCTION psm.check_query_gaussian(text, vector, vector);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
