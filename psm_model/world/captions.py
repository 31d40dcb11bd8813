"""Captions built from a sample's sound classes and context, in three caption-source styles."""

from __future__ import annotations

import numpy as np

from psm_model.metadata import AUDIO_SOURCES, CAPTION_SOURCES
from psm_model.world.landcover import LANDCOVER_CLASSES
from psm_model.world.sounds import SOUND_CLASSES

# Per class: noun phrases (tags and subjects) and verb phrases (subject + action).
_NOUNS: dict[str, tuple[str, ...]] = {
    "birdsong": ("birdsong", "birds", "bird calls", "songbirds", "chirping birds"),
    "insects": ("insects", "crickets", "cicadas", "buzzing insects", "chirping crickets"),
    "frogs": ("frogs", "toads", "croaking frogs", "a frog chorus"),
    "rooster": ("a rooster", "a cockerel", "a rooster crowing", "chickens"),
    "sheep": ("sheep", "a flock of sheep", "bleating sheep", "lambs"),
    "dog": ("a dog", "dogs barking", "a barking dog", "a puppy"),
    "car_horn": ("a car horn", "honking", "car horns", "a horn"),
    "traffic": ("traffic", "cars passing", "road noise", "vehicles", "a busy road"),
    "siren": ("a siren", "an ambulance siren", "a police siren", "an emergency vehicle"),
    "crowd": ("a crowd", "people talking", "chatter", "voices", "speech babble"),
    "church_bells": ("church bells", "bells", "a bell tower", "chiming bells"),
    "ocean_waves": ("ocean waves", "surf", "waves", "the sea", "breaking waves"),
    "rain": ("rain", "rainfall", "raindrops", "a rain shower"),
    "wind": ("wind", "gusts of wind", "a strong breeze", "howling wind"),
    "construction": ("construction", "hammering", "a drill", "building work", "machinery"),
}
_VERBS: dict[str, tuple[str, ...]] = {
    "birdsong": ("birds chirp", "birds sing", "songbirds call", "a bird trills"),
    "insects": ("insects buzz", "crickets chirp", "cicadas drone", "insects hum"),
    "frogs": ("frogs croak", "toads call", "a chorus of frogs croaks"),
    "rooster": ("a rooster crows", "a cockerel crows loudly", "a rooster calls"),
    "sheep": ("sheep bleat", "a sheep baas", "lambs bleat"),
    "dog": ("a dog barks", "dogs bark", "a dog yaps"),
    "car_horn": ("a car horn honks", "a driver honks", "horns blare"),
    "traffic": ("traffic rumbles", "cars drive past", "vehicles pass by", "traffic flows"),
    "siren": ("a siren wails", "an ambulance passes with its siren on", "a police siren sounds"),
    "crowd": ("people talk", "a crowd chatters", "voices murmur", "people chat"),
    "church_bells": ("church bells ring", "bells chime", "a church bell tolls"),
    "ocean_waves": ("waves crash", "the surf rolls in", "waves break on the shore"),
    "rain": ("rain falls", "rain patters", "raindrops fall steadily"),
    "wind": ("the wind blows", "wind gusts", "a breeze rustles"),
    "construction": ("workers hammer", "a drill whirs", "construction machinery runs"),
}
_PLACES: dict[str, tuple[str, ...]] = {
    "ocean": ("at sea", "on the ocean", "offshore"),
    "coast": ("on a beach", "by the coast", "at the seaside"),
    "water": ("by a lake", "near a pond", "at the water's edge"),
    "urban": ("in a city", "downtown", "on a city street", "in the city centre"),
    "suburban": ("in a neighbourhood", "in the suburbs", "in a residential area"),
    "cropland": ("on a farm", "in the fields", "in farmland", "in the countryside"),
    "forest": ("in a forest", "in the woods", "among the trees"),
    "grassland": ("in a meadow", "on the grassland", "in open fields"),
    "desert": ("in the desert", "among sand dunes", "in a dry landscape"),
    "wetland": ("in a marsh", "in a wetland", "near a swamp"),
    "tundra": ("on the tundra", "in a cold open landscape"),
    "snow": ("on a snowfield", "in the snow", "on the ice"),
}
_SOURCE_TAGS: dict[str, tuple[str, ...]] = {
    "yfcc": ("video", "vlog", "travel video"),
    "inaturalist": ("nature observation", "wildlife recording", "species observation"),
    "aporee": ("field recording", "soundscape", "ambience"),
    "freesound": ("sound effect", "recording", "sample"),
}
_WHEN = {
    "dawn": "at dawn",
    "morning": "in the morning",
    "afternoon": "in the afternoon",
    "evening": "in the evening",
    "night": "at night",
}
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)

assert set(_NOUNS) == set(SOUND_CLASSES) == set(_VERBS)
assert set(_PLACES) == set(LANDCOVER_CLASSES)


def time_of_day(hour: int) -> str:
    """A word for the local hour."""
    if 4 <= hour < 7:
        return "dawn"
    if 7 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 21:
        return "evening"
    return "night"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def make_caption(
    classes: tuple[str, ...],
    landcover: str,
    month: int,
    hour: int,
    audio_source: str,
    caption_source: str,
    rng: np.random.Generator,
    context: bool = False,
    named: dict[str, bool] | None = None,
) -> str:
    """Caption for a sample, in the style of its caption source.

    ``metadata`` gives terse tags ("rooster, farm"); ``captioner_a`` describes the main sound with
    the others in the background; ``captioner_b`` names the sounds as nouns with the place.

    Every caption names all of the sample's sound classes; some also name the place (its
    dominant land cover, which the image shows). With ``context`` they may also name the month,
    the time of day and a source tag ("field recording"): the metadata the image side is given
    too, so a text query with context leaks the true match's metadata. The random draws are
    the same either way, so the two kinds of world differ only in these words.

    Args:
        classes: The sample's sound classes (all are named, in random order).
        landcover: The dominant land cover of the place.
        month: Month 1..12.
        hour: Local hour 0..23.
        audio_source: The clip's audio source (its tag is named only with ``context``).
        caption_source: The caption style.
        rng: The sample's generator.
        context: Also name the month, time of day and source tag.
        named: A dict to fill with what the caption names: ``landcover``, ``month``,
            ``time_of_day``, ``audio_source`` (each True or False).
    """
    if caption_source not in CAPTION_SOURCES:
        raise ValueError(
            f"unknown caption source {caption_source!r}; expected one of {', '.join(CAPTION_SOURCES)}"
        )
    if audio_source not in AUDIO_SOURCES:
        raise ValueError(
            f"unknown audio source {audio_source!r}; expected one of {', '.join(AUDIO_SOURCES)}"
        )
    if landcover not in _PLACES:
        raise ValueError(
            f"unknown land cover {landcover!r}; expected one of {', '.join(LANDCOVER_CLASSES)}"
        )
    said = {"landcover": False, "month": False, "time_of_day": False, "audio_source": False}
    if named is not None:
        named.clear()
        named.update(said)
        said = named
    order = list(classes)
    rng.shuffle(order)
    tod = time_of_day(int(hour))
    place = _pick(rng, _PLACES[landcover])
    if caption_source == "metadata":
        tag = _pick(rng, _SOURCE_TAGS[audio_source])
        tags = [tag] if context else []
        said["audio_source"] = context
        tags += [_pick(rng, _NOUNS[c]).removeprefix("a ").removeprefix("an ") for c in order]
        extra = {
            "landcover": place.split(" ", 1)[-1].removeprefix("a ").removeprefix("the "),
            "time_of_day": tod,
            "month": _MONTHS[int(month) - 1],
        }
        for what, word in extra.items():
            if rng.random() < 0.7 and (context or what == "landcover"):
                tags.append(word)
                said[what] = True
        return ", ".join(tags)
    if caption_source == "captioner_a":
        main = _pick(rng, _VERBS[order[0]])
        s = main[0].upper() + main[1:]
        if len(order) > 1:
            rest = _join([_pick(rng, _VERBS[c]) for c in order[1:]])
            s += _pick(rng, (" while ", " as ", ", and ")) + rest
            s += _pick(rng, (" in the background", " nearby", " in the distance", ""))
        if rng.random() < 0.5:
            s += " " + place
            said["landcover"] = True
        return s + "."
    nouns = _join([_pick(rng, _NOUNS[c]) for c in order])
    lead = _pick(
        rng,
        (
            "The sound of {n} {p}",
            "{N} can be heard {p}",
            "Recording of {n} {p}",
            "Ambient audio with {n} {p}",
        ),
    )
    s = lead.format(n=nouns, N=nouns[0].upper() + nouns[1:], p=place)
    said["landcover"] = True
    if rng.random() < 0.6 and context:
        s += " " + _WHEN[tod]
        said["time_of_day"] = True
    return s + "."
