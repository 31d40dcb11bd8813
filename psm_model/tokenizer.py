"""Offline text tokenizers: a small byte-level BPE trained on caption templates, or one loaded from disk."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROBERTA_SPECIALS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
"""RoBERTa special tokens, ids 0..4, as CLAP's text tower expects (pad id 1)."""

_SOUNDS = (
    "insects",
    "crickets",
    "cicadas",
    "birds",
    "bird song",
    "rooster",
    "owl",
    "frogs",
    "sheep",
    "cows",
    "dogs barking",
    "a car horn",
    "traffic",
    "cars passing",
    "a motorcycle",
    "a train",
    "an airplane",
    "a helicopter",
    "sirens",
    "people talking",
    "children playing",
    "a crowd",
    "footsteps",
    "music",
    "church bells",
    "a market",
    "construction",
    "a jackhammer",
    "wind",
    "rain",
    "thunder",
    "waves",
    "the ocean",
    "a river",
    "a stream",
    "a waterfall",
    "leaves rustling",
    "a fountain",
    "engines",
    "a boat",
    "seagulls",
    "ducks",
    "geese",
    "a tractor",
    "machinery",
    "silence",
    "a city street",
    "a forest",
    "a farm",
    "a beach",
    "a park",
    "a village",
    "a desert",
    "mountains",
    "snow",
    "ice",
)
_TEMPLATES = (
    "the sound of {}",
    "{} can be heard",
    "a recording of {}",
    "{} in the distance",
    "loud {}",
    "quiet {} in the background",
    "{} at night",
    "{} in the morning",
    "{} near the road",
    "ambient noise with {}",
    "field recording of {} and wind",
    "{} and people talking",
)


def caption_corpus() -> list[str]:
    """A built-in corpus of caption-like sentences for training a from-scratch tokenizer offline."""
    return [t.format(s) for t, s in itertools.product(_TEMPLATES, _SOUNDS)]


class TextTokenizer:
    """Batch tokenizer around a ``tokenizers.Tokenizer`` with padding and truncation.

    Args:
        tokenizer: The backend tokenizer; its post-processor adds the special tokens.
        max_length: Truncation length in tokens, special tokens included.
        pad_token: The padding token, which must be in the vocabulary.
    """

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_token: str) -> None:
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer vocabulary")
        self.backend = tokenizer
        self.max_length = int(max_length)
        self.pad_token = pad_token
        self.pad_id = int(pad_id)
        self.backend.enable_truncation(self.max_length)
        self.backend.no_padding()

    @property
    def vocab_size(self) -> int:
        """Number of token ids."""
        return self.backend.get_vocab_size()

    def to_json(self) -> str:
        """Serialise the backend tokenizer (stored in checkpoints)."""
        return self.backend.to_str()

    @classmethod
    def from_json(cls, data: str, max_length: int, pad_token: str) -> TextTokenizer:
        """Rebuild a tokenizer from :meth:`to_json` output.

        Raises:
            ValueError: If ``data`` is not a tokenizer JSON.
        """
        try:
            backend = Tokenizer.from_str(data)
        except Exception as e:  # tokenizers raises its own Exception type
            raise ValueError(f"could not read the stored tokenizer: {e}") from e
        return cls(backend, max_length, pad_token)

    @classmethod
    def from_directory(cls, path: str | Path, max_length: int) -> TextTokenizer:
        """Load ``tokenizer.json`` (or any fast tokenizer) from a local directory, offline.

        Args:
            path: Directory with the tokenizer files.
            max_length: Truncation length.

        Returns:
            The tokenizer.

        Raises:
            ValueError: If no usable tokenizer is found there.
        """
        path = Path(path)
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            backend = hf.backend_tokenizer
            pad = hf.pad_token
        except Exception as e:
            raise ValueError(f"no usable tokenizer in {path}: {e}") from e
        if pad is None:
            raise ValueError(f"the tokenizer in {path} has no pad token")
        return cls(Tokenizer.from_str(backend.to_str()), max_length, pad)

    def __call__(self, texts: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts into padded ``input_ids`` and ``attention_mask`` (B, L) long tensors.

        Raises:
            ValueError: On an empty list, a non-string, or an empty / blank string.
        """
        texts = check_texts(texts)
        encodings = self.backend.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
            mask[i, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def check_texts(texts: str | Sequence[str]) -> list[str]:
    """Return texts as a list, or raise ValueError for an empty list, a non-string or a blank string."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"text {i} must be a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"text {i} is empty; give a caption such as 'sound of insects'")
    return list(texts)


def train_bpe(corpus: Iterable[str], vocab_size: int, max_length: int) -> TextTokenizer:
    """Train a RoBERTa-style byte-level BPE tokenizer offline (deterministic for a given corpus).

    Args:
        corpus: Training sentences.
        vocab_size: Target vocabulary size (the result can be smaller on a small corpus).
        max_length: Truncation length.

    Returns:
        A tokenizer with ``<s> ... </s>`` framing and pad id 1.
    """
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(ROBERTA_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer=trainer)
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), add_prefix_space=False
    )
    return TextTokenizer(backend, max_length, "<pad>")
