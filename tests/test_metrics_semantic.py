"""SemanticMetric against torchmetrics' MulticlassJaccardIndex and an mmseg-style numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchmetrics.classification import MulticlassJaccardIndex

from segmerge.errors import SegmergeError
from segmerge.labels import CITYSCAPES_CLASSES, PROTOCOLS
from segmerge.metrics import SemanticMetric, protocol

IGNORE = 255


def random_batches(rng: np.random.Generator, num_classes: int, n_batches: int, shape=(2, 24, 32), ignore_frac=0.15):
    """Label maps with ignore pixels and predictions that are right ~60% of the time."""
    batches = []
    for _ in range(n_batches):
        # Skewed class frequencies so that some classes are rare or absent in a batch.
        probs = rng.dirichlet(np.full(num_classes, 0.5))
        target = rng.choice(num_classes, size=shape, p=probs)
        pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, num_classes, size=shape))
        target[rng.random(shape) < ignore_frac] = IGNORE
        batches.append((pred.astype(np.int64), target.astype(np.int64)))
    return batches


def mmseg_areas(batches, num_classes: int):
    """Per-class intersection/union/label areas via histograms, as mmseg's intersect_and_union does."""
    inter, union, label = (np.zeros(num_classes) for _ in range(3))
    for pred, target in batches:
        keep = target != IGNORE
        p, t = pred[keep], target[keep]
        i = np.bincount(p[p == t], minlength=num_classes)
        ap, at = np.bincount(p, minlength=num_classes), np.bincount(t, minlength=num_classes)
        inter += i
        union += ap + at - i
        label += at
    return inter, union, label


def torchmetrics_iou(batches, num_classes: int, average):
    metric = MulticlassJaccardIndex(num_classes=num_classes, average=average, ignore_index=IGNORE)
    for pred, target in batches:
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    return 100.0 * metric.compute().double().numpy()


def feed(metric: SemanticMetric, batches) -> SemanticMetric:
    for pred, target in batches:
        metric.update(torch.from_numpy(pred), torch.from_numpy(target))
    return metric


def assert_matches_references(batches, num_classes: int) -> None:
    result = feed(SemanticMetric(num_classes), batches).compute()
    iou = np.array(result.iou)

    inter, union, label = mmseg_areas(batches, num_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_iou = 100.0 * inter / union
        expected_acc = 100.0 * inter / label
    np.testing.assert_allclose(iou, expected_iou, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(result.accuracy, expected_acc, atol=1e-3, equal_nan=True)
    assert result.miou == pytest.approx(np.nanmean(expected_iou), abs=1e-3)
    assert result.mean_accuracy == pytest.approx(np.nanmean(expected_acc), abs=1e-3)
    assert result.pixel_accuracy == pytest.approx(100.0 * inter.sum() / label.sum(), abs=1e-3)

    # torchmetrics reports 0 for classes absent from both gt and prediction, and leaves them out of 'macro'.
    tm_per_class = torchmetrics_iou(batches, num_classes, None)
    present = ~np.isnan(iou)
    np.testing.assert_allclose(iou[present], tm_per_class[present], atol=1e-3)
    assert np.all(tm_per_class[~present] == 0)
    assert result.miou == pytest.approx(float(torchmetrics_iou(batches, num_classes, "macro")), abs=1e-3)


def test_cityscapes_sized_batches_match_torchmetrics_and_mmseg():
    rng = np.random.default_rng(0)
    assert_matches_references(random_batches(rng, 19, n_batches=4), 19)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    num_classes=st.integers(2, 7),
    n_batches=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    ignore_frac=st.sampled_from([0.0, 0.2, 0.9]),
)
def test_random_inputs_match_references(num_classes, n_batches, seed, ignore_frac):
    rng = np.random.default_rng(seed)
    batches = random_batches(rng, num_classes, n_batches, shape=(1, 6, 9), ignore_frac=ignore_frac)
    if all((t == IGNORE).all() for _, t in batches):
        with pytest.raises(SegmergeError, match="no labelled pixels"):
            feed(SemanticMetric(num_classes), batches).compute()
        return
    assert_matches_references(batches, num_classes)


def test_logits_and_numpy_inputs_equal_label_maps():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 8, 10)).astype(np.float32)
    target = rng.integers(0, 5, size=(2, 8, 10)).astype(np.uint8)  # uint8, as label PNGs are
    target[:, :2] = IGNORE
    labels = logits.argmax(axis=1)

    from_labels = SemanticMetric(5)
    from_labels.update(torch.from_numpy(labels), torch.from_numpy(target.astype(np.int64)))
    from_logits = SemanticMetric(5)
    from_logits.update(torch.from_numpy(logits), target)  # [N, C, H, W] logits, numpy target
    per_image = SemanticMetric(5)
    for i in range(2):
        per_image.update(logits[i], torch.from_numpy(target[i]))  # [C, H, W] logits
    assert torch.equal(from_labels.confusion_matrix, from_logits.confusion_matrix)
    assert torch.equal(from_labels.confusion_matrix, per_image.confusion_matrix)
    assert int(from_labels.confusion_matrix.sum()) == int((target != IGNORE).sum())


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    metric = SemanticMetric(4)
    # gt: classes 0 and 1; prediction also says 2 on one pixel; class 3 appears nowhere.
    metric.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 1]))
    result = metric.compute()
    assert result.iou[:3] == (100.0, pytest.approx(200 / 3), 0.0)
    assert math.isnan(result.iou[3])
    assert result.miou == pytest.approx((100 + 200 / 3 + 0) / 3)
    assert math.isnan(result.accuracy[2]) and math.isnan(result.accuracy[3])  # not in gt
    assert result.mean_accuracy == pytest.approx((100 + 200 / 3) / 2)
    assert result.pixel_accuracy == 75.0


def test_protocols_are_the_uda_class_subsets():
    assert protocol("cityscapes19").class_ids == tuple(range(19))
    assert protocol("synthia16").class_ids == (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
    assert set(protocol("cityscapes19").class_names) - set(protocol("synthia16").class_names) == {
        "terrain",
        "truck",
        "train",
    }
    assert set(protocol("synthia16").class_names) - set(protocol("synthia13").class_names) == {"wall", "fence", "pole"}
    assert len(protocol("synthia13")) == 13
    with pytest.raises(SegmergeError) as err:
        protocol("synthia15")
    assert "synthia15" in str(err.value) and all(name in str(err.value) for name in PROTOCOLS)


def test_subset_miou_averages_the_19_class_ious():
    rng = np.random.default_rng(2)
    metric = feed(SemanticMetric(19, class_names=CITYSCAPES_CLASSES), random_batches(rng, 19, n_batches=3))
    full = metric.compute()
    iou = dict(zip(full.class_ids, full.iou, strict=True))
    for name in ("synthia16", "synthia13"):
        sub = metric.compute(subset=name)
        ids = protocol(name).class_ids
        assert sub.class_ids == ids and sub.subset == name
        assert sub.class_names == protocol(name).class_names
        assert sub.iou == tuple(iou[i] for i in ids)  # per-class IoU from the same 19-class matrix
        assert sub.miou == pytest.approx(np.nanmean([iou[i] for i in ids]), abs=1e-9)
        assert sub.pixel_accuracy == full.pixel_accuracy
    assert metric.compute(subset=[0, 1]).miou == pytest.approx((iou[0] + iou[1]) / 2)
    assert metric.compute(subset=protocol("cityscapes19")).miou == pytest.approx(full.miou)
    with pytest.raises(SegmergeError, match="19"):
        metric.compute(subset=[0, 19])


def test_subset_counts_predictions_of_classes_outside_it():
    """Predicting 'terrain' on road pixels must lower road's IoU under synthia16 too."""
    metric = SemanticMetric(19)
    metric.update(torch.tensor([0, 9]), torch.tensor([0, 0]))
    assert metric.compute("synthia16").iou[0] == 50.0


def test_summed_states_equal_one_metric_fed_everything():
    rng = np.random.default_rng(3)
    batches = random_batches(rng, 19, n_batches=4)
    everything = feed(SemanticMetric(19), batches)
    first, second = feed(SemanticMetric(19), batches[:1]), feed(SemanticMetric(19), batches[1:])

    assert torch.equal((first + second).confusion_matrix, everything.confusion_matrix)
    merged = SemanticMetric(19)
    merged.load_state(first.state())
    merged.merge_state(second.state())
    assert torch.equal(merged.confusion_matrix, everything.confusion_matrix)
    assert merged.compute() == everything.compute()

    state = first.state()
    state["confusion_matrix"] += 1
    assert not torch.equal(state["confusion_matrix"], first.confusion_matrix)  # state() is a copy
    with pytest.raises(SegmergeError, match=r"\(5, 5\)"):
        merged.merge_state({"confusion_matrix": torch.zeros(5, 5, dtype=torch.int64)})

    merged.sync()  # torch.distributed not initialised: no-op
    assert torch.equal(merged.confusion_matrix, everything.confusion_matrix)
    merged.reset()
    assert int(merged.confusion_matrix.sum()) == 0


def test_sync_all_reduces_through_a_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metric = SemanticMetric(3)
        metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
        before = metric.state()["confusion_matrix"]
        metric.sync()
        metric.sync()  # second call must not sum again
        assert torch.equal(metric.confusion_matrix, before)
        with pytest.raises(SegmergeError, match="reset"):
            metric.update(torch.tensor([0]), torch.tensor([0]))
    finally:
        dist.destroy_process_group()


def test_mismatched_shapes_name_both():
    metric = SemanticMetric(19)
    with pytest.raises(SegmergeError) as err:
        metric.update(torch.zeros(2, 8, 8, dtype=torch.long), torch.zeros(2, 8, 9, dtype=torch.long))
    assert "(2, 8, 8)" in str(err.value) and "(2, 8, 9)" in str(err.value)
    with pytest.raises(SegmergeError, match=r"\(2, 19, 8, 8\).*\(2, 4, 4\)"):
        metric.update(torch.zeros(2, 19, 8, 8), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(SegmergeError, match="7 classes"):
        metric.update(torch.zeros(2, 7, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(SegmergeError, match="floating"):
        metric.update(torch.zeros(8, 8), torch.zeros(8, 8, dtype=torch.long))


@pytest.mark.parametrize("bad", [19, -1])
def test_prediction_out_of_range_is_an_error(bad):
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[1, 2] = bad
    with pytest.raises(SegmergeError, match=f"class id {bad}"):
        SemanticMetric(19).update(pred, torch.zeros(4, 4, dtype=torch.long))


@pytest.mark.parametrize("bad", [19, 254, -3])
def test_target_neither_ignored_nor_in_range_is_an_error(bad):
    target = torch.full((4, 4), IGNORE)
    target[0, 0] = bad
    with pytest.raises(SegmergeError, match=f"class id {bad}"):
        SemanticMetric(19).update(torch.zeros(4, 4, dtype=torch.long), target)


def test_bad_construction_and_empty_compute():
    with pytest.raises(SegmergeError, match="ignore_index=3"):
        SemanticMetric(19, ignore_index=3)
    with pytest.raises(SegmergeError, match="2 class_names"):
        SemanticMetric(3, class_names=["a", "b"])
    with pytest.raises(SegmergeError, match="no labelled pixels"):
        SemanticMetric(19).compute()
    metric = SemanticMetric(2, ignore_index=None)
    metric.update(np.array([[0, 1]]), np.array([[1, 1]], dtype=np.uint16))
    assert metric.compute().pixel_accuracy == 50.0
