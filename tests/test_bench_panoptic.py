"""The benchmark's panoptic claim: its PQ agrees with ``segmerge eval``, its ground truth with the
dataset's, its ensemble averages semantic outputs, and its tables keep PQ and mIoU apart."""

from __future__ import annotations

import math
import os

import pytest

from segmerge.evaluation.runner import EvaluationConfig, evaluate
from segmerge.labels import CITYSCAPES_CLASSES, THING_TRAIN_IDS
from segmerge.metrics import PanopticMetric
from segmerge.segmenters import load_segmenter
from segmerge_bench.benchmark.candidates import DEFAULT, SOUP
from segmerge_bench.benchmark.experiments import ENSEMBLE_ROW, ClaimRun, ScoredMerge
from segmerge_bench.benchmark.scoring import MIOU, PQ, measure, panoptic_truth, score
from segmerge_bench.benchmark.summary import claims_object, markdown_tables
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.training import TrainConfig, TrainingData, train_source_only
from segmerge_bench.training.panoptic import train_panoptic_supervised
from segmerge_bench.zoo.models import build_model, save_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
FAST = TrainConfig(steps=12, batch_size=4, lr=3e-3, warmup_steps=2, threads=1, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench-panoptic")
    scenes = TrainingData.from_samples(SyntheticDataset("target", 12, split="train"), instances=True)
    panoptic, _ = train_panoptic_supervised(build_model("panoptic", seed=0), scenes, FAST)
    semantic, _ = train_source_only(build_model("segformer", seed=0), scenes, FAST)
    dataset = SyntheticDataset("target", 10, split="test")
    return {
        "panoptic": save_model(panoptic.eval(), folder / "panoptic.pth"),
        "semantic": save_model(semantic.eval(), folder / "semantic"),
        "dataset": dataset,
        "test": TrainingData.from_samples(dataset, instances=True),
    }


def test_truth_from_labels_and_instances_is_the_datasets_panoptic_ground_truth(trained):
    metric = PanopticMetric(trained["dataset"].categories)
    for i, sample in enumerate(trained["dataset"]):
        labels, instances = trained["test"].labels[i].long(), trained["test"].instances[i].long()
        ids, segments = panoptic_truth(labels, instances, THING_TRAIN_IDS)
        metric.update(sample.panoptic.ids, sample.panoptic.segments_info, ids, segments)
    result = metric.compute()
    assert result.n_things > 0 and result.pq == pytest.approx(100.0)


def test_benchmark_pq_agrees_with_segmerge_eval(trained):
    measured = measure(PQ, [trained["panoptic"]], trained["test"])
    config = EvaluationConfig(len(CITYSCAPES_CLASSES), tuple(CITYSCAPES_CLASSES), panoptic=True, progress=False)
    row = evaluate([load_segmenter(str(trained["panoptic"]))], trained["dataset"], config).rows[0]
    assert measured[PQ] == pytest.approx(row.panoptic["pq"], abs=0.5)
    assert measured["PQ stuff"] == pytest.approx(row.panoptic["pq_stuff"], abs=0.5)
    assert measured[MIOU] == pytest.approx(row.semantic["miou"], abs=0.2)
    assert measured[PQ] > 0  # a model that learned something: the comparison is not 0 == 0


def test_the_panoptic_ensemble_averages_the_semantic_outputs(trained):
    both = [trained["panoptic"], trained["semantic"]]
    ensemble = measure(PQ, both, trained["test"])
    assert ensemble[MIOU] == pytest.approx(score(both, trained["test"]), abs=1e-6)
    with pytest.raises(Exception, match="panoptic network first"):
        measure(PQ, both[::-1], trained["test"])


def _panoptic_run(seed: int, panoptic: float, default: float) -> ClaimRun:
    details = {PQ: 0.0, "PQ things": 1.0, "PQ stuff": 20.0, MIOU: 30.0}
    merges = [
        ScoredMerge(SOUP, "named", 0, {"method": "linear"}, panoptic - 1, details={**details, MIOU: 31.0}),
        ScoredMerge(DEFAULT, "named", 0, {"method": "layerwise"}, default, details={**details, MIOU: 32.0}),
    ]
    singles = {"0": {**details, PQ: panoptic}, "1": {MIOU: 25.0}, ENSEMBLE_ROW: {**details, MIOU: 35.0}}
    return ClaimRun(
        "semantic-to-panoptic", "appearance", seed, ["p", "s"], [panoptic, math.nan], 9.0, 40.0, merges,
        metric=PQ, details=singles,
    )  # fmt: skip


def test_pq_claim_tables_keep_the_semantic_model_out_of_the_best_single_and_show_mious():
    runs = [_panoptic_run(0, 10.0, 12.0), _panoptic_run(1, 12.0, 13.0)]
    claim = claims_object(runs)["claims"][0]
    assert claim["metric"] == "PQ" and claim["paper_gain"] == 7.0
    assert claim["best_single"] == 11.0 and claim["gain"] == 1.5
    assert claim["oracle"] is None  # the oracle is semantic: it has no PQ
    assert claim["details"]["layer-wise (default)"][MIOU] == 32.0
    table = markdown_tables(runs)
    assert "| model | PQ (%) | vs best single | PQ things | PQ stuff | mIoU |" in table
    assert "| UDA A alone | n/a |  | n/a | n/a | 25.0 ± 0.0 |" in table
    assert "| target oracle (semantic, trained on target labels) | n/a |  | n/a | n/a | 40.0 ± 0.0 |" in table


def test_a_score_measured_over_19_classes_is_not_reused_for_16(trained, monkeypatch):
    from segmerge.labels import SYNTHIA_16_TRAIN_IDS
    from segmerge_bench.benchmark import experiments
    from segmerge_bench.benchmark.claims import CLAIMS

    claim = next(c for c in CLAIMS if c.metric == PQ)
    models = [trained["panoptic"], trained["semantic"]]
    calls = []
    monkeypatch.setattr(experiments, "measure", lambda metric, paths, test: calls.append(test) or {metric: 1.0})
    measured = {(trained["semantic"], MIOU, None): {MIOU: 30.0}}  # the regime scored it over 19 classes
    over_16 = trained["test"].over_classes(SYNTHIA_16_TRAIN_IDS)
    experiments.score_singles(claim, models, over_16, measured)
    assert [t.scored_classes for t in calls] == [SYNTHIA_16_TRAIN_IDS] * 2  # both scored again, over 16
    assert experiments.score_singles(claim, models, trained["test"], measured)[1] == {MIOU: 30.0}
    assert len(calls) == 3  # over 19 classes, only the panoptic model's PQ was new


def test_one_pass_scores_a_model_over_19_classes_and_over_16_as_two_passes_do(trained):
    from segmerge.labels import SYNTHIA_16_TRAIN_IDS
    from segmerge_bench.benchmark.scoring import score, scores_over

    test, model = trained["test"], [trained["semantic"]]
    over_16 = test.over_classes(SYNTHIA_16_TRAIN_IDS)
    both = scores_over(model, test, [None, SYNTHIA_16_TRAIN_IDS])
    assert both == [score(model, test), score(model, over_16)]
    assert both[0] != both[1]


def test_a_panoptic_claim_from_a_synthia_like_source_is_scored_over_its_16_classes(trained):
    import numpy as np
    import torch

    from segmerge.evaluation.prediction import class_map, predict
    from segmerge.labels import SYNTHIA_16_TRAIN_IDS, cityscapes_categories
    from segmerge_bench.benchmark.claims import CLAIMS
    from segmerge_bench.benchmark.experiments import scored_test
    from segmerge_bench.benchmark.scoring import inference

    test, claim = trained["test"], next(c for c in CLAIMS if c.metric == PQ)
    scored = scored_test(claim, "appearance", test)  # its panoptic model comes from source B
    assert scored.scored_classes == SYNTHIA_16_TRAIN_IDS
    assert scored_test(claim, "classes", test) is test  # classes-b labels all 19
    assert scored_test(CLAIMS[0], "appearance", test) is test  # semantic claims: all 19
    left_out = torch.tensor([CITYSCAPES_CLASSES.index(n) for n in ("terrain", "truck", "train")])
    assert torch.isin(test.labels.long(), left_out).any()  # the three classes are in the truth, and stay
    assert torch.equal(scored.labels, test.labels) and torch.equal(scored.instances, test.instances)
    with pytest.raises(Exception, match="only labelled data"):
        test.unlabelled().over_classes(SYNTHIA_16_TRAIN_IDS)

    # the reference, EDAPS's rule: the dataset's own panoptic ground truth and the model's panoptic
    # prediction scored over all 19 categories, then PQ averaged over SYNTHIA's 16 (of those scored)
    reference = PanopticMetric(cityscapes_categories())
    segmenter = load_segmenter(str(trained["panoptic"]))
    samples = list(trained["dataset"])
    for batch in predict([segmenter], test.images, inference(), keep_outputs=True):
        predicted = class_map(batch.ensemble())
        for i, (ids, segments) in enumerate(batch.panoptic(0, set(THING_TRAIN_IDS), classes=predicted)):
            truth = samples[batch.indices.start + i].panoptic
            reference.update(np.asarray(truth.ids), truth.segments_info, ids, segments)
    per_class = reference.compute().per_class
    per_class = [c for c in per_class if c.category_id in SYNTHIA_16_TRAIN_IDS and not np.isnan(c.pq)]
    things = [c.pq for c in per_class if c.isthing]
    measured = measure(PQ, [trained["panoptic"]], scored)
    assert 10 <= len(per_class) <= 16 and len(things) <= 6  # categories present in 10 images
    assert measured[PQ] == pytest.approx(np.mean([c.pq for c in per_class]), abs=1e-6)
    assert measured["PQ things"] == pytest.approx(np.mean(things), abs=1e-6)
    assert measured[PQ] != pytest.approx(measure(PQ, [trained["panoptic"]], test)[PQ], abs=1e-3)
