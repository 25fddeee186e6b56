"""A synthetic domain as an evaluation/training data set, shaped like segmerge's readers.

:class:`SyntheticDataset` renders on demand (nothing touches the disk) and hands out the
same :class:`~segmerge.datasets.base.Sample` the Cityscapes/GTA5/SYNTHIA readers do, so
evaluation, sharding and ``torchrun`` splitting work unchanged. Splits draw from disjoint
ranges of scene indices (train from 0, val from 10^7, test from 2 x 10^7), so a model can
never be scored on a scene it was trained on, whatever ``n`` is (up to 10^7 per split).

``SyntheticDataset.from_spec`` parses the CLI form ``DOMAIN[,n=N][,seed=S]``
(``target`` or ``appearance-a,n=500,seed=3``); the class is not registered as a dataset
kind by importing this module (that would change the kinds every reader test sees):
``segmerge.datasets.register("synthetic")(SyntheticDataset)`` makes ``synthetic:...``
specs work.
"""

from __future__ import annotations

from segmerge.datasets.base import PanopticLabel, Sample, SegmentationDataset, register
from segmerge.errors import SegmergeError
from segmerge.labels import CITYSCAPES_PANOPTIC_CATEGORIES
from segmerge_bench.synthetic.domains import Domain, get_domain
from segmerge_bench.synthetic.scenes import render


class SyntheticPanoptic(PanopticLabel):
    """The readers' :class:`PanopticLabel` (``ids``, ``segments_info``) that also unpacks as
    the tuple ``ids, segments_info = sample.panoptic``."""

    def __iter__(self):
        return iter((self.ids, self.segments_info))


SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 10_000_000, "test": 20_000_000}
"""First scene index of each split; a split holds at most 10^7 scenes."""
SPLIT_SIZE = 10_000_000
DEFAULT_SIZES: dict[str, int] = {"train": 2000, "val": 500, "test": 500}
"""Sizes ``synthetic:DOMAIN`` specs get when they give no ``n``."""


@register("synthetic")
class SyntheticDataset(SegmentationDataset):
    """``n`` scenes of ``domain`` for ``seed`` in ``split``; sample ``i`` is scene
    ``SPLIT_OFFSETS[split] + i``. Samples carry the panoptic ground truth too
    (``sample.panoptic``: ids and segments_info, category ids being trainIds)."""

    #: Segments carry Cityscapes trainIds as category ids, as the Cityscapes panoptic reader's do.
    categories = CITYSCAPES_PANOPTIC_CATEGORIES

    kind = "synthetic"

    def __init__(self, domain: Domain | str, n: int, seed: int = 0, split: str = "train") -> None:
        self.domain = get_domain(domain)
        if split not in SPLIT_OFFSETS:
            raise SegmergeError(f"synthetic split {split!r} is unknown; valid splits: {', '.join(SPLIT_OFFSETS)}")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= SPLIT_SIZE:
            raise SegmergeError(f"synthetic data set size must be an integer in 0..{SPLIT_SIZE}, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SegmergeError(f"synthetic seed must be a non-negative integer, got {seed!r}")
        self.n, self.seed, self.split = n, seed, split

    @classmethod
    def from_spec(cls, argument: str, split: str) -> SyntheticDataset:
        """``DOMAIN[,n=N][,seed=S]`` (e.g. ``target,n=500``); n defaults per split (DEFAULT_SIZES)."""
        name, *options = [part.strip() for part in argument.split(",")]
        values: dict[str, int] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key not in ("n", "seed") or not value.isdigit():
                raise SegmergeError(f"synthetic spec option {option!r} must be n=INT or seed=INT")
            values[key] = int(value)
        if split not in SPLIT_OFFSETS:
            raise SegmergeError(f"synthetic split {split!r} is unknown; valid splits: {', '.join(SPLIT_OFFSETS)}")
        return cls(name, values.get("n", DEFAULT_SIZES[split]), values.get("seed", 0), split)

    def scene_index(self, index: int) -> int:
        """The scene index (argument of :func:`render`) of sample ``index``."""
        return SPLIT_OFFSETS[self.split] + index

    @property
    def names(self) -> list[str]:
        return [self.sample_name(i) for i in range(self.n)]

    def sample_name(self, index: int) -> str:
        return f"{self.domain.name}/{self.split}/{index:06d}"

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Sample:
        scene = render(self.domain, self.seed, self.scene_index(index))
        name = self.sample_name(index)
        panoptic = SyntheticPanoptic(scene.panoptic_ids.astype("int64"), [dict(s) for s in scene.segments])
        return Sample(name, scene.image, scene.label.astype("int64"), f"synthetic:{name}", panoptic=panoptic)

    def __repr__(self) -> str:
        return (
            f"SyntheticDataset(domain={self.domain.name!r}, split={self.split!r}, seed={self.seed}, "
            f"{len(self)} samples)"
        )
