"""ANN defaults re-tuned on a learned d = 512 model: the index walk gives k candidates, not ef_search + k.

psm.rank_tiles_gaussian asked the HNSW index for ef_search + k candidates (1,100 at the defaults),
which starts a second round of pgvector's iterative scan and reads 1,100 rows; on the learned
d = 512 model's embeddings at 1M tiles, with an index of m = 16 and ef_construction = 128
(now the defaults of ``psm query index``), k candidates give recall@100 0.989 at p50 8.5 ms
against 0.996 at 49 ms (docs/benchmarks.md, "ANN on a learned d = 512 model").
``SET psm.ann_candidates`` still asks for more.

Arguments, results, ordering and errors are unchanged. The downgrade restores 0015's function.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-15
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UPGRADE = r"""
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
-- Its queries are short; JIT compiling them took longer than running them (about 8 ms a call
-- for a state-sized region, where the whole call takes 42 ms without it).
SET jit = off
-- Each call plans its queries for its own candidate ids: the generic plan PL/pgSQL switches to
-- after five calls cannot size them and scanned all of psm.embeddings for the runs (3.7 s
-- against 27 ms for a state-sized region at 1M tiles).
SET plan_cache_mode = force_custom_plan
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
    n_other   bigint;
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
        cand_ids := psm.region_tile_ids(reg, p_zoom, cap);
        n_cand := coalesce(cardinality(cand_ids), 0);
        use_ann := has_index AND (p_method = 'ann' OR n_cand > thr);
    ELSE
        use_ann := has_index;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', LEAST(GREATEST(coalesce(knob_ef, 1000), 10), 1000)::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. By default k of them: the index order is the CSD
        -- order, and asking for more than the beam holds starts a second, slow round of the
        -- iterative scan (psm.ann_candidates asks for more). Only the index dimension is formatted in.
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
              q.mu || '[0]'::vector, LEAST(GREATEST(coalesce(knob_cand, p_k), p_k), 50000);
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
            cand_ids := psm.region_tile_ids(reg, p_zoom);
        END IF;
        -- Distances only for the region's tiles (OFFSET 0 keeps the planner from sorting the
        -- whole slice by distance first), then the geometry of the top k. The ids are read as
        -- runs of consecutive ids, one index range each: a box cut from a grid is one run per
        -- grid row, which reads a tenth of the index pages of a probe per id.
        RETURN QUERY
        SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, q.match_a, q.match_b), r.var_sum
        FROM (SELECT s.tile_id, s.var_sum, s.d
              FROM (SELECT e.tile_id, e.var_sum,
                           vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum AS d
                    FROM (SELECT min(c.id) AS lo, max(c.id) AS hi
                          FROM (SELECT c.id, c.id - row_number() OVER (ORDER BY c.id) AS run
                                FROM unnest(cand_ids) AS c(id)) c
                          GROUP BY c.run) c
                    JOIN psm.embeddings e
                      ON e.model_version = q.model_version AND e.condition_id = cid
                     AND e.tile_id BETWEEN c.lo AND c.hi
                    OFFSET 0) s
              ORDER BY s.d, s.tile_id
              LIMIT p_k) r
        JOIN psm.tiles t ON t.id = r.tile_id
        ORDER BY r.d, r.tile_id;
    ELSE
        -- The whole slice. Tiles at other zooms hold at most one row each of it, so when there
        -- are few of them, the top (k + their number) of the slice by distance alone holds the
        -- top k at this zoom: that ranking reads psm.embeddings only (a parallel scan) and joins
        -- psm.tiles for k + n_other rows, not for every row (1M x 512: 450 ms against 850-920).
        -- Otherwise every row is joined to its tile. Counted only up to the cap.
        SELECT count(*) INTO n_other FROM (
            SELECT 1 FROM psm.tiles t WHERE t.zoom < p_zoom OR t.zoom > p_zoom LIMIT 20001) s;
        IF n_other <= 20000 THEN
            RETURN QUERY EXECUTE
                'SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, $6, $7), r.var_sum
                 FROM (SELECT e.tile_id, e.var_sum, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                       FROM psm.embeddings e
                       WHERE e.model_version = $1 AND e.condition_id = $2
                       ORDER BY d, e.tile_id LIMIT $8 + $9) r
                 JOIN psm.tiles t ON t.id = r.tile_id
                 WHERE t.zoom = $5
                 ORDER BY r.d, r.tile_id LIMIT $8'
            USING q.model_version, cid, q.mu, q.var_sum, p_zoom, q.match_a, q.match_b, p_k, n_other;
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
    END IF;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles_gaussian(text, vector, vector, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a query Gaussian (model, mu, sigma^2) under a metadata condition (NULL = left out) in a region.';
"""

DOWNGRADE = r"""
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
-- Its queries are short; JIT compiling them took longer than running them (about 8 ms a call
-- for a state-sized region, where the whole call takes 42 ms without it).
SET jit = off
-- Each call plans its queries for its own candidate ids: the generic plan PL/pgSQL switches to
-- after five calls cannot size them and scanned all of psm.embeddings for the runs (3.7 s
-- against 27 ms for a state-sized region at 1M tiles).
SET plan_cache_mode = force_custom_plan
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
    n_other   bigint;
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
        cand_ids := psm.region_tile_ids(reg, p_zoom, cap);
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
            cand_ids := psm.region_tile_ids(reg, p_zoom);
        END IF;
        -- Distances only for the region's tiles (OFFSET 0 keeps the planner from sorting the
        -- whole slice by distance first), then the geometry of the top k. The ids are read as
        -- runs of consecutive ids, one index range each: a box cut from a grid is one run per
        -- grid row, which reads a tenth of the index pages of a probe per id.
        RETURN QUERY
        SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, q.match_a, q.match_b), r.var_sum
        FROM (SELECT s.tile_id, s.var_sum, s.d
              FROM (SELECT e.tile_id, e.var_sum,
                           vector_l2_squared_distance(e.mu, q.mu) + e.var_sum + q.var_sum AS d
                    FROM (SELECT min(c.id) AS lo, max(c.id) AS hi
                          FROM (SELECT c.id, c.id - row_number() OVER (ORDER BY c.id) AS run
                                FROM unnest(cand_ids) AS c(id)) c
                          GROUP BY c.run) c
                    JOIN psm.embeddings e
                      ON e.model_version = q.model_version AND e.condition_id = cid
                     AND e.tile_id BETWEEN c.lo AND c.hi
                    OFFSET 0) s
              ORDER BY s.d, s.tile_id
              LIMIT p_k) r
        JOIN psm.tiles t ON t.id = r.tile_id
        ORDER BY r.d, r.tile_id;
    ELSE
        -- The whole slice. Tiles at other zooms hold at most one row each of it, so when there
        -- are few of them, the top (k + their number) of the slice by distance alone holds the
        -- top k at this zoom: that ranking reads psm.embeddings only (a parallel scan) and joins
        -- psm.tiles for k + n_other rows, not for every row (1M x 512: 450 ms against 850-920).
        -- Otherwise every row is joined to its tile. Counted only up to the cap.
        SELECT count(*) INTO n_other FROM (
            SELECT 1 FROM psm.tiles t WHERE t.zoom < p_zoom OR t.zoom > p_zoom LIMIT 20001) s;
        IF n_other <= 20000 THEN
            RETURN QUERY EXECUTE
                'SELECT r.tile_id, t.geom, r.d, psm.match_probability(r.d, $6, $7), r.var_sum
                 FROM (SELECT e.tile_id, e.var_sum, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                       FROM psm.embeddings e
                       WHERE e.model_version = $1 AND e.condition_id = $2
                       ORDER BY d, e.tile_id LIMIT $8 + $9) r
                 JOIN psm.tiles t ON t.id = r.tile_id
                 WHERE t.zoom = $5
                 ORDER BY r.d, r.tile_id LIMIT $8'
            USING q.model_version, cid, q.mu, q.var_sum, p_zoom, q.match_a, q.match_b, p_k, n_other;
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
    END IF;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles_gaussian(text, vector, vector, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a query Gaussian (model, mu, sigma^2) under a metadata condition (NULL = left out) in a region.';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
