"""The synthetic world: geography, land cover, imagery, sounds, the soundscape law and the dataset builder."""

from psm_model.world.build import BuildConfig, build_world
from psm_model.world.captions import make_caption
from psm_model.world.imagery import IMAGERY, ZOOM_MAX, ImageryKind
from psm_model.world.landcover import LANDCOVER_CLASSES, LandCoverField
from psm_model.world.law import law
from psm_model.world.oracle import oracle_scores, set_prob_matrix, true_match_ranks
from psm_model.world.sampler import K_PROBS, draw_set, set_probability
from psm_model.world.sounds import CLASS_QUERIES, SOUND_CLASSES, mix_clip, synthesize
from psm_model.world.split import SPLITS, assign_splits, cell_ids
from psm_model.world.world import World, WorldConfig

__all__ = [
    "CLASS_QUERIES",
    "IMAGERY",
    "K_PROBS",
    "LANDCOVER_CLASSES",
    "SOUND_CLASSES",
    "SPLITS",
    "ZOOM_MAX",
    "BuildConfig",
    "ImageryKind",
    "LandCoverField",
    "World",
    "WorldConfig",
    "assign_splits",
    "build_world",
    "cell_ids",
    "draw_set",
    "law",
    "make_caption",
    "mix_clip",
    "oracle_scores",
    "set_prob_matrix",
    "set_probability",
    "synthesize",
    "true_match_ranks",
]
