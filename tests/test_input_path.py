"""Images travel through the loaders as uint8 and are normalised on the device (issue 21)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cmpt_lightning.datamodules.csv import MultimodalCSVDataModule
from cmpt_lightning.datamodules.synthetic import SyntheticDataModule
from cmpt_lightning.datasets.images import (
    PixelsToTensor,
    defer_normalization,
    image_dtype,
    normalize_pixels,
)
from cmpt_lightning.models.clip import build_image_transform

CSV = Path(__file__).resolve().parent / "data" / "csv"


def test_the_device_normalisation_equals_to_tensor_and_normalize_bit_for_bit():
    transform = build_image_transform("ViT-B-16")
    deferred = defer_normalization(transform)
    step = deferred.transforms[-1]
    assert isinstance(step, PixelsToTensor) and image_dtype(deferred) is torch.uint8
    assert image_dtype(transform) is torch.float32
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8))
    pixels = deferred(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    assert torch.equal(normalize_pixels(pixels[None], step.mean, step.std)[0], transform(image))
    every = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    expected = transform.transforms[-1](every[0].float().div(255))  # all 3 x 256 values
    assert torch.equal(normalize_pixels(every, step.mean, step.std)[0], expected)
    absent = normalize_pixels(every.repeat(2, 1, 1, 1), step.mean, step.std, torch.tensor([1, 0]))
    assert torch.equal(absent[0], expected) and not absent[1].any()


def test_file_loaders_yield_uint8_that_the_hook_turns_into_the_float_inputs():
    dm = MultimodalCSVDataModule(
        root=str(CSV), data_file="data.csv", clip_model="cmpt-tiny", batch_size=32, num_workers=1
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # through a worker process
    assert batch["image"].dtype == torch.uint8
    assert not batch["image_present"].all()  # the table has rows without an image
    dataset, reference = dm.datasets["train"], build_image_transform("cmpt-tiny")
    expected = []
    for index in batch["index"].tolist():
        image = dataset.load_image(index)
        expected.append(torch.zeros(3, 32, 32) if image is None else reference(image))
    moved = dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    normalised = dm.on_after_batch_transfer(moved, 0)["image"]
    assert normalised.dtype == torch.float32 and torch.equal(normalised, torch.stack(expected))


def test_generated_data_stays_float_and_the_hook_leaves_floats_alone():
    dm = SyntheticDataModule(clip_model="cmpt-tiny", batch_size=4, test_size=4)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].dtype == torch.float32
    before = batch["image"].clone()
    assert torch.equal(dm.on_after_batch_transfer(batch, 0)["image"], before)
