-- Look a condition up (readers); NULL arguments mean "left out", matched as NULL.
CREATE OR REPLACE FUNCTION psm.find_condition(p_month integer, p_hour integer,
                                              p_audio_source text, p_caption_source text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT id FROM psm.conditions
    WHERE month IS NOT DISTINCT FROM p_month::smallint
      AND hour IS NOT DISTINCT FROM p_hour::smallint
      AND audio_source IS NOT DISTINCT FROM p_audio_source
      AND caption_source IS NOT DISTINCT FROM p_caption_source
$$;
