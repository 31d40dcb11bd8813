"""ANN knobs: psm.ann_ef_search and psm.ann_candidates settings, and defaults measured at 1M rows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The body of psm.rank_tiles with the HNSW beam width (ef) and the number of index
# candidates re-ranked by the exact CSD left as expressions.
RANK_TILES = """
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
    ann_var  double precision[];{decls}
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
        SELECT a.index_name, a.dim INTO idx
        FROM psm.ann_indexes a
        JOIN pg_class c ON c.relname = a.index_name
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'psm'
        JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
        WHERE a.model_version = q.model_version AND a.condition_id = cid;
        IF FOUND THEN
            IF p_method = 'ann' OR reg IS NULL THEN
                use_ann := true;
            ELSE
                SELECT count(*) INTO n_cand FROM (
                    SELECT 1 FROM psm.tiles t
                    WHERE t.zoom = p_zoom AND ST_Intersects(reg, t.centroid)
                    LIMIT psm.exact_threshold() + 1) s;
                use_ann := n_cand > psm.exact_threshold();
            END IF;
        ELSIF p_method = 'ann' THEN
            RAISE EXCEPTION 'no ANN index for model % and condition %', q.model_version, cid
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Build it with: psm query index --model %s --condition %s',
                                    q.model_version, cid);
        END IF;
    END IF;

    IF use_ann THEN
        PERFORM set_config('hnsw.ef_search', {ef}::text, true);
        -- Candidates come from the HNSW index in [mu, sqrt(var_sum)] L2 order (= CSD order),
        -- then are re-ranked by the exact CSD. Only the index dimension is formatted in.
        EXECUTE format(
            'SELECT array_agg(c.tile_id ORDER BY c.d, c.tile_id), array_agg(c.d ORDER BY c.d, c.tile_id),
                    array_agg(c.var_sum ORDER BY c.d, c.tile_id)
             FROM (SELECT e.tile_id, e.var_sum,
                          vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d
                   FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
                   WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
                   ORDER BY psm.ann_vector(e.mu, e.var_sum)::vector(%s) <-> $7
                   LIMIT $8) c', region_clause, idx.dim)
        INTO ann_ids, ann_d, ann_var
        USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg,
              q.mu || '[0]'::vector, {cand};
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

    RETURN QUERY EXECUTE format(
        'SELECT e.tile_id, t.geom, vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4 AS d,
                psm.match_probability(vector_l2_squared_distance(e.mu, $3) + e.var_sum + $4, $7, $8),
                e.var_sum
         FROM psm.embeddings e JOIN psm.tiles t ON t.id = e.tile_id
         WHERE e.model_version = $1 AND e.condition_id = $2 AND t.zoom = $5 %s
         ORDER BY d, e.tile_id LIMIT $9', region_clause)
    USING q.model_version, cid, q.mu, q.var_sum, p_zoom, reg, q.match_a, q.match_b, p_k;
    GET DIAGNOSTICS n_out = ROW_COUNT;
    IF n_out = 0 THEN
        PERFORM psm.raise_not_embedded(q.model_version, cid, p_month, p_hour, p_audio_source,
                                       p_caption_source, p_zoom, reg, NULL);
    END IF;
END $$;
COMMENT ON FUNCTION psm.rank_tiles(bigint, geometry, integer, integer, text, text, integer, integer, text) IS
    'Top-k tiles by CSD to a stored query under a metadata condition (NULL = left out) in a region.';
"""

# Session settings an analyst may change (SET psm.ann_ef_search = 400); each is clamped to
# what pgvector and the ranking accept, and unset means the measured default.
KNOB_DECLS = """
    knob_ef   integer := nullif(current_setting('psm.ann_ef_search', true), '')::integer;
    knob_cand integer := nullif(current_setting('psm.ann_candidates', true), '')::integer;"""
KNOB_EF = "LEAST(GREATEST(coalesce(knob_ef, GREATEST(4 * p_k, 400)), 10), 1000)"
KNOB_CAND = "LEAST(GREATEST(coalesce(knob_cand, 2 * p_k), p_k), 50000)"

OLD_EF = "LEAST(GREATEST(2 * p_k, 100), 1000)"
OLD_CAND = "p_k + GREATEST(p_k / 2, 20)"


def upgrade() -> None:
    op.execute(RANK_TILES.format(ef=KNOB_EF, cand=KNOB_CAND, decls=KNOB_DECLS))


def downgrade() -> None:
    op.execute(RANK_TILES.format(ef=OLD_EF, cand=OLD_CAND, decls=""))
