"""DAFormer's rare-class sampling: draw labelled images by class, rare classes more often.

Self-training learns the target's classes from the teacher's pseudo-labels, and a class the
source shows on few pixels is predicted rarely, pseudo-labelled more rarely still, and can
vanish from the student (a source-B model adapted without it lost person and bus). DAFormer
(lhoyer/DAFormer, ``mmseg/datasets/uda_dataset.py``, ``get_rcs_class_probs`` and
``UDADataset.get_rare_class_sample``) counters this by drawing each source image in two
steps: first a class ``c`` with probability ``softmax((1 - f_c) / T)``, ``f_c`` the class's
share of all labelled pixels and ``T`` a temperature (DAFormer: 0.01), then uniformly one of
the images that hold more than a minimum of ``c``'s pixels (DAFormer: 3000 pixels of a
full-size GTA5 label, 1914x1052, i.e. 0.15% of the image, counted by
``tools/convert_datasets/gta.py``). Classes no image holds that much of are never drawn.
DAFormer's crop retries (``min_crop_ratio``) have no counterpart: the benchmark does not crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from segmerge.errors import SegmergeError

DAFORMER_MIN_SHARE = 3000 / (1914 * 1052)
"""DAFormer's ``min_pixels`` (3000) as a share of the GTA5 labels it counts them on."""


@dataclass(frozen=True)
class RareClassSampler:
    """``classes``: the drawable class ids; ``probabilities``: their draw probabilities;
    ``holders``: per class, the indices of the images that hold enough of it."""

    classes: tuple[int, ...]
    probabilities: torch.Tensor
    holders: tuple[torch.Tensor, ...]

    @classmethod
    def of(
        cls,
        labels: torch.Tensor,
        temperature: float,
        min_share: float = DAFORMER_MIN_SHARE,
        num_classes: int = 19,
        name: str = "",
    ) -> RareClassSampler:
        """The sampler for uint8 trainId ``labels`` [N,H,W] (ids >= ``num_classes`` are ignored)."""
        if not temperature > 0:
            raise SegmergeError(f"rare-class sampling needs a temperature > 0, got {temperature!r}")
        counts = torch.stack([torch.bincount(label.flatten().long(), minlength=256)[:num_classes] for label in labels])
        enough = counts > min_share * labels[0].numel()
        classes = [c for c in range(num_classes) if enough[:, c].any()]
        if not classes:
            raise SegmergeError(
                f"{name or 'training data'}: no class covers more than {min_share:.2%} of any image, "
                "so rare-class sampling has nothing to draw; lower the minimum share or turn it off"
            )
        totals = counts[:, classes].sum(0).double()
        frequencies = totals / counts.sum()
        probabilities = torch.softmax((1 - frequencies) / temperature, dim=0)
        holders = tuple(torch.nonzero(enough[:, c]).flatten() for c in classes)
        return cls(tuple(classes), probabilities, holders)

    def __call__(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of ``batch_size`` images, each drawn for a class drawn first."""
        drawn = torch.multinomial(self.probabilities, batch_size, replacement=True, generator=generator)  # CPU
        picks = []
        for c in drawn.tolist():
            holders = self.holders[c]
            picks.append(holders[int(torch.randint(len(holders), (1,), generator=generator, device="cpu"))])
        return torch.stack(picks)
