"""The summable state shared by SemanticMetric, PanopticMetric and CriteriaMeter, on random inputs.

What a user relies on when sharding an evaluation: metrics fed parts of the data and then
added (``a + b``, ``merge_state``, ``sync``) give the numbers of one metric fed everything;
a state survives ``state()`` -> ``load_state``; a state from an incompatible metric is
refused with the field named; ``reset`` starts over.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from segmerge.errors import SegmergeError
from segmerge.metrics import PanopticMetric, SemanticMetric, SummableMetric
from segmerge.tuning.criteria import CriteriaMeter

NUM_CLASSES = 6
CATEGORIES = [
    {"id": 7, "name": "road", "isthing": 0},
    {"id": 11, "name": "building", "isthing": 0},
    {"id": 23, "name": "sky", "isthing": 0},
    {"id": 24, "name": "person", "isthing": 1},
    {"id": 26, "name": "car", "isthing": 1},
]


def semantic_batches(rng: np.random.Generator, n: int) -> list[tuple]:
    """Label maps or logits against targets with some ignored pixels."""
    batches = []
    for _ in range(n):
        target = rng.integers(0, NUM_CLASSES, size=(2, 9, 11))
        target[rng.random(target.shape) < 0.1] = 255
        if rng.random() < 0.5:
            pred = torch.from_numpy(rng.normal(size=(2, NUM_CLASSES, 9, 11)).astype(np.float32))
        else:
            pred = torch.from_numpy(rng.integers(0, NUM_CLASSES, size=(2, 9, 11)))
        batches.append((pred, torch.from_numpy(target)))
    return batches


def panoptic_batches(rng: np.random.Generator, n: int) -> list[tuple]:
    """One image per batch: a grid of segments (some void), and a prediction that moves, merges and
    relabels some of them, so there are matches (with IoUs below 1), false positives and false negatives."""
    batches = []
    for _ in range(n):
        blocks = rng.integers(1, 13, size=(4, 5))
        blocks[rng.random(blocks.shape) < 0.15] = 0
        gt = np.kron(blocks, np.ones((6, 6), dtype=np.int64))
        pred = gt.copy()
        for _ in range(int(rng.integers(1, 5))):
            y, x, h, w = rng.integers(0, 20), rng.integers(0, 26), rng.integers(2, 9), rng.integers(2, 9)
            pred[y : y + h, x : x + w] = rng.integers(1, 16)
        categories = {sid: int(rng.choice([c["id"] for c in CATEGORIES])) for sid in range(1, 16)}
        relabelled = {sid: (categories[sid] if rng.random() < 0.8 else 24) for sid in range(1, 16)}
        gt_info = [{"id": int(s), "category_id": categories[s]} for s in np.unique(gt) if s]
        pred_info = [{"id": int(s), "category_id": relabelled[s]} for s in np.unique(pred) if s]
        batches.append((gt, gt_info, pred, pred_info))
    return batches


def criteria_batches(rng: np.random.Generator, n: int) -> list[tuple]:
    """Peaked probabilities (so some classes are absent from a batch); the ensemble is sometimes missing."""

    def probabilities() -> torch.Tensor:
        return torch.from_numpy(4.0 * rng.normal(size=(2, NUM_CLASSES, 5, 7))).float().softmax(1)

    return [(probabilities(), probabilities() if rng.random() < 0.8 else None, probabilities()) for _ in range(n)]


@dataclass(frozen=True)
class Case:
    make: Callable[[], SummableMetric]
    batches: Callable[[np.random.Generator, int], list[tuple]]


CASES = {
    "semantic": Case(lambda: SemanticMetric(NUM_CLASSES), semantic_batches),
    "panoptic": Case(lambda: PanopticMetric(CATEGORIES), panoptic_batches),
    "criteria": Case(lambda: CriteriaMeter(NUM_CLASSES), criteria_batches),
}


@pytest.fixture(params=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def feed(metric: SummableMetric, batches: list[tuple]) -> SummableMetric:
    for batch in batches:
        metric.update(*batch)
    return metric


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype and actual[name].shape == value.shape, name
        if value.dtype.is_floating_point:  # float sums depend on the order of the additions
            torch.testing.assert_close(actual[name], value, rtol=1e-12, atol=1e-12, msg=name)
        else:
            assert torch.equal(actual[name], value), name


def numbers(result) -> list[float]:
    """Every number in a result (dataclass, dict or tuple of them), in order."""
    if dataclasses.is_dataclass(result):
        result = dataclasses.asdict(result)
    if isinstance(result, dict):
        return [v for key in result for v in numbers(result[key])]
    if isinstance(result, (list, tuple)):
        return [v for item in result for v in numbers(item)]
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return [float(result)]
    return []


def assert_same_scores(actual: SummableMetric, expected: SummableMetric) -> None:
    assert numbers(actual.compute()) == pytest.approx(numbers(expected.compute()), rel=1e-12, nan_ok=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_fed_a_split_of_the_batches_add_up_to_one_fed_everything(case, seed):
    rng = np.random.default_rng(seed)
    batches = case.batches(rng, 5)
    split = int(rng.integers(1, 5))
    everything = feed(case.make(), batches)
    first, second = feed(case.make(), batches[:split]), feed(case.make(), batches[split:])
    first_before = first.state()

    total = first + second
    assert_same_state(total.state(), everything.state())
    assert_same_scores(total, everything)
    assert_same_state(first.state(), first_before)  # a + b leaves a alone

    merged = case.make()
    merged.load_state(first.state())
    merged.merge_state(second.state())
    assert_same_state(merged.state(), everything.state())
    assert_same_scores(merged, everything)


def test_a_state_round_trips_through_load_state_and_is_a_copy(case):
    metric = feed(case.make(), case.batches(np.random.default_rng(4), 3))
    state = metric.state()
    twin = case.make()
    twin.load_state(state)
    assert_same_state(twin.state(), state)
    assert_same_scores(twin, metric)

    for value in state.values():
        value += 1
    assert_same_state(twin.state(), metric.state())  # neither metric shares the returned tensors


def wrong_dtype(value: torch.Tensor) -> torch.Tensor:
    return value.to(torch.int64 if value.dtype.is_floating_point else torch.float64)


@pytest.mark.parametrize(
    "spoil, says",
    [
        (lambda v: torch.zeros((*v.shape, 2), dtype=v.dtype), "expected"),
        (lambda v: torch.zeros((3,), dtype=v.dtype) if v.dim() != 1 else torch.zeros(99, dtype=v.dtype), "expected"),
        (wrong_dtype, "expected"),
        (lambda v: v.tolist(), "expected a tensor"),
    ],
    ids=["extra-dim", "other-shape", "dtype", "not-a-tensor"],
)
def test_merging_a_state_of_another_shape_or_dtype_names_the_field_and_changes_nothing(case, spoil, says):
    metric = feed(case.make(), case.batches(np.random.default_rng(5), 2))
    before = metric.state()
    for name in before:
        state = metric.state()
        state[name] = spoil(state[name])
        for combine in (metric.merge_state, metric.load_state):
            with pytest.raises(SegmergeError, match=rf"'{name}'.*{says}"):
                combine(state)
        assert_same_state(metric.state(), before)


def test_merging_a_state_with_missing_or_extra_fields_names_them(case):
    metric = case.make()
    state = metric.state()
    first = next(iter(state))
    missing = {k: v for k, v in state.items() if k != first}
    with pytest.raises(SegmergeError, match=rf"missing: \['{first}'\]"):
        metric.merge_state(missing)
    with pytest.raises(SegmergeError, match=r"unexpected: \['bogus'\]"):
        metric.load_state({**state, "bogus": torch.zeros(1)})
    with pytest.raises(SegmergeError, match="mapping"):
        metric.merge_state(list(state.values()))


def test_reset_gives_the_empty_state_and_the_metric_can_be_fed_again(case):
    batches = case.batches(np.random.default_rng(6), 3)
    metric = feed(case.make(), batches)
    metric.reset()
    empty = case.make().state()
    assert_same_state(metric.state(), empty)
    assert all(not bool(v.any()) for v in empty.values())
    assert_same_state(feed(metric, batches).state(), feed(case.make(), batches).state())


def test_adding_metrics_built_with_different_settings_is_refused():
    with pytest.raises(SegmergeError, match="num_classes 6 vs 7"):
        SemanticMetric(6) + SemanticMetric(7)
    with pytest.raises(SegmergeError, match="ignore_index"):
        SemanticMetric(6) + SemanticMetric(6, ignore_index=None)
    with pytest.raises(SegmergeError, match="categories"):
        PanopticMetric(CATEGORIES) + PanopticMetric(CATEGORIES[:-1])
    with pytest.raises(SegmergeError, match="num_classes"):
        CriteriaMeter(6) + CriteriaMeter(7)
    with pytest.raises(TypeError):
        SemanticMetric(6) + CriteriaMeter(6)
    # names label the report; they are not part of the counts
    named = SemanticMetric(2, class_names=["a", "b"]) + SemanticMetric(2)
    assert named.class_names == ("a", "b")


def test_sync_in_a_process_group_sums_once_and_then_refuses_local_updates(case, tmp_path):
    import torch.distributed as dist

    batches = case.batches(np.random.default_rng(7), 2)
    metric = feed(case.make(), batches)
    metric.sync()  # torch.distributed not initialised: a no-op that leaves the metric usable
    metric.update(*batches[0])
    before = metric.state()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        metric.sync()
        metric.sync()  # a second call must not sum again
        assert_same_state(metric.state(), before)
        with pytest.raises(SegmergeError, match="reset"):
            metric.update(*batches[0])
        metric.reset()
        metric.update(*batches[0])
    finally:
        dist.destroy_process_group()


def test_criteria_miou_is_semantic_metric_miou_to_the_last_bit():
    """agreement/consistency are the mIoU SemanticMetric reports on the same label maps: classes
    in neither map are left out, classes predicted but absent from the reference count as 0."""
    for seed in range(5):
        (probabilities, ensemble, augmented), *_ = criteria_batches(np.random.default_rng(seed), 1)
        ensemble = ensemble if ensemble is not None else augmented
        meter = CriteriaMeter(NUM_CLASSES)
        meter.update(probabilities, ensemble, augmented)
        scores = meter.compute()
        labels = probabilities.argmax(1)
        agreement = SemanticMetric(NUM_CLASSES, ignore_index=None)
        agreement.update(labels, ensemble.argmax(1))
        consistency = SemanticMetric(NUM_CLASSES, ignore_index=None)
        consistency.update(augmented.argmax(1), labels)
        assert scores.agreement == agreement.compute().miou
        assert scores.consistency == consistency.compute().miou
        assert not math.isnan(scores.entropy)
