"""Typed architecture configs for the PSM model and the named presets tiny, demo and paper."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

LOSSES: tuple[str, ...] = ("pcmepp", "infonce")
TEXT_BACKBONES: tuple[str, ...] = ("clap", "minilm")


@dataclass
class ImageConfig:
    """The ViT image encoder with a GSD-aware position embedding (GSDPE).

    Attributes:
        image_size: Side of the square input tile in pixels (after the zoom transform).
        patch_size: Side of a ViT patch in pixels; must divide ``image_size``.
        width: Token width of the ViT.
        depth: Number of transformer blocks.
        heads: Attention heads per block; must divide ``width``.
        mlp_ratio: Hidden width of the block MLP relative to ``width``.
        reference_gsd: The reference GSD G (metres) of GSDPE: positions are scaled by gsd * zoom / G.
        default_gsd: GSD (metres per pixel) assumed when a caller gives none.
        mean: Per-channel mean used to normalise [0, 1] pixels.
        std: Per-channel standard deviation used to normalise [0, 1] pixels.
        pretrained: Path of a SatMAE/MAE ViT pretrain checkpoint to initialise from, or None.
    """

    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    reference_gsd: float = 1.0
    default_gsd: float = 0.6
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pretrained: str | None = None


@dataclass
class AudioConfig:
    """The CLAP HTSAT audio tower and its fusion mel front end.

    Attributes:
        sample_rate: Model sample rate in Hz; input audio is resampled to it.
        clip_seconds: CLAP ``max_length_s``: clips are repeat-padded or fusion-cropped to it.
        hop_length: Mel hop in samples.
        fft_window_size: STFT window in samples.
        num_mel_bins: Mel bins; must be 64 with fusion (CLAP's fusion resize assumes 64).
        frequency_max: Highest mel frequency in Hz; at most sample_rate / 2.
        spec_size: HTSAT square spectrogram "image" side.
        patch_embeds_hidden_size: HTSAT first-stage width.
        depths: Swin blocks per stage.
        num_attention_heads: Attention heads per stage.
        window_size: Swin window size.
        enable_fusion: CLAP feature fusion (3 local crops + the squeezed whole clip).
        hf_config: A full ``ClapAudioConfig`` dict; when set it wins over the fields above.
        pretrained: Local directory or Hugging Face cache id of a CLAP checkpoint, or None.
    """

    sample_rate: int = 48_000
    clip_seconds: int = 10
    hop_length: int = 480
    fft_window_size: int = 1024
    num_mel_bins: int = 64
    frequency_max: float = 14_000.0
    spec_size: int = 256
    patch_embeds_hidden_size: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_attention_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    enable_fusion: bool = True
    hf_config: dict[str, Any] | None = None
    pretrained: str | None = None


@dataclass
class TextConfig:
    """The text tower: CLAP's RoBERTa text model or the pretrained MiniLM sentence encoder.

    Attributes:
        backbone: ``"clap"`` (ClapTextModelWithProjection) or ``"minilm"`` (all-MiniLM-L6-v2,
            mean pooling, then a projection).
        max_length: Token limit (CLAP uses 128).
        hidden_size: CLAP text width (ignored for minilm).
        num_layers: CLAP text depth.
        heads: CLAP text attention heads.
        intermediate_size: CLAP text MLP width.
        vocab_size: Size of the BPE vocabulary trained for a from-scratch CLAP text tower.
        freeze_backbone: Keep the backbone's weights fixed and train only the projection and heads.
        hf_config: A full backbone config dict; when set it wins over the fields above.
        pretrained: Local directory or Hugging Face cache id of a CLAP checkpoint (clap backbone), or None.
    """

    backbone: str = "clap"
    max_length: int = 128
    hidden_size: int = 768
    num_layers: int = 12
    heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 8192
    freeze_backbone: bool = False
    hf_config: dict[str, Any] | None = None
    pretrained: str | None = None


@dataclass
class FusionConfig:
    """The metadata fusion transformer.

    Attributes:
        layers: Transformer encoder layers (3 in the paper).
        heads: Attention heads; must divide the embedding size.
        mlp_ratio: Feed-forward width relative to the embedding size.
        meta_hidden: Hidden width of the lat/lon, month and hour MLPs (64 in the paper).
        dropout: Dropout inside the transformer layers.
        metadata_dropout: Probability of masking each metadata type per sample in training.
    """

    layers: int = 3
    heads: int = 8
    mlp_ratio: float = 4.0
    meta_hidden: int = 64
    dropout: float = 0.1
    metadata_dropout: float = 0.5


@dataclass
class LossConfig:
    """The tri-modal objective.

    Attributes:
        init_a: Initial PCME++ scale a.
        init_b: Initial PCME++ shift b.
        alpha: Pseudo-positive weight once its schedule has reached it.
        alpha_start: Share of training (0..1) before which alpha is 0.
        alpha_ramp: Share of training over which alpha then rises linearly from 0 to ``alpha``
            (0: a step). The pseudo-positive term counts every pair at least as close as the true
            match as a positive; on towers trained from scratch half of each row qualifies at
            first, so the term must wait until the true matches rank well.
        beta: VIB weight.
        init_logit_scale: Initial InfoNCE logit scale (1 / temperature).
        max_logit_scale: Cap on the InfoNCE logit scale.
        weights: Weights of the (image-audio, image-text, audio-text) pair losses; the published
            code uses (0.5, 0.25, 0.25), the paper writes a plain sum (1, 1, 1).
    """

    init_a: float = 5.0
    init_b: float = 5.0
    alpha: float = 0.1
    alpha_start: float = 0.0
    alpha_ramp: float = 0.0
    beta: float = 1e-4
    init_logit_scale: float = 1.0 / 0.07
    max_logit_scale: float = 100.0
    weights: tuple[float, float, float] = (0.5, 0.25, 0.25)


@dataclass
class ModelConfig:
    """The whole PSM model.

    Attributes:
        preset: Name of the preset this config started from.
        embed_dim: Size d of the shared embedding space (and of the fusion tokens).
        head_hidden: Hidden width of the mean / log-variance heads (None: embed_dim).
        logvar_bias_init: Initial bias of the direct (output) layer of the log-variance heads.
        loss: ``"pcmepp"`` or ``"infonce"``.
        image: Image encoder config.
        audio: Audio tower config.
        text: Text tower config.
        fusion: Metadata fusion config.
        objective: Loss config.
    """

    preset: str = "paper"
    embed_dim: int = 512
    head_hidden: int | None = None
    logvar_bias_init: float = -4.0
    loss: str = "pcmepp"
    image: ImageConfig = field(default_factory=ImageConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    objective: LossConfig = field(default_factory=LossConfig)

    def validate(self) -> ModelConfig:
        """Check the config for consistency.

        Returns:
            The config itself.

        Raises:
            ValueError: If a field is out of range or two fields disagree.
        """
        _validate(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain JSON-compatible data."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        """Return the config as canonical JSON (sorted keys), the form hashed into model versions."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build a config from :meth:`to_dict` output.

        Args:
            data: Nested dict of config fields.

        Returns:
            The validated config.

        Raises:
            ValueError: On unknown fields or invalid values.
        """
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a dict, got {type(data).__name__}")
        return _from_dict(cls, data, "config").validate()


_SUBCONFIGS: dict[str, type] = {
    "image": ImageConfig,
    "audio": AudioConfig,
    "text": TextConfig,
    "fusion": FusionConfig,
    "objective": LossConfig,
}


def _coerce(value: Any, current: Any) -> Any:
    if isinstance(current, tuple) and isinstance(value, list | tuple):
        return tuple(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {where} field(s) {unknown}; valid fields: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for key, value in data.items():
        if key in _SUBCONFIGS and cls is ModelConfig:
            if isinstance(value, dict):
                value = _from_dict(_SUBCONFIGS[key], value, f"{where}.{key}")
            elif not isinstance(value, _SUBCONFIGS[key]):
                raise ValueError(f"{where}.{key} must be a dict or {_SUBCONFIGS[key].__name__}")
        kwargs[key] = _coerce(value, getattr(defaults, key))
    return cls(**kwargs)


def _tiny() -> ModelConfig:
    return ModelConfig(
        preset="tiny",
        embed_dim=32,
        image=ImageConfig(
            image_size=32, patch_size=8, width=32, depth=2, heads=2, default_gsd=10.0
        ),
        audio=AudioConfig(
            sample_rate=16_000,
            clip_seconds=1,
            hop_length=256,
            fft_window_size=512,
            frequency_max=8_000.0,
            spec_size=64,
            patch_embeds_hidden_size=16,
            depths=(1, 1, 1),
            num_attention_heads=(1, 2, 2),
            window_size=4,
        ),
        text=TextConfig(
            backbone="clap",
            max_length=32,
            hidden_size=32,
            num_layers=1,
            heads=2,
            intermediate_size=64,
            vocab_size=400,
        ),
        fusion=FusionConfig(layers=2, heads=2, meta_hidden=16, dropout=0.0),
        objective=_from_scratch_objective(),
    )


def _from_scratch_objective() -> LossConfig:
    # Towers trained from scratch: the pseudo-positive term waits until the true matches rank well
    # (on at half of training, full at three quarters; docs/model.md).
    return LossConfig(alpha_start=0.5, alpha_ramp=0.25)


def _demo() -> ModelConfig:
    return ModelConfig(
        preset="demo",
        embed_dim=128,
        image=ImageConfig(
            image_size=48, patch_size=8, width=128, depth=4, heads=4, default_gsd=10.0
        ),
        audio=AudioConfig(
            sample_rate=16_000,
            clip_seconds=4,
            hop_length=1024,
            fft_window_size=2048,
            frequency_max=8_000.0,
            spec_size=64,
            patch_embeds_hidden_size=32,
            depths=(1, 1, 2),
            num_attention_heads=(2, 4, 8),
            window_size=4,
        ),
        text=TextConfig(backbone="minilm", max_length=32, freeze_backbone=True),
        fusion=FusionConfig(layers=3, heads=4, meta_hidden=64, dropout=0.0),
        objective=_from_scratch_objective(),
    )


def _paper() -> ModelConfig:
    # Pretrained towers: matched pairs are close from the start, so alpha ramps in over a tenth.
    return ModelConfig(preset="paper", objective=LossConfig(alpha_ramp=0.1))


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
"""Preset name -> function returning a fresh :class:`ModelConfig`."""


def preset_config(name: str, **overrides: Any) -> ModelConfig:
    """Return the config of a preset with keyword overrides applied.

    Overrides may name top-level fields (``embed_dim=32``, ``loss="infonce"``), give a dict for a
    section (``image={"image_size": 64}``), or a dotted / double-underscore path
    (``**{"image.depth": 2}``, ``audio__sample_rate=32000``). Overrides win over the preset.

    Args:
        name: One of ``tiny``, ``demo``, ``paper``.
        **overrides: Field overrides.

    Returns:
        The validated config.

    Raises:
        ValueError: For an unknown preset or field, or an invalid resulting config.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[name]()
    return apply_overrides(config, **overrides)


def apply_overrides(config: ModelConfig, **overrides: Any) -> ModelConfig:
    """Return a copy of ``config`` with overrides applied (see :func:`preset_config`).

    Args:
        config: The base config.
        **overrides: Field overrides.

    Returns:
        The validated new config.

    Raises:
        ValueError: For an unknown field or an invalid resulting config.
    """
    config = copy.deepcopy(config)
    for raw_key, value in overrides.items():
        parts = raw_key.replace("__", ".").split(".")
        if len(parts) == 1 and parts[0] in _SUBCONFIGS and isinstance(value, dict):
            for sub_key, sub_value in value.items():
                _set(config, [parts[0], sub_key], sub_value, raw_key)
        else:
            _set(config, parts, value, raw_key)
    return config.validate()


def _set(config: ModelConfig, parts: list[str], value: Any, raw_key: str) -> None:
    target: Any = config
    for part in parts[:-1]:
        if part not in _SUBCONFIGS or target is not config:
            raise ValueError(
                f"unknown config override {raw_key!r}; sections: {sorted(_SUBCONFIGS)}"
            )
        target = getattr(config, part)
    names = {f.name for f in dataclasses.fields(target)}
    if parts[-1] not in names:
        raise ValueError(f"unknown config override {raw_key!r}; valid fields here: {sorted(names)}")
    setattr(target, parts[-1], _coerce(value, getattr(target, parts[-1])))


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _validate(c: ModelConfig) -> None:
    _positive_int(c.embed_dim, "embed_dim")
    if c.head_hidden is not None:
        _positive_int(c.head_hidden, "head_hidden")
    if c.loss not in LOSSES:
        raise ValueError(f"unknown loss {c.loss!r}; choose one of {', '.join(LOSSES)}")
    im = c.image
    for name in ("image_size", "patch_size", "width", "depth", "heads"):
        _positive_int(getattr(im, name), f"image.{name}")
    if im.image_size % im.patch_size:
        raise ValueError(
            f"image.patch_size {im.patch_size} must divide image.image_size {im.image_size}"
        )
    if im.width % im.heads:
        raise ValueError(f"image.heads {im.heads} must divide image.width {im.width}")
    if im.width % 4:
        raise ValueError(
            f"image.width must be a multiple of 4 for the 2-D sin-cos GSDPE, got {im.width}"
        )
    if not im.reference_gsd > 0 or not im.default_gsd > 0:
        raise ValueError(
            "image.reference_gsd and image.default_gsd must be positive (metres per pixel)"
        )
    if len(im.mean) != 3 or len(im.std) != 3 or min(im.std) <= 0:
        raise ValueError("image.mean and image.std need 3 channels and a positive std")
    au = c.audio
    for name in (
        "sample_rate",
        "clip_seconds",
        "hop_length",
        "fft_window_size",
        "num_mel_bins",
        "spec_size",
    ):
        _positive_int(getattr(au, name), f"audio.{name}")
    if au.frequency_max > au.sample_rate / 2:
        raise ValueError(
            f"audio.frequency_max {au.frequency_max} exceeds the Nyquist frequency of {au.sample_rate} Hz"
        )
    if au.enable_fusion and au.num_mel_bins != 64:
        raise ValueError(
            "audio.num_mel_bins must be 64 when audio.enable_fusion is on (CLAP fusion assumes it)"
        )
    if au.hf_config is None:
        if len(au.depths) != len(au.num_attention_heads):
            raise ValueError("audio.depths and audio.num_attention_heads need one entry per stage")
        frames = au.clip_seconds * au.sample_rate // au.hop_length + 1
        ratio = au.spec_size // au.num_mel_bins
        if ratio < 1 or frames > au.spec_size * ratio:
            raise ValueError(
                f"a {au.clip_seconds} s clip gives {frames} mel frames, more than HTSAT's "
                f"spec_size * (spec_size // num_mel_bins) = {au.spec_size * max(ratio, 0)}; raise "
                "audio.hop_length or audio.spec_size, or shorten audio.clip_seconds"
            )
        last = au.spec_size // 2 ** (len(au.depths) - 1) // 4
        if last < ratio:
            raise ValueError(
                "audio.spec_size is too small for that many HTSAT stages; drop a stage"
            )
    tx = c.text
    if tx.backbone not in TEXT_BACKBONES:
        raise ValueError(
            f"unknown text.backbone {tx.backbone!r}; choose one of {', '.join(TEXT_BACKBONES)}"
        )
    _positive_int(tx.max_length, "text.max_length")
    if tx.backbone == "clap" and tx.hf_config is None and tx.hidden_size % tx.heads:
        raise ValueError(f"text.heads {tx.heads} must divide text.hidden_size {tx.hidden_size}")
    fu = c.fusion
    _positive_int(fu.layers, "fusion.layers")
    _positive_int(fu.heads, "fusion.heads")
    if c.embed_dim % fu.heads:
        raise ValueError(f"fusion.heads {fu.heads} must divide embed_dim {c.embed_dim}")
    if not 0.0 <= fu.metadata_dropout < 1.0:
        raise ValueError(f"fusion.metadata_dropout must be in [0, 1), got {fu.metadata_dropout}")
    ob = c.objective
    if not (0.0 <= ob.alpha_start <= 1.0 and 0.0 <= ob.alpha_ramp <= 1.0):
        raise ValueError(
            "objective.alpha_start and objective.alpha_ramp are shares of training in [0, 1], "
            f"got {ob.alpha_start}, {ob.alpha_ramp}"
        )
    if len(ob.weights) != 3 or min(ob.weights) < 0 or sum(ob.weights) <= 0:
        raise ValueError(
            f"objective.weights needs 3 non-negative weights with a positive sum, got {ob.weights}"
        )
    if ob.init_logit_scale <= 0 or ob.max_logit_scale < ob.init_logit_scale:
        raise ValueError(
            "objective.init_logit_scale must be positive and at most objective.max_logit_scale"
        )
