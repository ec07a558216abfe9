"""The sample contract every dataset of the package follows, and the cache of token ids."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DataValueError
from .images import image_dtype

__all__ = ["MultimodalDataset", "Sample", "TokenCache", "cap_text", "context_length"]

#: One sample: ``image`` [3, H, W] float (uint8 pixels when the transform defers its
#: normalisation to the device: :mod:`~cmpt_lightning.datasets.images`), ``text`` [L] int64
#: token ids, ``label`` (int64 scalar for multiclass/binary, float [C] for multilabel),
#: ``image_present`` / ``text_present`` (bool scalars: the data has this modality), ``id``
#: (str, stable across runs and machines) and ``index`` (int64 scalar, position in this
#: dataset). An absent modality is all zeros.
Sample = dict[str, Any]

#: Non-space characters handed to the tokenizer per token of its context: the text is cut
#: after ``64 x context_length`` of them (4,928 for CLIP's 77 tokens).
CHARS_PER_TOKEN = 64
#: The longest run of non-space characters handed to the tokenizer, per token of its context:
#: a longer run is cut after ``16 x context_length`` characters (1,232 for 77 tokens).
WORD_CHARS_PER_TOKEN = 16
#: The context length assumed for a tokenizer that does not say (CLIP's).
DEFAULT_CONTEXT_LENGTH = 77

_RUN = re.compile(r"\S+")


def context_length(tokenizer: Callable[[list[str]], torch.Tensor]) -> int:
    """The tokens a tokenizer keeps per text: its ``context_length`` (open_clip's), else 77."""
    length = getattr(tokenizer, "context_length", None)
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        return length
    return DEFAULT_CONTEXT_LENGTH


def cap_text(text: str, context: int = DEFAULT_CONTEXT_LENGTH) -> str:
    """``text`` cut to what a tokenizer keeping ``context`` tokens can use, and no more.

    The tokenizer keeps only the first ``context`` tokens, but it reads the whole text first,
    and a long run without spaces costs it far more than its length (open_clip's BPE on one
    random 50,000-letter word: minutes). So the text is cut after :data:`CHARS_PER_TOKEN` x
    ``context`` non-space characters, and every run of non-space characters after
    :data:`WORD_CHARS_PER_TOKEN` x ``context`` characters; whitespace is kept as it is. A CLIP
    token covers about 4 characters of English and at most 32, so the ``context`` tokens kept
    are those of the whole text, unless a cut run of over 16 x ``context`` characters averages
    more than 16 characters per token (no real word does).

    Args:
        text: the text.
        context: the tokenizer's context length (see :func:`context_length`).

    Returns:
        ``text`` itself if it is short enough, else its cut copy.
    """
    word, total = WORD_CHARS_PER_TOKEN * context, CHARS_PER_TOKEN * context
    if len(text) <= word:
        return text  # no run can be too long, and the whole is shorter than ``total``
    pieces: list[str] = []
    kept = end = 0
    for match in _RUN.finditer(text):
        take = min(match.end() - match.start(), word, total - kept)
        pieces += (text[end : match.start()], text[match.start() : match.start() + take])
        kept, end = kept + take, match.end()
        if kept >= total:
            return "".join(pieces)
    pieces.append(text[end:])
    return "".join(pieces)


class TokenCache:
    """Token ids of texts, tokenized in batches once and then looked up by the text itself.

    Keyed by the text, not by a sample's position, so a lookup is right whatever the dataset
    it came from: a copy that selects other samples, a DataLoader worker that received the
    cache built before it started, repeated texts. Ids are stored as int32 in one numpy block
    [n, L] per tokenizer call (CLIP vocabularies are far below 2**31): a few arrays pickle to
    spawned workers cheaply, where one tensor per text would cost a shared-memory handle each.

    The tokenizer must pad every text to the same length, as open_clip's tokenizers do. It is
    handed each text cut by :func:`cap_text` to what its context can hold, so that a huge text
    costs no more than a long one; the cache is keyed by the text as given.

    Args:
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        batch_size: texts per tokenizer call when adding many.
    """

    def __init__(
        self, tokenizer: Callable[[list[str]], torch.Tensor], batch_size: int = 1024
    ) -> None:
        if batch_size < 1:
            msg = f"batch_size must be >= 1, got {batch_size!r}"
            raise DataValueError(msg)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.context = context_length(tokenizer)
        self._where: dict[str, tuple[int, int]] = {}  # text -> (block, row)
        self._blocks: list[np.ndarray] = []  # each int32 [n, L]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, text: object) -> bool:
        return text in self._where

    def add(self, texts: Iterable[str]) -> int:
        """Tokenize the texts not yet cached, ``batch_size`` per tokenizer call.

        Args:
            texts: texts, repeats allowed.

        Returns:
            The number of texts added.
        """
        new = [text for text in dict.fromkeys(texts) if text not in self._where]
        for start in range(0, len(new), self.batch_size):
            chunk = new[start : start + self.batch_size]
            ids = self.tokenizer([cap_text(text, self.context) for text in chunk])  # [n, L]
            block = len(self._blocks)
            self._blocks.append(np.ascontiguousarray(ids.numpy(), dtype=np.int32))
            self._where.update((text, (block, row)) for row, text in enumerate(chunk))
        return len(new)

    def __getitem__(self, text: str) -> torch.Tensor:
        """The token ids [L] int64 of ``text`` (a new tensor; tokenized alone if not cached)."""
        if text not in self._where:
            self.add([text])
        block, row = self._where[text]
        return torch.from_numpy(self._blocks[block][row]).long()  # a copy: the cache stays intact


class MultimodalDataset(Dataset[Sample], ABC):
    """An image-text classification dataset that returns :data:`Sample` dicts.

    Subclasses own the files and parsing: they set :attr:`ids` and implement
    :meth:`load_image`, :meth:`load_text` and :meth:`target`. The transform and the tokenizer
    are the data module's, passed in.

    Texts are tokenized once per process, not once per sample and epoch: the first sample
    asked for (or :meth:`pretokenize`) tokenizes every text of the dataset in batches into a
    :class:`TokenCache`; data modules call :meth:`pretokenize` before their DataLoader starts
    its workers, so the workers start with the cache. Set :attr:`cache_tokens` to False to
    tokenize each sample on every access instead.

    Args:
        image_transform: PIL image -> float tensor [3, H, W] (the open_clip preprocessing).
        tokenizer: list of strings -> int tensor [B, L] (the open_clip tokenizer).
        image_size: (H, W) of the transform's output, for the zeros of an absent image.
    """

    ids: Sequence[str]
    #: Cache the token ids of the texts (see :class:`TokenCache`).
    cache_tokens: bool = True

    def __init__(
        self,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        image_size: tuple[int, int],
    ) -> None:
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.image_size = image_size
        self._token_cache: TokenCache | None = None
        self._pretokenized = False

    @abstractmethod
    def load_image(self, index: int) -> Image.Image | None:
        """The RGB image of sample ``index``, or None if the sample has none."""

    @abstractmethod
    def load_text(self, index: int) -> str | None:
        """The text of sample ``index``, or None if the sample has none."""

    @abstractmethod
    def target(self, index: int) -> torch.Tensor:
        """The label of sample ``index`` (int64 scalar, or float [C] for multilabel)."""

    def __len__(self) -> int:
        return len(self.ids)

    def _tokens(self) -> TokenCache:
        """This dataset's cache, new if there is none or the tokenizer was replaced."""
        cache = getattr(self, "_token_cache", None)
        if cache is None or cache.tokenizer is not self.tokenizer:
            cache = TokenCache(self.tokenizer)
            self._token_cache = cache
            self._pretokenized = False
        return cache

    def pretokenize(self) -> TokenCache | None:
        """Tokenize every text of the dataset now, in batches; a no-op once done.

        Returns:
            The cache, or None when :attr:`cache_tokens` is off.
        """
        if not self.cache_tokens:
            return None
        cache = self._tokens()
        if not getattr(self, "_pretokenized", False):
            texts = (self.load_text(i) for i in range(len(self)))
            cache.add(text for text in texts if text is not None)
            cache.add([""])  # the shape of an absent text's zeros
            self._pretokenized = True
        return cache

    def token_ids(self, text: str | None) -> torch.Tensor:
        """The token ids [L] int64 of ``text``; zeros for None (an absent text)."""
        cache = self.pretokenize()
        key = "" if text is None else text
        if cache is None:
            ids = self.tokenizer([cap_text(key, context_length(self.tokenizer))])[0].long()
        else:
            ids = cache[key]
        return torch.zeros_like(ids) if text is None else ids

    def __getitem__(self, index: int) -> Sample:
        image = self.load_image(index)
        text = self.load_text(index)
        if image is not None:
            rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert() copies
            pixels = self.image_transform(rgb)
        else:
            pixels = torch.zeros(3, *self.image_size, dtype=image_dtype(self.image_transform))
        return {
            "image": pixels,
            "text": self.token_ids(text),
            "label": self.target(index),
            "image_present": torch.tensor(image is not None),
            "text_present": torch.tensor(text is not None),
            "id": str(self.ids[index]),
            "index": torch.tensor(index, dtype=torch.long),
        }
