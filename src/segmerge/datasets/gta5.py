"""GTA5 ("Playing for Data", Richter et al. 2016): 24,966 synthetic frames, a UDA source.

Layout, as the ten image and label archives unpack::

    {root}/images/00001.png ... 24966.png
    {root}/labels/00001.png ... 24966.png   (palette PNGs whose indices are Cityscapes labelIds)

Labels are mapped labelIds -> trainIds with the Cityscapes table; where DAFormer/MIC's
``tools/convert_datasets/gta.py`` has written ``labels/X_labelTrainIds.png``, that is used.

Split: every image is used whatever ``split`` says. The UDA literature (DAFormer, HRDA,
MIC) trains on all 24,966 frames and defines no validation subset; the dataset's own
``split.mat`` (trainIds/valIds/testIds, used e.g. by CyCADA) is not read here.

A few GTA5 frames have an image and a label of different sizes; they are reported as
errors naming both files rather than silently resized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segmerge.datasets.base import PairedDataset, is_converted, match_by_file_name, read_label_ids, register
from segmerge.labels import LABEL_ID_TO_TRAIN_ID

LAYOUT = "{root}/images/*.png with {root}/labels/*.png of the same file names (Cityscapes labelIds)"


@register("gta5")
class GTA5Dataset(PairedDataset):
    """GTA5 frames with labelIds mapped to Cityscapes trainIds; ``split`` is ignored (see module doc)."""

    def __init__(self, root: Path | str, split: str = "all") -> None:
        self.root, self.split = Path(root), split
        super().__init__(match_by_file_name(self.root, "images", "labels", LAYOUT))

    def decode_label(self, path: Path) -> np.ndarray:
        if is_converted(path):
            return super().decode_label(path)
        return read_label_ids(path, LABEL_ID_TO_TRAIN_ID)

    def __repr__(self) -> str:
        return f"GTA5Dataset(root={str(self.root)!r}, {len(self)} samples, all splits)"
