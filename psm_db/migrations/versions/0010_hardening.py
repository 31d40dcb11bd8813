"""Hardening: psm.csd refuses sigma^2 <= 0, the "not embedded" hint runs as printed, chunk leases.

* psm.csd raises invalid_parameter_value (22023) when an element of var_p or var_q is not > 0
  (the same test as the check constraints of psm.embeddings: binary_quantize sets a bit exactly
  where an element is > 0). It was a SQL function that returned a smaller, meaningless distance
  for a negative sigma^2; it is now PL/pgSQL (it is not used by the ranking functions, which add
  up the stored sum of sigma^2 themselves).
* psm.embed_hint quotes every value as Python's shlex.quote does, and psm.raise_not_embedded
  hands it a bbox covering the region (bounds rounded outwards to 4 decimals; without a region,
  the bounds of the tiles stored at that zoom) instead of a label such as
  "region set 'demo'", which the command refused.
* psm.job_chunks gets heartbeat_at (when the worker running the chunk last said it is alive)
  and worker (which worker that is), so a chunk whose worker died is re-queued after its lease
  runs out rather than after the broker's visibility timeout.

The downgrade restores the functions of 0007 and drops the two columns.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-09
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = r"""
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

-- The command that embeds a missing (model, condition, zoom, region) slice, as a shell runs it:
-- every value quoted as Python's shlex.quote does (bare when it holds only [A-Za-z0-9_@%+=:,./-],
-- else in single quotes with each ' written '"'"'). p_region is a region argument the command
-- accepts (a bbox W,S,E,N, say); NULL prints the placeholder W,S,E,N.
CREATE OR REPLACE FUNCTION psm.embed_hint(p_model text, p_month integer, p_hour integer,
                                          p_audio_source text, p_caption_source text, p_zoom integer,
                                          p_region text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'Embed it first: psm embed-region'
        || (SELECT string_agg(' ' || a.flag || ' ' || CASE
                       WHEN a.value ~ '^[A-Za-z0-9_@%+=:,./-]+$' THEN a.value
                       ELSE '''' || replace(a.value, '''', '''"''"''') || '''' END, '' ORDER BY a.n)
            FROM (VALUES (1, '--model', p_model), (2, '--region', coalesce(p_region, 'W,S,E,N')),
                         (3, '--zoom', p_zoom::text), (4, '--month', p_month::text),
                         (5, '--hour', p_hour::text), (6, '--audio-source', p_audio_source),
                         (7, '--caption-source', p_caption_source)) AS a(n, flag, value)
            WHERE a.value IS NOT NULL)
        || CASE WHEN p_region IS NULL THEN '  (W,S,E,N: the bbox of the region to embed, in degrees)' ELSE '' END
        || '  (or the same flags with: celery -A worker embed_region)'
$$;

-- Raise the "not embedded" error (SQLSTATE PSM01) for a query that found nothing to rank. Its
-- hint is a command that runs as printed: the region is a bbox W,S,E,N covering p_region (its
-- bounds rounded outwards to 4 decimals), or without a region the bounds of the tiles stored
-- at that zoom; p_region_label (a region set, say) only names the region in the message.
CREATE OR REPLACE FUNCTION psm.raise_not_embedded(p_model text, p_condition_id integer, p_month integer,
                                                  p_hour integer, p_audio_source text,
                                                  p_caption_source text, p_zoom integer,
                                                  p_region geometry, p_region_label text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    n_tiles bigint;
    label text := p_region_label;
    bounds geometry := p_region;
    bbox text;
BEGIN
    SELECT count(*) INTO n_tiles FROM psm.tiles t
    WHERE t.zoom = p_zoom AND (p_region IS NULL OR ST_Intersects(p_region, t.centroid));
    IF label IS NULL AND p_region IS NOT NULL THEN
        label := concat_ws(',', round(ST_XMin(p_region)::numeric, 4), round(ST_YMin(p_region)::numeric, 4),
                           round(ST_XMax(p_region)::numeric, 4), round(ST_YMax(p_region)::numeric, 4));
    END IF;
    IF bounds IS NULL THEN
        SELECT ST_SetSRID(ST_Extent(t.geom)::geometry, 4326) INTO bounds FROM psm.tiles t WHERE t.zoom = p_zoom;
    END IF;
    IF bounds IS NOT NULL THEN
        bbox := concat_ws(',', trim_scale(floor(ST_XMin(bounds)::numeric * 10000) / 10000),
                          trim_scale(floor(ST_YMin(bounds)::numeric * 10000) / 10000),
                          trim_scale(ceil(ST_XMax(bounds)::numeric * 10000) / 10000),
                          trim_scale(ceil(ST_YMax(bounds)::numeric * 10000) / 10000));
    END IF;
    RAISE EXCEPTION 'nothing to rank: model % has no embeddings for month=%, hour=%, audio_source=%, caption_source=% at zoom % in %',
        p_model, coalesce(p_month::text, 'NULL'), coalesce(p_hour::text, 'NULL'),
        coalesce(p_audio_source, 'NULL'), coalesce(p_caption_source, 'NULL'), p_zoom,
        coalesce(p_region_label, CASE WHEN p_region IS NULL THEN 'any region' ELSE 'the region ' || label END)
        USING ERRCODE = 'PSM01',
              DETAIL = format('%s tiles at zoom %s lie in the region; condition id %s.', n_tiles,
                              p_zoom, coalesce(p_condition_id::text, 'none (never embedded)')),
              HINT = psm.embed_hint(p_model, p_month, p_hour, p_audio_source, p_caption_source,
                                    p_zoom, bbox);
END $$;

ALTER TABLE psm.job_chunks
    ADD COLUMN heartbeat_at timestamptz,
    ADD COLUMN worker text;
COMMENT ON COLUMN psm.job_chunks.heartbeat_at IS
    'When the worker running the chunk last renewed its lease (NULL unless running).';
COMMENT ON COLUMN psm.job_chunks.worker IS 'The worker (host:pid) that last claimed the chunk.';
"""

DOWNGRADE = r"""
-- Paper Eq. 7: ||mu_p - mu_q||^2 + ||sigma_p^2 + sigma_q^2||_1, on pgvector's C kernels.
-- l1_distance(a, -b) = ||a + b||_1; pgvector has no unary minus, so -b = b - b - b.
CREATE OR REPLACE FUNCTION psm.csd(mu_p vector, var_p vector, mu_q vector, var_q vector)
RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT vector_l2_squared_distance(mu_p, mu_q) + l1_distance(var_p, var_q - var_q - var_q) $$;
COMMENT ON FUNCTION psm.csd(vector, vector, vector, vector) IS
    'Closed-form sampled distance between two Gaussians (PSM paper Eq. 7); var arguments are sigma^2.';

-- The command that embeds a missing (model, condition, zoom, region) slice.
CREATE OR REPLACE FUNCTION psm.embed_hint(p_model text, p_month integer, p_hour integer,
                               p_audio_source text, p_caption_source text, p_zoom integer,
                               p_region text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT 'Embed it first: psm embed-region --model ' || p_model
        || ' --region ' || quote_literal(coalesce(p_region, 'REGION'))
        || ' --zoom ' || p_zoom
        || coalesce(' --month ' || p_month, '') || coalesce(' --hour ' || p_hour, '')
        || coalesce(' --audio-source ' || p_audio_source, '')
        || coalesce(' --caption-source ' || p_caption_source, '')
        || '  (or the same flags with: celery -A worker embed_region)'
$$;

-- Raise the "not embedded" error (SQLSTATE PSM01) for a query that found nothing to rank.
CREATE OR REPLACE FUNCTION psm.raise_not_embedded(p_model text, p_condition_id integer, p_month integer,
                                       p_hour integer, p_audio_source text,
                                       p_caption_source text, p_zoom integer,
                                       p_region geometry, p_region_label text)
RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    n_tiles bigint;
    label text := p_region_label;
BEGIN
    SELECT count(*) INTO n_tiles FROM psm.tiles t
    WHERE t.zoom = p_zoom AND (p_region IS NULL OR ST_Intersects(p_region, t.centroid));
    IF label IS NULL AND p_region IS NOT NULL THEN
        label := concat_ws(',', round(ST_XMin(p_region)::numeric, 4), round(ST_YMin(p_region)::numeric, 4),
                           round(ST_XMax(p_region)::numeric, 4), round(ST_YMax(p_region)::numeric, 4));
    END IF;
    RAISE EXCEPTION 'nothing to rank: model % has no embeddings for month=%, hour=%, audio_source=%, caption_source=% at zoom % in %',
        p_model, coalesce(p_month::text, 'NULL'), coalesce(p_hour::text, 'NULL'),
        coalesce(p_audio_source, 'NULL'), coalesce(p_caption_source, 'NULL'), p_zoom,
        coalesce(p_region_label, CASE WHEN p_region IS NULL THEN 'any region' ELSE 'the region ' || label END)
        USING ERRCODE = 'PSM01',
              DETAIL = format('%s tiles at zoom %s lie in the region; condition id %s.', n_tiles,
                              p_zoom, coalesce(p_condition_id::text, 'none (never embedded)')),
              HINT = psm.embed_hint(p_model, p_month, p_hour, p_audio_source, p_caption_source,
                                    p_zoom, label);
END $$;

ALTER TABLE psm.job_chunks DROP COLUMN heartbeat_at, DROP COLUMN worker;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
