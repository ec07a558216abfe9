"""Token ids longer than the text tower's context length: one clear ValueError (issue 20, 14)."""

import pytest
import torch

from cmpt_lightning.models import CMPTModel, build_tokenizer


@pytest.mark.parametrize("method", ["cmpt", "zero_fill"])
def test_clip_length_token_ids_on_a_tiny_tower_are_a_clear_error(method):
    model = CMPTModel("cmpt-tiny", num_classes=3, method=method)
    images = torch.zeros(2, 3, 32, 32)
    present = torch.tensor([True, True])
    clip_ids = torch.ones(2, 77, dtype=torch.long)  # CLIP's tokenizer, not the tiny tower's
    with pytest.raises(ValueError, match="length 77") as caught:
        model(images, clip_ids, present, present)
    message = str(caught.value)
    assert "context length is 32" in message and "build_tokenizer" in message
    model.eval()
    with pytest.raises(ValueError, match="length 77"):  # the eval path checks it too
        model.encode(images, clip_ids, present, present)


def test_the_models_own_tokenizer_fits_its_tower():
    model = CMPTModel("cmpt-tiny", num_classes=3)
    ids = build_tokenizer("cmpt-tiny")(["a red circle", "a blue square"])
    assert ids.shape == (2, model.text_tower.context_length)
    present = torch.tensor([True, True])
    out = model(torch.zeros(2, 3, 32, 32), ids, present, present)
    assert out.logits.shape == (2, 3)
