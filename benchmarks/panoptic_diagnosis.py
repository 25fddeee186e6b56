#!/usr/bin/env python
"""What limits a panoptic model's PQ on things: its semantic map, its centres or its offsets?

Scores a panoptic checkpoint on the target's test split (data seed 0) as it predicts, and
again with parts of its prediction replaced by the ground truth's: the semantic map, the
centre heatmap (a Gaussian of ``--sigma`` pixels at each instance's centre of mass), the
offsets. Where PQ things jumps when one part is replaced, that part is what holds it down.

``--train-oracle STEPS`` first trains a panoptic model on the labelled target itself, from
the shipped shared start with the benchmark's fine-tune settings (the panoptic oracle: what
the architecture reaches at this image size with no domain shift), and diagnoses that.
Prints and saves (JSON) PQ, PQ things, PQ stuff and PQ per thing class for each case, over
all 19 classes or, with ``--classes synthia16``, over SYNTHIA's 16 as claim 3 is scored in the
appearance regime (EDAPS's rule: the whole ground truth, the mean over the 16; predicted segments
of the other three count only for those classes). Asserts nothing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/panoptic_diagnosis.py out.json \\
        --checkpoint src/segmerge_bench/zoo/shipped/appearance-panoptic-uda-b.pth
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/panoptic_diagnosis.py oracle.json --train-oracle 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from segmerge.labels import IGNORE_INDEX, SYNTHIA_16_TRAIN_IDS, THING_TRAIN_IDS, cityscapes_categories
from segmerge.metrics import PanopticMetric
from segmerge_bench.benchmark.models import SHIPPED_START, shipped_path
from segmerge_bench.benchmark.scoring import void_outside
from segmerge_bench.benchmark.settings import FINE_TUNE
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.synthetic.domains import TARGET
from segmerge_bench.training import SharedStart, TrainingData
from segmerge_bench.training.data import normalise
from segmerge_bench.training.panoptic import train_panoptic_supervised
from segmerge_bench.training.panoptic_loss import PanopticLossWeights, instance_targets
from segmerge_bench.zoo.models import load_model, save_model
from segmerge_bench.zoo.panoptic_postprocess import PostprocessConfig, find_centers, fuse, group_pixels

#: (semantic map, centres, offsets): each from the model or from the ground truth.
CASES = {
    "as predicted": ("model", "model", "model"),
    "true semantic map": ("truth", "model", "model"),
    "true semantic map and centres": ("truth", "truth", "model"),
    "true semantic map and offsets": ("truth", "model", "truth"),
    "true centres and offsets (instances)": ("model", "truth", "truth"),
}


def rendered(split: str, n: int) -> TrainingData:
    samples = SyntheticDataset(TARGET, n=n, seed=0, split=split)
    return TrainingData.from_samples(samples, name=f"target/{split}", instances=True)


def train_oracle(steps: int, weights: PanopticLossWeights, images: int, save: Path | None):
    start = SharedStart.load(shipped_path(SHIPPED_START))
    began = time.perf_counter()
    model, _ = train_panoptic_supervised(
        start.model("panoptic"), rendered("train", images), FINE_TUNE.replace(steps=steps), weights
    )
    print(f"trained the panoptic oracle for {steps} steps in {time.perf_counter() - began:.0f} s")
    if save is not None:
        save_model(model, save)
    return model.eval()


def diagnose(model, test: TrainingData, sigma: float, config: PostprocessConfig) -> dict[str, dict]:
    outputs = []
    with torch.no_grad():
        for i in range(0, len(test.images), 16):
            out = model(normalise(test.images[i : i + 16]))
            outputs += list(zip(out.semantic, out.center, out.offset, strict=True))
    size = tuple(test.labels.shape[-2:])
    things = torch.tensor(sorted(THING_TRAIN_IDS))
    truths = test.panoptic_truths

    def resize(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False)[0]

    scored = test.scored_classes
    results = {}
    for case, (semantic_from, centres_from, offsets_from) in CASES.items():
        quality = PanopticMetric([c for c in cityscapes_categories() if scored is None or c["id"] in scored])
        for i, (semantic, center, offset) in enumerate(outputs):
            true = instance_targets(test.instances[i : i + 1], test.labels[i : i + 1], sigma)
            if semantic_from == "model":
                classes = resize(semantic).argmax(0)
            else:
                classes = test.labels[i].long().clone()
                classes[classes == IGNORE_INDEX] = 0  # void in the truth: never scored
            heatmap = resize(center)[0] if centres_from == "model" else true.center[0, 0]
            offsets = resize(offset) if offsets_from == "model" else true.offset[0]
            instances = group_pixels(find_centers(heatmap, config), offsets, torch.isin(classes, things))
            ids, segments = fuse(classes, instances, THING_TRAIN_IDS, config.stuff_area)
            quality.update(*truths[i], *void_outside(ids, segments, scored))
        result = quality.compute()
        results[case] = {
            "PQ": round(result.pq, 2),
            "PQ things": round(result.pq_things, 2),
            "PQ stuff": round(result.pq_stuff, 2),
            "PQ per thing class": {c.name: round(c.pq, 1) for c in result.per_class if c.isthing},
        }
        print(f"{case:40s} PQ {result.pq:5.1f}  things {result.pq_things:5.1f}  stuff {result.pq_stuff:5.1f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="JSON file for the results")
    parser.add_argument("--checkpoint", type=Path, help="a panoptic .pth (default: the shipped adapted one)")
    parser.add_argument("--train-oracle", type=int, metavar="STEPS", help="train a panoptic oracle and diagnose it")
    parser.add_argument("--save-oracle", type=Path, help="where to keep the trained oracle")
    parser.add_argument("--offset-weight", type=float, default=PanopticLossWeights().offset)
    parser.add_argument("--sigma", type=float, default=PanopticLossWeights().sigma, help="centre Gaussian, pixels")
    parser.add_argument("--images", type=int, default=600, help="target training images (--train-oracle)")
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--classes", choices=("all", "synthia16"), default="all", help="the classes PQ averages over")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train_oracle:
        weights = PanopticLossWeights(offset=args.offset_weight, sigma=args.sigma)
        model = train_oracle(args.train_oracle, weights, args.images, args.save_oracle)
        what = f"panoptic oracle, {args.train_oracle} steps, offset weight {args.offset_weight:g}"
    else:
        checkpoint = args.checkpoint or shipped_path("appearance-panoptic-uda-b.pth")
        model, what = load_model(checkpoint), str(checkpoint)
    test = rendered("test", args.test_images)
    if args.classes == "synthia16":
        test = test.over_classes(SYNTHIA_16_TRAIN_IDS)
    results = diagnose(model, test, args.sigma, PostprocessConfig())
    args.out.write_text(json.dumps({"model": what, "classes": args.classes, "cases": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
