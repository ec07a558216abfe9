import torch

from cmpt_lightning import AvailabilityCase
from cmpt_lightning.metrics import EvalCollector, availability_case, compute_metrics


def test_collector_dedupes_padding_and_sorts_by_index():
    c = EvalCollector()
    c.update(index=torch.tensor([2, 0]), logits=torch.tensor([[2.0], [0.0]]))
    c.update(index=torch.tensor([1, 2]), logits=torch.tensor([[1.0], [2.0]]))  # 2 repeated
    out = c.compute()
    assert out["index"].tolist() == [0, 1, 2]
    assert out["logits"].flatten().tolist() == [0.0, 1.0, 2.0]


def test_metrics_per_task():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    assert (
        abs(compute_metrics("multiclass", logits, torch.tensor([0, 1, 1]), 2)["acc"] - 2 / 3) < 1e-6
    )
    ml = compute_metrics(
        "multilabel", logits, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), 2
    )
    assert set(ml) == {"f1_macro", "f1_micro", "f1_weighted", "f1_samples"}
    assert abs(ml["f1_micro"] - 6 / 7) < 1e-6  # tp 3, fp 0, fn 1
    binary = compute_metrics(
        "binary", torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([1, 0, 0]), 1
    )
    assert abs(binary["acc"] - 2 / 3) < 1e-6 and binary["auroc"] == 0.5


def test_availability_case_masks():
    img = torch.tensor([True, True, False, False])
    txt = torch.tensor([True, False, True, False])
    masks = availability_case(img, txt)
    assert list(masks) == [
        AvailabilityCase.COMPLETE,
        AvailabilityCase.IMAGE_ONLY,
        AvailabilityCase.TEXT_ONLY,
    ]
    assert [m.tolist() for m in masks.values()] == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
    ]
