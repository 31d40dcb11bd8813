"""The PSM model: image encoder + metadata fusion, audio and text towers, Gaussian heads and the loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from psm_model.audio_io import check_sample_rate, check_waveform, resample
from psm_model.audio_text import AudioInputs, AudioTower, TextTower
from psm_model.config import ModelConfig
from psm_model.fusion import MetadataBatch, MetadataFusion
from psm_model.heads import GaussianHead
from psm_model.image_encoder import ImageEncoder
from psm_model.loss import TriModalLoss
from psm_model.tokenizer import TextTokenizer

Gaussian = tuple[torch.Tensor, torch.Tensor]


def _as_waveforms(waveforms: Any) -> list[np.ndarray]:
    if isinstance(waveforms, torch.Tensor):
        if waveforms.dim() == 1:
            waveforms = waveforms.unsqueeze(0)
        if waveforms.dim() != 2:
            raise ValueError(
                f"a waveform tensor must be (T,) or (B, T), got shape {tuple(waveforms.shape)}"
            )
        return [w.detach().cpu().float().numpy() for w in waveforms]
    if isinstance(waveforms, np.ndarray):
        if waveforms.ndim == 1:
            return [waveforms]
        if waveforms.ndim != 2:
            raise ValueError(
                f"a waveform array must be (T,) or (B, T), got shape {waveforms.shape}"
            )
        return list(waveforms)
    if isinstance(waveforms, Sequence) and len(waveforms) > 0:
        return [
            w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
            for w in waveforms
        ]
    raise ValueError("waveforms must be a non-empty list of 1-D arrays or a (B, T) tensor")


class PSMModel(nn.Module):
    """Probabilistic soundscape model: every modality becomes a diagonal Gaussian (mu, log sigma^2).

    Build it with :func:`psm_model.create_model`. Image features before fusion can be computed once
    per tile (:meth:`image_features`) and fused with any metadata later (:meth:`fuse_image`).
    With ``loss="infonce"`` (the GeoCLAP-style baseline) the embeddings are deterministic: the
    log-variance is the constant ``logvar_bias_init``, so ranking by CSD equals ranking by cosine.

    Args:
        config: The validated model config.
        tokenizer: Text tokenizer (required unless ``text_tower`` is given).
        audio_tower: A ready audio tower (pretrained CLAP), or None to build one from config.
        text_tower: A ready text tower, or None to build one from config.
    """

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: TextTokenizer | None = None,
        audio_tower: AudioTower | None = None,
        text_tower: TextTower | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        d, hidden, bias = config.embed_dim, config.head_hidden, config.logvar_bias_init
        det = config.loss == "infonce"  # InfoNCE embeddings are points: constant log-variance
        self.image_encoder = ImageEncoder(config.image, d)
        self.fusion = MetadataFusion(config.fusion, d)
        self.image_head = GaussianHead(d, d, hidden, bias, det)
        self.audio_tower = audio_tower if audio_tower is not None else AudioTower(config.audio, d)
        self.audio_head = GaussianHead(self.audio_tower.out_dim, d, hidden, bias, det)
        if text_tower is None:
            if tokenizer is None:
                raise ValueError(
                    "PSMModel needs a tokenizer or a text tower; use psm_model.create_model"
                )
            text_tower = TextTower(config.text, d, tokenizer)
        self.text_tower = text_tower
        self.text_head = GaussianHead(self.text_tower.out_dim, d, hidden, bias, det)
        ob = config.objective
        self.criterion = TriModalLoss(
            config.loss,
            ob.weights,
            init_a=ob.init_a,
            init_b=ob.init_b,
            alpha=ob.alpha,
            alpha_start=ob.alpha_start,
            alpha_ramp=ob.alpha_ramp,
            beta=ob.beta,
            init_logit_scale=ob.init_logit_scale,
            max_logit_scale=ob.max_logit_scale,
        )
        self.load_reports: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.parameters()).device

    @property
    def tokenizer(self) -> TextTokenizer:
        """The text tokenizer (saved in checkpoints)."""
        return self.text_tower.tokenizer

    # Image -------------------------------------------------------------------------------------
    def image_features(
        self,
        images: torch.Tensor,
        gsd: float | int | torch.Tensor | None = None,
        zoom: float | int | torch.Tensor = 1,
    ) -> torch.Tensor:
        """Pre-fusion image features, computed once per tile.

        Args:
            images: Float (B, 3, S, S) in [0, 1], S = ``config.image.image_size``, already zoom-transformed.
            gsd: Source GSD in metres per pixel (number or (B,)); None uses ``config.image.default_gsd``.
            zoom: Zoom level(s) (number or (B,)).

        Returns:
            (B, embed_dim) features.

        Raises:
            ValueError: On a bad image batch, gsd or zoom.
        """
        if isinstance(images, torch.Tensor):
            images = images.to(self.device)
        return self.image_encoder(
            images, self.config.image.default_gsd if gsd is None else gsd, zoom
        )

    def fuse_image(
        self, features: torch.Tensor, meta: MetadataBatch | None = None, *, raw_mean: bool = False
    ) -> Gaussian:
        """Fuse image features with metadata and apply the image heads.

        Args:
            features: (B, embed_dim) from :meth:`image_features`.
            meta: Metadata (B rows, or one row broadcast); None masks every type.
            raw_mean: Return the mean before L2 normalisation.

        Returns:
            (mu, logvar), each (B, embed_dim).
        """
        if isinstance(features, torch.Tensor):
            features = features.to(device=self.device, dtype=self.fusion.special.dtype)
        return self.image_head(self.fusion(features, meta), raw_mean=raw_mean)

    def encode_image(
        self,
        images: torch.Tensor,
        gsd: float | int | torch.Tensor | None = None,
        zoom: float | int | torch.Tensor = 1,
        meta: MetadataBatch | None = None,
        *,
        raw_mean: bool = False,
    ) -> Gaussian:
        """:meth:`image_features` then :meth:`fuse_image`."""
        return self.fuse_image(self.image_features(images, gsd, zoom), meta, raw_mean=raw_mean)

    # Audio -------------------------------------------------------------------------------------
    def audio_inputs(
        self, waveforms: Any, sample_rate: int, *, seed: int | None = 0
    ) -> AudioInputs:
        """Resample (soxr) to the model rate and compute CLAP fusion mel features.

        Args:
            waveforms: A list of 1-D float arrays, a (B, T) tensor / array, or one 1-D clip.
            sample_rate: Their sample rate in Hz.
            seed: Seed of CLAP's random crops of long clips (None: random, for training).

        Returns:
            Features that :meth:`encode_audio_inputs` takes (cacheable).

        Raises:
            ValueError: On a bad sample rate, or an empty, non-finite or non-1-D clip.
        """
        sample_rate = check_sample_rate(sample_rate)
        waves = [check_waveform(w, f"waveform {i}") for i, w in enumerate(_as_waveforms(waveforms))]
        target = self.audio_tower.sample_rate
        waves = [resample(w, sample_rate, target) for w in waves]
        return self.audio_tower.extract(waves, target, seed=seed)

    def encode_audio_inputs(self, inputs: AudioInputs, *, raw_mean: bool = False) -> Gaussian:
        """Encode precomputed audio features to (mu, logvar)."""
        if not isinstance(inputs, AudioInputs):
            raise ValueError(
                f"expected AudioInputs (from model.audio_inputs), got {type(inputs).__name__}"
            )
        return self.audio_head(self.audio_tower(inputs), raw_mean=raw_mean)

    def encode_audio(
        self, waveforms: Any, sample_rate: int, *, raw_mean: bool = False, seed: int | None = 0
    ) -> Gaussian:
        """Encode raw audio clips to (mu, logvar), each (B, embed_dim); see :meth:`audio_inputs`."""
        return self.encode_audio_inputs(
            self.audio_inputs(waveforms, sample_rate, seed=seed), raw_mean=raw_mean
        )

    # Text --------------------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts to ``input_ids`` / ``attention_mask``."""
        return self.text_tower.tokenize(texts)

    def encode_tokens(self, tokens: dict[str, torch.Tensor], *, raw_mean: bool = False) -> Gaussian:
        """Encode tokenised text to (mu, logvar)."""
        return self.text_head(self.text_tower(tokens), raw_mean=raw_mean)

    def encode_text(self, texts: str | Sequence[str], *, raw_mean: bool = False) -> Gaussian:
        """Encode captions / free-form queries to (mu, logvar), each (B, embed_dim).

        Raises:
            ValueError: On an empty list, a non-string or a blank string.
        """
        return self.text_head(self.text_tower.encode_texts(texts), raw_mean=raw_mean)

    # Loss --------------------------------------------------------------------------------------
    def match_params(self) -> tuple[float, float]:
        """(a, b) such that the match probability is sigmoid(-a * CSD + b).

        For PCME++ these are the learned scalars. For InfoNCE they are (s / 2, s) with s the
        image-audio logit scale: it ranks like the model's cosine logits but is not calibrated.
        """
        return self.criterion.match_params()

    def loss(
        self,
        image: Gaussian | None = None,
        audio: Gaussian | None = None,
        text: Gaussian | None = None,
    ) -> dict[str, torch.Tensor]:
        """The tri-modal loss over whichever of the three modalities are given."""
        return self.criterion(image=image, audio=audio, text=text)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Encode a training batch and return the tri-modal loss terms.

        Args:
            batch: Any of ``images`` (+ ``gsd``, ``zoom``, ``meta``), ``audio`` (AudioInputs) or
                ``waveforms`` + ``sample_rate``, and ``texts`` or ``tokens``.

        Returns:
            The loss dict of :class:`psm_model.loss.TriModalLoss`.

        Raises:
            ValueError: On unknown keys or fewer than two modalities.
        """
        known = {
            "images",
            "gsd",
            "zoom",
            "meta",
            "audio",
            "waveforms",
            "sample_rate",
            "texts",
            "tokens",
        }
        unknown = set(batch) - known
        if unknown:
            raise ValueError(
                f"unknown batch key(s) {sorted(unknown)}; expected some of {sorted(known)}"
            )
        image = audio = text = None
        if batch.get("images") is not None:
            image = self.encode_image(
                batch["images"], batch.get("gsd"), batch.get("zoom", 1), batch.get("meta")
            )
        if batch.get("audio") is not None:
            audio = self.encode_audio_inputs(batch["audio"])
        elif batch.get("waveforms") is not None:
            if batch.get("sample_rate") is None:
                raise ValueError("batch has waveforms but no sample_rate")
            audio = self.encode_audio(batch["waveforms"], batch["sample_rate"], seed=None)
        if batch.get("tokens") is not None:
            text = self.encode_tokens(batch["tokens"])
        elif batch.get("texts") is not None:
            text = self.encode_text(batch["texts"])
        return self.loss(image=image, audio=audio, text=text)
