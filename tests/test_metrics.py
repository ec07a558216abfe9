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
    assert set(ml) == {"f1_macro", "f1_micro", "f1_weighted", "f1_samples", "map", "auroc_macro"}
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


def test_multilabel_ranking_metrics_and_tuned_f1():
    # class 0 ranks its positive first (AP 1, AUROC 1); class 1 ranks its positive last
    # (AP 1/3: precision 1/3 at its only positive; AUROC 0); class 2 has no positive (left out)
    probs = torch.tensor([[0.9, 0.2, 0.1], [0.4, 0.3, 0.1], [0.3, 0.1, 0.1]])
    logits = torch.logit(probs)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ml = compute_metrics("multilabel", logits, target, 3)
    assert abs(ml["map"] - (1 + 1 / 3) / 2) < 1e-6
    assert abs(ml["auroc_macro"] - 0.5) < 1e-6
    assert "f1_macro_tuned" not in ml
    # thresholds below class 1's positive score predict it; the F1 at 0.5 keeps its value
    tuned = compute_metrics("multilabel", logits, target, 3, torch.tensor([0.5, 0.05, 0.5]))
    assert tuned["f1_macro"] == ml["f1_macro"]
    assert abs(ml["f1_macro"] - 1 / 3) < 1e-6  # class 0: 1, class 1: 0, class 2: 0
    assert abs(tuned["f1_macro_tuned"] - (1 + 0.5) / 3) < 1e-6  # class 1: 3 predicted, 1 tp
    assert {"f1_micro_tuned", "f1_weighted_tuned", "f1_samples_tuned"} <= set(tuned)


def test_multilabel_metrics_of_an_empty_set_are_nan():
    empty = compute_metrics("multilabel", torch.zeros(0, 3), torch.zeros(0, 3), 3, torch.ones(3))
    assert {"f1_macro_tuned", "map", "auroc_macro"} <= set(empty)
    assert all(v != v for v in empty.values())
