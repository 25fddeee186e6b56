"""Evaluate segmenters (and their output ensemble) on a dataset with the field's metrics.

data + model -> predictions -> metrics -> :class:`EvaluationResult`. Every model sees the
same images; the ensemble averages the models' class probabilities. Under ``torchrun``
each process takes a shard and the metric states are summed, giving the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from segmerge.errors import SegmergeError
from segmerge.evaluation.distributed import ProcessGroup, all_reduce_max
from segmerge.evaluation.prediction import (
    InferenceConfig,
    Timer,
    class_map,
    ensemble_probabilities,
    predict,
    with_model_defaults,
)
from segmerge.evaluation.results import EvaluationResult, ModelScores, QualitativeSample, semantic_summary
from segmerge.segmenters.base import Segmenter, check_classes

ENSEMBLE = "ensemble"


@dataclass(frozen=True)
class EvaluationConfig:
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = 255
    subsets: tuple[str, ...] = ()
    #: The output ensemble to score as well: ``True`` for every model, or the 0-based positions
    #: of its members (e.g. ``(1, 2)``: a merge at 0 against its two inputs and their ensemble).
    ensemble: bool | tuple[int, ...] = False
    qualitative: int = 4
    limit: int | None = None
    progress: bool = True
    #: Also score panoptic outputs (PQ/SQ/RQ) of models that have one, against panoptic ground truth.
    panoptic: bool = False


def evaluate_models(
    models: Sequence[str],
    data: str,
    config: EvaluationConfig,
    inference: InferenceConfig = InferenceConfig(),
    split: str = "val",
    factory: str | None = None,
    family_defaults: Collection[str] = (),
    allow_unverified: bool = False,
    network: str | None = None,
) -> EvaluationResult | None:
    """``segmerge eval``: checkpoints (paths or folders, or what ``factory`` builds from them) on the
    dataset ``data`` (``kind:argument``). Under ``torchrun`` every process evaluates its shard and
    the main one gets the result (the others ``None``). ``family_defaults``: the inference settings
    (mode, crop, stride, scale) to take from the models' families where they have test-time defaults;
    ``network``: which network of UDA training files to evaluate (default: the student)."""
    from segmerge.datasets import open_dataset
    from segmerge.evaluation.distributed import process_group
    from segmerge.metrics.semantic import protocol
    from segmerge.segmenters import load_segmenter

    for name in config.subsets:
        protocol(name)
    ensemble_members(config.ensemble, len(models))
    if "mode" not in family_defaults:  # the mode given: refuse before any work
        _refuse_sliding_panoptic(config, inference)
    with process_group(inference.device) as group:
        if torch.device(inference.device).type == "cuda" and group.active:
            inference = replace(inference, device=f"cuda:{group.rank}")
        dataset = open_dataset(data, split=split)
        segmenters = [
            load_segmenter(m, factory, device=inference.device, verify=not allow_unverified, network=network)
            for m in models
        ]
        inference = with_model_defaults(inference, segmenters, family_defaults)
        _refuse_sliding_panoptic(config, inference)  # the mode a model family brought
        result = evaluate(segmenters, dataset, config, inference, group, dataset_name=data, split=split)
        return result if group.is_main else None


def _refuse_sliding_panoptic(config: EvaluationConfig, inference: InferenceConfig) -> None:
    if config.panoptic and inference.mode != "whole":
        raise SegmergeError("--panoptic: panoptic outputs need whole-image inference; pass --mode whole")


def evaluate(
    segmenters: Sequence[Segmenter],
    dataset,
    config: EvaluationConfig,
    inference: InferenceConfig = InferenceConfig(),
    group: ProcessGroup = ProcessGroup(),
    dataset_name: str = "",
    split: str = "",
) -> EvaluationResult:
    from segmerge.metrics import SemanticMetric

    if len(dataset) == 0:
        raise SegmergeError(f"{dataset_name or 'dataset'}: holds no images")
    for s in segmenters:
        check_classes(s, config.num_classes)
    names = _unique_names(segmenters)
    members = ensemble_members(config.ensemble, len(segmenters))
    ensemble_name = ensemble_row_name(members, len(segmenters))
    rows = [*names, *([ensemble_name] if members else [])]
    metrics = {
        n: SemanticMetric(config.num_classes, ignore_index=config.ignore_index, class_names=list(config.class_names))
        for n in rows
    }
    panoptic_metrics = _panoptic_metrics(segmenters, names, dataset, config)
    thing_ids = {c["id"] for c in getattr(dataset, "categories", []) if c.get("isthing")}
    timers = [Timer() for _ in names]

    indices = list(range(len(dataset)))
    if config.limit is not None:
        indices = indices[: config.limit]
    shard = indices[group.rank :: group.world_size]
    qualitative: list[QualitativeSample] = []
    bar = tqdm(
        shard, desc="evaluating", unit="img", disable=not (config.progress and group.is_main), dynamic_ncols=True
    )
    for index in bar:
        sample = dataset[index]
        if sample.label is None:
            raise SegmergeError(f"{sample.image_path}: has no label; evaluation needs labelled images")
        image = torch.from_numpy(np.array(sample.image, dtype=np.uint8))[None]
        label = torch.from_numpy(np.asarray(sample.label, dtype=np.int64))
        if tuple(label.shape) != tuple(image.shape[1:3]):
            raise SegmergeError(
                f"{sample.image_path}: image is {tuple(image.shape[1:3])} but its label is {tuple(label.shape)}"
            )
        batch = next(predict(segmenters, image, inference, timers=timers, keep_outputs=bool(panoptic_metrics)))
        probabilities = dict(zip(names, batch.probabilities, strict=True))
        if members:
            probabilities[ensemble_name] = ensemble_probabilities([batch.probabilities[i] for i in members])
        predictions = {n: class_map(p)[0] for n, p in probabilities.items()}
        for n, pred in predictions.items():
            metrics[n].update(pred, label)
        panoptic_maps = {}
        for name, metric in panoptic_metrics.items():
            [(ids, segments)] = batch.panoptic(names.index(name), thing_ids)
            metric.update(sample.panoptic.ids, sample.panoptic.segments_info, ids, segments)
            panoptic_maps[name] = ids
        if group.is_main and len(qualitative) < config.qualitative:
            if panoptic_maps:
                panoptic_maps = {"ground truth": sample.panoptic.ids, **panoptic_maps}
            predicted = {n: p.numpy() for n, p in predictions.items()}
            qualitative.append(QualitativeSample(sample.name, sample.image, sample.label, predicted, panoptic_maps))

    result_rows = []
    for n in rows:
        metric = metrics[n]
        metric.sync()
        if n == ensemble_name and members:
            ms = sum(timers[i].ms_per_image for i in members)
            params = sum(segmenters[i].num_parameters for i in members)
            cost = float(len(members))
        else:
            ms = timers[names.index(n)].ms_per_image
            params = segmenters[names.index(n)].num_parameters
            cost = 1.0
        ms = all_reduce_max(ms if not math.isnan(ms) else 0.0, group)
        result_rows.append(
            ModelScores(
                name=n,
                kind="ensemble" if members and n == ensemble_name else "model",
                parameters=params,
                ms_per_image=ms,
                semantic=semantic_summary(metric, config.subsets),
                panoptic=_panoptic_summary(panoptic_metrics.get(n)),
                confusion=metric_confusion(metric),
                cost=cost,
            )
        )
    return EvaluationResult(
        dataset=dataset_name,
        split=split,
        num_images=len(indices),
        class_names=list(config.class_names),
        ignore_index=config.ignore_index,
        rows=result_rows,
        protocol=",".join(config.subsets),
        qualitative=qualitative,
    )


def ensemble_members(ensemble: bool | Sequence[int], count: int) -> tuple[int, ...]:
    """The positions of the ensemble's members among ``count`` models (``()``: no ensemble).
    ``True`` is every model (none when there is only one); positions are checked here, before
    any work, and must name at least two models."""
    if ensemble is True:
        return tuple(range(count)) if count > 1 else ()
    if not ensemble:
        return ()
    given = ",".join(map(str, ensemble))
    members = tuple(dict.fromkeys(ensemble))
    outside = [i for i in members if not 0 <= i < count]
    if outside:
        raise SegmergeError(
            f"--ensemble {given}: {outside[0]} is not a model position; the {count} models are 0..{count - 1}, "
            "in the order given"
        )
    if len(members) < 2:
        raise SegmergeError(f"--ensemble {given}: an ensemble needs at least two models")
    return members


def ensemble_row_name(members: Sequence[int], count: int) -> str:
    """``ensemble`` for every model; ``ensemble 1+2`` for some of them."""
    if list(members) == list(range(count)):
        return ENSEMBLE
    return f"{ENSEMBLE} {'+'.join(map(str, members))}"


def _panoptic_metrics(segmenters, names, dataset, config: EvaluationConfig) -> dict:
    if not config.panoptic:
        return {}
    from segmerge.metrics import PanopticMetric

    categories = getattr(dataset, "categories", None)
    if not categories:
        raise SegmergeError(
            "--panoptic needs a dataset with panoptic ground truth, e.g. cityscapes-panoptic:ROOT or synthetic:target"
        )
    able = [n for n, s in zip(names, segmenters, strict=True) if s.panoptic_head is not None]
    if not able:
        raise SegmergeError("--panoptic: none of the models has a panoptic output (e.g. a Mask2Former folder)")
    return {n: PanopticMetric(categories) for n in able}


def _panoptic_summary(metric) -> dict | None:
    if metric is None:
        return None
    metric.sync()
    return metric.compute().as_dict()


def metric_confusion(metric) -> np.ndarray:
    return np.asarray(metric.confusion_matrix, dtype=np.int64)


def _unique_names(segmenters: Sequence[Segmenter]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for s in segmenters:
        n = s.name
        if n in seen:
            seen[n] += 1
            n = f"{n}#{seen[s.name]}"
        else:
            seen[n] = 0
        out.append(n)
    return out
