"""The sample contract's token cache: texts are tokenized once, in batches, whatever the access."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader

from cmpt_lightning.datasets.base import MultimodalDataset, TokenCache
from cmpt_lightning.datasets.synthetic import SyntheticDataset


class CountingTokenizer:
    """Wraps a tokenizer, counts every text it is given, and can be told to refuse calls."""

    def __init__(self, inner):
        self.inner = inner
        self.texts: Counter[str] = Counter()
        self.calls = 0
        self.frozen = False

    def __call__(self, texts):
        if self.frozen:
            msg = f"tokenizer called after the cache was built, with {texts}"
            raise RuntimeError(msg)
        self.calls += 1
        self.texts.update(texts)
        return self.inner(texts)


class Texts(MultimodalDataset):
    """Texts from a list (None: no text), a one-pixel image for every sample."""

    def __init__(self, texts, tokenizer, transform):
        super().__init__(transform, tokenizer, (32, 32))
        self.texts = list(texts)
        self.ids = [f"t{i}" for i in range(len(self.texts))]

    def load_image(self, index):
        return None

    def load_text(self, index):
        return self.texts[index]

    def target(self, index):
        return torch.tensor(0)


@pytest.fixture
def synthetic(preprocess, tokenizer):
    transform, _, size = preprocess
    counting = CountingTokenizer(tokenizer)
    data = SyntheticDataset(
        24, 4, seed=0, image_transform=transform, tokenizer=counting, image_size=size
    )
    return data, counting


def test_tokenizer_called_once_per_text_across_epochs(synthetic, tokenizer):
    data, counting = synthetic
    for _epoch in range(3):
        samples = [data[i] for i in range(len(data))]
    texts = [data.load_text(i) for i in range(len(data))]
    assert set(counting.texts) == {*texts, ""}  # "" gives the shape of an absent text
    assert max(counting.texts.values()) == 1
    assert counting.calls <= 2  # batched: all texts in one call, then the empty one
    for text, sample in zip(texts, samples, strict=True):
        assert sample["text"].dtype == torch.int64
        assert torch.equal(sample["text"], tokenizer([text])[0].long())


def test_workers_start_with_the_cache(synthetic, tokenizer):
    data, counting = synthetic
    data.pretokenize()
    counting.frozen = True  # a worker that tokenizes again raises, and so does the loader
    loader = DataLoader(data, batch_size=5, num_workers=2)
    got = torch.cat([batch["text"] for batch in loader])
    expected = tokenizer([data.load_text(i) for i in range(len(data))]).long()
    assert torch.equal(got, expected)


def test_lookup_by_text_is_right_for_copies_and_new_tokenizers(preprocess, tokenizer):
    transform = preprocess[0]
    data = Texts(["a red square", None, "a blue circle"], tokenizer, transform)
    assert torch.equal(data[0]["text"], tokenizer(["a red square"])[0])
    absent = data[1]
    assert not absent["text_present"] and absent["text"].shape == tokenizer(["x"])[0].shape
    assert torch.count_nonzero(absent["text"]) == 0
    other = copy.copy(data)  # shares the cache, as RecordDataset.select's copies do
    other.texts = ["a green cross", "a red square", "a blue circle"]
    assert torch.equal(other[0]["text"], tokenizer(["a green cross"])[0])
    counting = CountingTokenizer(tokenizer)
    other.tokenizer = counting  # a new tokenizer: a new cache
    assert torch.equal(other[1]["text"], tokenizer(["a red square"])[0])
    assert counting.texts["a red square"] == 1
    sample = other[1]
    sample["text"][:] = 0  # the cache hands out copies
    assert torch.equal(other[1]["text"], tokenizer(["a red square"])[0])


def test_cache_off_tokenizes_every_access(preprocess, tokenizer):
    counting = CountingTokenizer(tokenizer)
    data = Texts(["a red square", "hi"], counting, preprocess[0])
    data.cache_tokens = False
    for _ in range(2):
        assert torch.equal(data[0]["text"], tokenizer(["a red square"])[0])
    assert counting.texts["a red square"] == 2
    assert data.pretokenize() is None


def test_token_cache_batches_distinct_new_texts(tokenizer):
    counting = CountingTokenizer(tokenizer)
    cache = TokenCache(counting, batch_size=2)
    assert cache.add(["a", "b", "a", "c"]) == 3
    assert counting.calls == 2 and len(cache) == 3 and "b" in cache
    assert cache.add(["b", "c"]) == 0 and counting.calls == 2
    assert torch.equal(cache["d"], tokenizer(["d"])[0])  # unseen: tokenized alone
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        TokenCache(tokenizer, batch_size=0)
