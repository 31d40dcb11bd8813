"""psm_model.condition.Condition: validation, the text form and its round trips."""

from __future__ import annotations

import pickle

import pytest

from psm_model import Condition as Exported
from psm_model.condition import FIELDS, Condition


def test_fields_and_normalisation():
    c = Condition(5, 20, " iNaturalist ", "METADATA")
    assert (c.month, c.hour, c.audio_source, c.caption_source) == (5, 20, "inaturalist", "metadata")
    assert c.sql_args() == (5, 20, "inaturalist", "metadata")
    assert c.as_dict() == dict(zip(FIELDS, c.sql_args(), strict=True))
    assert Condition() == Condition(None, None, None, None) and Condition().sql_args() == (None,) * 4
    assert Condition(month=5.0).month == 5 and type(Condition(month=5.0).month) is int
    assert Exported is Condition
    assert hash(Condition(5)) == hash(Condition(month=5)) and pickle.loads(pickle.dumps(c)) == c
    with pytest.raises(AttributeError):
        c.month = 6  # frozen


@pytest.mark.parametrize("fields, message", [
    ({"month": 13}, "month 13 is out of range: month must be in 1..12, or leave it out"),
    ({"month": 0}, "month 0 is out of range: month must be in 1..12, or leave it out"),
    ({"month": 5.5}, r"month must be in 1..12 \(a whole number\), or leave it out; got 5.5"),
    ({"month": "5"}, r"month must be in 1..12 \(a whole number\), or leave it out; got '5'"),
    ({"month": True}, r"month must be in 1..12 \(a whole number\)"),
    ({"hour": 24}, "hour 24 is out of range: hour must be in 0..23, or leave it out"),
    ({"hour": -1}, "hour -1 is out of range: hour must be in 0..23"),
    ({"hour": object()}, r"hour must be in 0..23 \(a whole number\)"),
    ({"audio_source": "spotify"}, "unknown audio source 'spotify'; expected one of yfcc, inaturalist, aporee, freesound"),
    ({"caption_source": "gpt"}, "unknown caption source 'gpt'; expected one of metadata, captioner_a, captioner_b"),
])
def test_bad_values_say_what_is_wrong_and_what_is_allowed(fields, message):
    with pytest.raises(ValueError, match=message):
        Condition(**fields)
    with pytest.raises(ValueError, match=message):
        Condition().replace(**fields)
    with pytest.raises(ValueError, match=message):
        Condition.from_dict(fields)


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown condition field.*weekday; the fields are month, hour"):
        Condition.from_dict({"month": 5, "weekday": 3})
    assert Condition.from_dict({}) == Condition() and Condition.from_dict({"hour": 3}) == Condition(hour=3)


@pytest.mark.parametrize("text, want", [
    ("month=5,hour=20,audio=inaturalist,caption=metadata", Condition(5, 20, "inaturalist", "metadata")),
    ("month=5, hour=20, audio=iNaturalist", Condition(5, 20, "inaturalist")),
    ("MONTH=5,Audio_Source=aporee,caption_source=captioner_b", Condition(5, None, "aporee", "captioner_b")),
    (" hour = 0 ,, ", Condition(hour=0)),
    ("audio=,caption=metadata", Condition(caption_source="metadata")),
    ("month=3,month=4", Condition(month=4)),
    ("", Condition()),
    ("none", Condition()),
    (" None ", Condition()),
])
def test_parse_accepts_every_form(text, want):
    assert Condition.parse(text) == want


@pytest.mark.parametrize("text, message", [
    ("month=13", "month 13 is out of range: month must be in 1..12"),
    ("hour=24", "hour 24 is out of range"),
    ("hour=-1", "hour -1 is out of range"),
    ("audio=spotify", "unknown audio source 'spotify'"),
    ("caption=gpt", "unknown caption source 'gpt'"),
    ("weekday=3", r"bad condition part 'weekday=3' in 'weekday=3'; use month=1..12, hour=0..23, audio=yfcc\|"),
    ("month", "bad condition part 'month'"),
    ("month=may", "month must be an integer in 1..12, got 'may' in the condition 'month=may'"),
    ("hour=", "hour must be an integer in 0..23, got ''"),
    ("month:5", "bad condition part 'month:5'"),
])
def test_parse_refuses_bad_text(text, message):
    with pytest.raises(ValueError, match=message):
        Condition.parse(text)


@pytest.mark.parametrize("condition", [
    Condition(), Condition(month=1), Condition(hour=0), Condition(12, 23, "freesound", "captioner_a"),
    Condition(audio_source="yfcc"), Condition(caption_source="metadata"), Condition(5, None, None, "captioner_b"),
])
def test_round_trips(condition):
    text = str(condition)
    assert Condition.parse(text) == condition
    assert str(Condition.parse(text)) == text
    assert Condition.from_dict(condition.as_dict()) == condition


def test_text_and_label():
    c = Condition(5, 20, "inaturalist")
    assert str(c) == "month=5,hour=20,audio=inaturalist"
    assert str(Condition()) == "none"
    assert c.label() == "May · 20:00 · inaturalist · caption source left out"
    assert Condition(hour=6).label() == "month left out · 06:00 · audio source left out · caption source left out"
    assert c.replace(hour=None) == Condition(5, None, "inaturalist")


def test_the_metadata_modules_load_without_torch():
    import subprocess
    import sys

    code = ("import sys; from psm_model.condition import Condition; import psm_model.metadata; "
            "Condition.parse('month=5'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
