#!/usr/bin/env python
"""Measure the benchmark's regime for one training setting, without a whole ``segmerge bench`` run.

What docs/benchmark.md's calibration table comes from: trains the oracle, the source-only and
the adapted SegFormers of the appearance regime (training seed 0 or ``--seed``; data seed 0)
from a shared start with the given learning rate, steps and pseudo-label threshold, through
the harness's own training functions, and prints and saves (JSON) each model's target mIoU, the adapted models'
pseudo-label coverage and accuracy on the labelled target training images, and target mIoU
along the straight line between pairs of models (a = 0, 0.1, ..., 1). Asserts nothing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/regime_calibration.py out.json \\
        --start src/segmerge_bench/zoo/shipped/shared_start.pt --lr 2e-4 --steps 1000 --threshold 0.6

Roles (``--roles``): oracle, source-only-A/B, uda-A/B, mic-A/B. ``--source-b`` replaces source B by
one of :data:`B_VARIANTS` (``synthia-view``: B as it was until 2026-12-02); ``--optics-shift F`` moves both
sources' lighting, blur and noise F times as far from the target's (``--optics-shift-b``: B's apart,
``--b-lighting-only``: B's lighting alone; :func:`stronger_optics`); ``--feature-distance`` adds
DAFormer's thing-class feature distance to UDA. ``--double`` also trains every role for twice the
steps (the convergence check). ``--split-lines`` adds lines that blend only the encoders or only the
decoders (where a barrier sits); ``--probe-steps`` first trains the start's head under its frozen
encoder (LP-FT's probe). Rendered data is cached in ``--cache`` (keyed by each domain's definition),
trained models in ``--models`` (keyed by the settings; a rerun reuses them and only scores).
The calibration runs of 2026-12-01 used warm-up 20 (``--warmup``) and one torch thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from segmerge.metrics import SemanticMetric
from segmerge_bench.benchmark.regime import confident_pixels
from segmerge_bench.benchmark.store import ArtifactStore, cache_key
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.synthetic.domains import APPEARANCE_B, TARGET, TARGET_FREQUENCIES, Camera, Domain, get_domain
from segmerge_bench.training import SharedStart, TrainConfig, train_source_only, train_target_oracle, train_uda
from segmerge_bench.training.data import TrainingData, normalise
from segmerge_bench.training.loss import upsample
from segmerge_bench.zoo.models import decoder_of, encoder_of, segment

PAIRS = (("uda-A", "uda-B"), ("source-only-A", "source-only-B"), ("uda-A", "mic-A"), ("oracle", "uda-A"))


#: Source B as it was until 2026-12-02: seen from SYNTHIA's higher, tilted camera, with smaller
#: objects. Self-training from it did not adapt; the variants below start from it.
SYNTHIA_VIEW_B = replace(APPEARANCE_B, camera=Camera(height=(2.2, 3.6), horizon=(0.27, 0.36)), object_scale=0.85)

#: Variants of source B as it was (:data:`SYNTHIA_VIEW_B`), each moving one part of its shift (or
#: all but two) to the target's, to find what kept UDA from B from adapting. The name is part of
#: the domain's name (``appearance-b-NAME``), which seeds its scenes; ``synthia-view`` is that B
#: itself (named ``appearance-b``, so it draws the scenes it drew).
B_VARIANTS = {
    "synthia-view": "source B as it was until 2026-12-02 (camera 2.2-3.6 m, horizon 0.27-0.36, objects x0.85)",
    "cam1": "camera half-way to the target's (height 1.5-2.4 m, horizon 0.34-0.42), objects x0.95",
    "present": "terrain, truck and train drawn, at the target's frequencies",
    "looks": "the target's class looks",
    "optics": "the target's blur, noise and lighting",
    "frequencies": "every class drawn, at the target's frequencies",
    "cam2": "a camera as far above the target's as source A's is below it (height 1.4-1.8 m, horizon 0.36-0.42), "
    "objects x0.92",
    "geometry": "the target's camera and object scale; looks, optics and classes as source B's",
    "geomlooks": "the target's camera and object scale, all classes, the target's looks: only optics and "
    "class frequencies differ",
}


def stronger_optics(domain: Domain, factor: float, lighting_only: bool = False) -> Domain:
    """``domain`` with its optics (lighting, blur, noise; ``lighting_only``: its lighting) ``factor``
    times as far from the target's: 1 is the domain itself, 0 the target's optics. Its name, and so
    its scenes' layouts, stay."""
    if factor == 1:
        return domain

    def away(mine: float, theirs: float, low: float = 0.0) -> float:
        return max(low, theirs + factor * (mine - theirs))

    light, reference = domain.lighting, TARGET.lighting
    lighting = replace(
        light,
        **{
            k: away(getattr(light, k), getattr(reference, k), 0.05)
            for k in ("brightness", "contrast", "saturation", "gamma")
        },
        cast=tuple(away(c, r, 0.05) for c, r in zip(light.cast, reference.cast, strict=True)),
        haze=min(1.0, away(light.haze, reference.haze)),
    )
    if lighting_only:
        return replace(domain, lighting=lighting)
    return replace(
        domain, lighting=lighting, blur=away(domain.blur, TARGET.blur), noise=away(domain.noise, TARGET.noise)
    )


def variant_of_b(name: str) -> Domain:
    """Source B with the change :data:`B_VARIANTS` names."""
    b, target = SYNTHIA_VIEW_B, TARGET
    if name == "synthia-view":
        return b
    absent = {k: TARGET_FREQUENCIES[k] for k in ("terrain", "truck", "train")}
    changes = {
        "cam1": {"camera": replace(b.camera, height=(1.5, 2.4), horizon=(0.34, 0.42)), "object_scale": 0.95},
        "present": {"absent_classes": (), "frequencies": {**b.frequencies, **absent}},
        "looks": {"looks": target.looks},
        "optics": {"blur": target.blur, "noise": target.noise, "lighting": target.lighting},
        "frequencies": {"absent_classes": (), "frequencies": dict(TARGET_FREQUENCIES)},
        "cam2": {"camera": replace(b.camera, height=(1.4, 1.8), horizon=(0.36, 0.42)), "object_scale": 0.92},
        "geometry": {"camera": replace(b.camera, height=(1.2, 1.4), horizon=(0.4, 0.46)), "object_scale": 1.0},
        "geomlooks": {
            "camera": replace(b.camera, height=(1.2, 1.4), horizon=(0.4, 0.46)),
            "object_scale": 1.0,
            "absent_classes": (),
            "frequencies": {**b.frequencies, **absent},
            "looks": target.looks,
        },
    }[name]
    return replace(b, name=f"appearance-b-{name}", **changes)


def rendered(cache: Path, domain: str | Domain, split: str, n: int) -> TrainingData:
    domain = get_domain(domain)
    name, drawn = domain.name, cache_key(**domain.to_dict())  # an edited domain is rendered again
    path = cache / f"{name}-{drawn}-{split}-{n}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return TrainingData(saved["images"], saved["labels"], f"{name}/{split}")
    data = TrainingData.from_samples(SyntheticDataset(domain, n=n, seed=0, split=split), True, f"{name}/{split}")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"images": data.images, "labels": data.labels}, path)
    return data


@torch.no_grad()
def probabilities(model, data: TrainingData, batch: int = 25):
    model.eval()
    for i in range(0, len(data), batch):
        pixels = normalise(data.images[i : i + batch])
        yield upsample(segment(model, pixels), pixels.shape[-2:]).softmax(1), data.labels[i : i + batch].long()


def confusion(model, data: TrainingData) -> SemanticMetric:
    """The model's confusion counts on ``data`` (one inference pass for every score read off it)."""
    metric = SemanticMetric(19, ignore_index=255)
    for probs, labels in probabilities(model, data):
        metric.update(probs.argmax(1), labels)
    return metric


def miou(model, data: TrainingData) -> float:
    return confusion(model, data).compute().miou


def interpolated(first, second, a: float, part: str = "all"):
    """``(1-a) first + a second``; ``part`` "encoder" or "decoder" blends only that part and keeps
    the other of ``first`` (where on the line a barrier sits)."""
    model = copy.deepcopy(first)
    one, two = first.state_dict(), second.state_dict()
    blended = {k for k in one if part == "all" or k.startswith("segformer.") == (part == "encoder")}
    model.load_state_dict(
        {k: one[k] * (1 - a) + two[k] * a if k in blended and one[k].is_floating_point() else one[k] for k in one}
    )
    return model


def probed(start: SharedStart, data: TrainingData, config: TrainConfig) -> SharedStart:
    """The start with its SegFormer decoder trained on ``data`` under the frozen encoder (the
    linear probe of LP-FT): fine-tunes then start from a trained head, not a random one."""
    model = start.model("segformer")
    for parameter in encoder_of(model).parameters():
        parameter.requires_grad_(False)
    trained, _ = train_source_only(model, data, config)
    decoders = {**start.decoders, "segformer": decoder_of(trained).state_dict()}
    return replace(start, decoders=decoders)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="JSON file for the results")
    parser.add_argument("--start", type=Path, required=True, help="a shared start (SharedStart.save)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--head-multiplier", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--threshold", type=float, default=0.968, help="pseudo-label confidence threshold")
    parser.add_argument("--scales", type=float, nargs=2, default=None, help="resize-and-crop range, e.g. 0.5 2.0")
    parser.add_argument("--double", action="store_true", help="also train every role for twice the steps")
    parser.add_argument("--roles", default="oracle,source-only-A,source-only-B,uda-A,uda-B")
    parser.add_argument("--images", type=int, default=600, help="training images per domain")
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where models train: cpu, cuda, cuda:N (scored on the cpu)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/segmerge-regime-data"))
    parser.add_argument("--source-b", choices=sorted(B_VARIANTS), default=None, help="a variant of source B")
    parser.add_argument(
        "--optics-shift",
        type=float,
        default=1.0,
        help="both sources' optics (lighting, blur, noise) this many times as far from the target's",
    )
    parser.add_argument("--optics-shift-b", type=float, default=None, help="source B's, when not --optics-shift")
    parser.add_argument("--b-lighting-only", action="store_true", help="source B's shift moves its lighting only")
    parser.add_argument("--seed", type=int, default=0, help="training seed (batches, mixing, decoder dropout)")
    parser.add_argument(
        "--pseudo-weighting", choices=("batch", "pixel"), default="batch", help="pseudo-label weights (UDA)"
    )
    parser.add_argument("--ema", type=float, default=0.99, help="the EMA teacher's alpha (UDA)")
    parser.add_argument(
        "--uda-from-source-only",
        action="store_true",
        help="start UDA from the source-only model of its source trained just before (a source warm-up)",
    )
    parser.add_argument(
        "--rare-classes", type=float, default=0.0, help="rare-class sampling temperature of UDA (DAFormer: 0.01)"
    )
    parser.add_argument(
        "--uda-steps", type=int, default=None, help="UDA steps, when not --steps (e.g. after a warm-up)"
    )
    parser.add_argument(
        "--feature-distance", type=float, default=0.0, help="DAFormer's thing-class feature distance weight (UDA)"
    )
    parser.add_argument(
        "--uda-head-multiplier",
        type=float,
        default=None,
        help="the head's rate multiplier in self-training, when not --head-multiplier (a warm-started head is trained)",
    )
    parser.add_argument(
        "--probe-steps", type=int, default=0, help="first train the start's head on pretrain images, encoder frozen"
    )
    parser.add_argument(
        "--split-lines", action="store_true", help="also lines that blend only the encoders or only the decoders"
    )
    parser.add_argument("--models", type=Path, default=None, help="keep trained models here and reuse them")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    test = rendered(args.cache, "target", "test", args.test_images)
    target = rendered(args.cache, "target", "train", args.images)
    domains = {"A": get_domain("appearance-a"), "B": variant_of_b(args.source_b) if args.source_b else APPEARANCE_B}
    shift_b = args.optics_shift if args.optics_shift_b is None else args.optics_shift_b
    domains = {
        "A": stronger_optics(domains["A"], args.optics_shift),
        "B": stronger_optics(domains["B"], shift_b, args.b_lighting_only),
    }
    sources = {s: rendered(args.cache, domains[s], "train", args.images) for s in "AB"}
    start = SharedStart.load(args.start)
    results: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    scores, logs, pseudo, lines, per_class = {}, {}, {}, {}, {}
    models = {}

    def config(steps: int, uda: bool = False) -> TrainConfig:
        return TrainConfig(
            steps=steps,
            lr=args.lr,
            decoder_lr_mult=args.uda_head_multiplier if uda and args.uda_head_multiplier else args.head_multiplier,
            warmup_steps=min(args.warmup, steps),
            pseudo_label_threshold=args.threshold,
            scales=tuple(args.scales) if args.scales else None,
            feature_distance=args.feature_distance,
            rare_class_temperature=args.rare_classes if uda else 0.0,
            pseudo_label_weighting=args.pseudo_weighting,
            ema_alpha=args.ema,
            threads=args.threads,
            device=args.device,
            seed=args.seed,
            progress=False,
        )

    if args.probe_steps:
        pretrain_images = rendered(args.cache, "pretrain", "train", 4 * args.images)
        start = probed(start, pretrain_images, config(args.probe_steps).replace(seed=0))
    unkeyed = ("out", "roles", "threads", "cache", "models", "double", "test_images")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in unkeyed}
    # options of self-training alone key only its models (and, unset, nothing: earlier keys stay)
    uda_only = {k: v for k in ("uda_head_multiplier",) if (v := settings.pop(k)) is not None}
    # a model is keyed by its own source's shift (none: keyed as before the options); the oracle by none
    shifts = {"A": {"optics_shift": settings.pop("optics_shift")}, "B": {"optics_shift": shift_b}}
    settings.pop("optics_shift_b")
    if settings.pop("b_lighting_only") and shift_b != 1:
        shifts["B"]["b_lighting_only"] = True
    shifts = {s: shift if shift["optics_shift"] != 1 else {} for s, shift in shifts.items()}

    def trained(role: str, steps: int, train, *arguments, **keywords):
        """``train(*arguments, **keywords)``'s model, or the one kept in ``--models`` by a run with these settings."""
        keyed = {**settings, **(uda_only if role.startswith(("uda", "mic")) else {})}
        keyed.update(shifts.get(role.rpartition("-")[2], {}))
        path = (
            args.models / f"{role}@{steps}-{cache_key(role=role, length=steps, settings=keyed)}.pt"
            if args.models
            else None
        )
        if path is None:
            return train(*arguments, **keywords)
        made: dict = {}

        def make(temporary: Path) -> None:
            made["model"], made["log"] = train(*arguments, **keywords)
            torch.save(made["model"].state_dict(), temporary)

        ArtifactStore(args.models).produce(path, make)  # written whole or not at all
        if made:
            return made["model"], made["log"]
        model = start.model("segformer")
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, {"reused": str(path)}

    for steps in (args.steps, 2 * args.steps) if args.double else (args.steps,):
        for role in args.roles.split(","):
            began = time.perf_counter()
            kind, _, source = role.rpartition("-")
            initial = start.model("segformer")
            if role == "oracle":
                model, log = trained(role, steps, train_target_oracle, initial, target, config(steps))
            elif kind == "source-only":
                model, log = trained(role, steps, train_source_only, initial, sources[source], config(steps))
            elif kind in ("uda", "mic"):
                method = "mic" if kind == "mic" else "dacs"
                if args.uda_from_source_only:
                    if f"source-only-{source}" not in models:
                        raise SystemExit(f"--uda-from-source-only: put source-only-{source} before {role} in --roles")
                    initial = copy.deepcopy(models[f"source-only-{source}"])
                uda_steps = steps if args.uda_steps is None else args.uda_steps * steps // args.steps
                model, log = trained(
                    role,
                    steps,
                    train_uda,
                    initial,
                    sources[source],
                    target,
                    config(uda_steps, uda=True),
                    method=method,
                )
                pseudo[f"{role}@{steps}"] = confident_pixels(probabilities(model, target), args.threshold)
            else:
                raise SystemExit(f"unknown role {role!r}")
            name = f"{role}@{steps}"
            counts = confusion(model, test)  # mIoU over 19 classes, and SYNTHIA -> Cityscapes' 16
            whole = counts.compute()
            scores[name], scores[f"{name} (16 classes)"] = whole.miou, counts.compute("synthia16").miou
            per_class[name] = {k: round(v, 2) for k, v in whole.per_class_iou().items()}
            logs[name] = {k: v for k, v in log.items() if k not in ("losses", "snapshots")}
            if steps == args.steps:
                models[role] = model
            print(
                f"{name}: mIoU {scores[name]:.2f}, over 16 classes {scores[f'{name} (16 classes)']:.2f} "
                f"({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
    for first, second in PAIRS:
        if first in models and second in models:
            for part in ("all", "encoder", "decoder") if args.split_lines else ("all",):
                line = [
                    round(miou(interpolated(models[first], models[second], i / 10, part), test), 2) for i in range(11)
                ]
                name = f"{first} -> {second}" + ("" if part == "all" else f" ({part} only)")
                lines[name] = line
                print(f"{name}: {line}", flush=True)
    results.update(scores=scores, per_class_iou=per_class, pseudo_labels=pseudo, lines=lines, logs=logs)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
