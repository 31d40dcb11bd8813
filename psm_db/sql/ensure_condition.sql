-- Get or create a condition (writers). Range and vocabulary are checked by the table.
CREATE OR REPLACE FUNCTION psm.ensure_condition(p_month integer, p_hour integer,
                                                p_audio_source text, p_caption_source text)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    cid integer;
BEGIN
    INSERT INTO psm.conditions (month, hour, audio_source, caption_source)
    VALUES (p_month, p_hour, p_audio_source, p_caption_source)
    ON CONFLICT ON CONSTRAINT conditions_key DO NOTHING
    RETURNING id INTO cid;
    IF cid IS NULL THEN
        cid := psm.find_condition(p_month, p_hour, p_audio_source, p_caption_source);
    END IF;
    RETURN cid;
END $$;
