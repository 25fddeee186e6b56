"""SYNTHIA-RAND-CITYSCAPES (Ros et al. 2016): 9,400 synthetic frames, a UDA source.

Layout, as SYNTHIA_RAND_CITYSCAPES unpacks::

    {root}/RGB/0000000.png ...
    {root}/GT/LABELS/0000000.png ...   (16-bit, 3-channel PNGs)

The label PNGs hold the SYNTHIA class id in their first channel (R) and an instance id in
the second. Reference code reads the class as ``cv2.imread(f, IMREAD_UNCHANGED)[:, :, -1]``
(DAFormer; cv2 orders channels BGR, so the last is R) or ``imageio.imread(f,
format='PNG-FI')[:, :, 0]`` (ADVENT-derived loaders); both agreeing implies three channels with the
class in R. Pillow alone would keep only the high byte of each 16-bit sample (all zeros
for ids < 256), hence :func:`read_png_channels`. Ids are mapped to trainIds by
:data:`SYNTHIA_ID_TO_TRAIN_ID` (the DAFormer/MIC table); where DAFormer/MIC's
``tools/convert_datasets/synthia.py`` has written ``GT/LABELS/X_labelTrainIds.png``, that
is used instead (and spares decoding the 16-bit PNG).

Split: the release has none; every frame is used whatever ``split`` says. Results on
Cityscapes of SYNTHIA-trained models are reported over 16 (or 13) classes, see
:data:`SYNTHIA_16_TRAIN_IDS`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segmerge.datasets.base import PairedDataset, is_converted, match_by_file_name, register
from segmerge.datasets.images import read_png_channels
from segmerge.labels import SYNTHIA_ID_TO_TRAIN_ID, map_ids

LAYOUT = "{root}/RGB/*.png with {root}/GT/LABELS/*.png of the same file names (16-bit PNGs, class id in channel 0)"
CLASS_CHANNEL = 0


def read_synthia_ids(path: Path) -> np.ndarray:
    """The raw SYNTHIA class ids of a GT/LABELS PNG (uint16 [H, W])."""
    return read_png_channels(path)[:, :, CLASS_CHANNEL]


@register("synthia")
class SynthiaDataset(PairedDataset):
    """SYNTHIA-RAND-CITYSCAPES frames with class ids mapped to Cityscapes trainIds."""

    def __init__(self, root: Path | str, split: str = "all") -> None:
        self.root, self.split = Path(root), split
        super().__init__(match_by_file_name(self.root, "RGB", "GT/LABELS", LAYOUT))

    def decode_label(self, path: Path) -> np.ndarray:
        if is_converted(path):
            return super().decode_label(path)
        return map_ids(read_synthia_ids(path), SYNTHIA_ID_TO_TRAIN_ID)

    def __repr__(self) -> str:
        return f"SynthiaDataset(root={str(self.root)!r}, {len(self)} samples, all splits)"
