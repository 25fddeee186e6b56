#!/usr/bin/env python
"""How long ``segmerge eval`` takes per Cityscapes image with a MiT-B5 DAFormer (random weights).

Prints figures; asserts nothing. The network is segmerge's built-in DAFormer (MiT-B5 encoder,
sep-ASPP head, 256 channels, 19 classes, ~85M parameters), built with random weights, run
through the one prediction path (:func:`segmerge.evaluation.prediction.predict`) on random
1024x2048 images, in two settings:

* ``slide``: sliding window, 1024x1024 crops every 512x512 (3 windows per image), HRDA/MIC's
  Cityscapes test setting (lhoyer/HRDA ``test_cfg=dict(mode='slide', crop_size=[1024, 1024],
  stride=[512, 512])``) - the DAFormer network at full resolution;
* ``daformer``: DAFormer's own test setting, the default segmerge picks for a DAFormer
  checkpoint: the image rescaled to fit 1024x512, one whole-image pass;
* ``hrda`` (not run by default: minutes per image on a CPU): the built-in HRDA network (the
  same DAFormer head plus a scale attention head, context pass at 0.5 and 512x512 detail
  crops) under HRDA's test setting, sliding 1024x1024 windows every 512x512.

    .venv/bin/python benchmarks/eval_speed.py                 # 1 image each, CPU
    .venv/bin/python benchmarks/eval_speed.py --images 2 --device cuda --amp --settings slide,daformer,hrda

The first image of a setting includes warm-up; with ``--images 2`` or more the first is
reported apart and the rest averaged.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch


def build_daformer_b5(num_classes: int = 19) -> torch.nn.Module:
    from segmerge.segmenters.networks.heads import ASPPWrapper, DAFormerHead, EncoderDecoder
    from segmerge.segmenters.networks.mit import VARIANTS, MiTConfig, MixVisionTransformer

    dims, depths = VARIANTS["mit_b5"]
    config = MiTConfig(dims, depths, (1, 2, 5, 8), (8, 4, 2, 1), tuple(4 * d for d in dims), (7, 3, 3, 3), (4, 2, 2, 2))
    fuse = ASPPWrapper(4 * 256, 256, [(1, False), (6, True), (12, True), (18, True)], pool=False)
    head = DAFormerHead(dims, (256,) * 4, fuse, 256, num_classes)
    return EncoderDecoder(MixVisionTransformer(config), head, num_classes).eval()


def build_hrda_b5(num_classes: int = 19) -> torch.nn.Module:
    from segmerge.segmenters.networks.heads import ConvModule, DAFormerHead
    from segmerge.segmenters.networks.hrda import HRDAEncoderDecoder

    daformer = build_daformer_b5(num_classes)
    dims = daformer.backbone.config.dims
    attention = DAFormerHead(dims, (256,) * 4, ConvModule(4 * 256, 256, 1), 256, num_classes)
    return HRDAEncoderDecoder(daformer.backbone, daformer.decode_head, attention, num_classes).eval()


def machine() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    return (
        f"{platform.processor() or platform.machine()}, {cores} usable cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), GPU: {gpu}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    from segmerge.evaluation.prediction import InferenceConfig, predict
    from segmerge.segmenters.base import Segmenter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--batch-size", type=int, default=3, help="windows per forward pass (slide)")
    parser.add_argument("--settings", default="slide,daformer")
    args = parser.parse_args()

    torch.manual_seed(0)
    daformer = Segmenter("daformer-b5", build_daformer_b5().to(args.device), 19, lambda x: x)
    print(f"machine: {machine()}")
    print(f"network: DAFormer sep-ASPP on MiT-B5, {daformer.num_parameters / 1e6:.1f}M parameters, random weights")
    slide = InferenceConfig("slide", (1024, 1024), (512, 512), args.batch_size, args.device, args.amp)
    settings = {
        "slide": slide,
        "daformer": InferenceConfig("whole", batch_size=1, device=args.device, amp=args.amp, scale=(1024, 512)),
        "hrda": InferenceConfig("slide", (1024, 1024), (512, 512), 1, args.device, args.amp),
    }
    images = torch.randint(0, 256, (args.images, 1024, 2048, 3), dtype=torch.uint8)
    for name in args.settings.split(","):
        config = settings[name]
        segmenter = daformer
        if name == "hrda":
            segmenter = Segmenter("hrda-b5", build_hrda_b5().to(args.device), 19, lambda x: x)
        times = []
        for i in range(args.images):
            began = time.perf_counter()
            for _ in predict([segmenter], images[i : i + 1], config):
                pass
            times.append(time.perf_counter() - began)
        rest = f"; then {sum(times[1:]) / len(times[1:]):.2f} s/image over {len(times) - 1}" if len(times) > 1 else ""
        print(f"{name:>9}: first image {times[0]:.2f} s{rest}  ({config})")
    print(f"load average after: {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")


if __name__ == "__main__":
    main()
