"""Exception types of the PSM model library."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A model checkpoint is missing, truncated, corrupted, or does not match its config."""
