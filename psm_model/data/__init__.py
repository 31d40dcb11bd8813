"""Dataset readers: the synthetic world's shards and manifests of real data on disk."""

from psm_model.data.manifest import COLUMNS, ManifestDataset, SkipReport, crop_zoom, read_manifest
from psm_model.data.world_dataset import WorldDataset, read_world_index, read_world_meta

__all__ = [
    "COLUMNS",
    "ManifestDataset",
    "SkipReport",
    "WorldDataset",
    "crop_zoom",
    "read_manifest",
    "read_world_index",
    "read_world_meta",
]
