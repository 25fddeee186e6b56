"""How a training run is set: one frozen record, so a run is reproducible from it and a seed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from segmerge.errors import SegmergeError
from segmerge_bench.training.devices import parsed_device
from segmerge_bench.training.rare_classes import DAFORMER_MIN_SHARE

SCHEDULES = ("poly", "cosine")
PSEUDO_LABEL_WEIGHTINGS = ("batch", "pixel")


@dataclass(frozen=True)
class TrainConfig:
    """Settings shared by every training loop (pre-training, source-only, UDA, oracle).

    Optimiser and schedule follow DAFormer (AdamW, weight decay 0.01, the decoder at 10x
    the encoder's learning rate, linear warm-up then polynomial decay with power 1), scaled
    to a tiny model trained for hundreds rather than 40k steps: larger learning rates, a
    short warm-up, and an EMA teacher at alpha 0.99 (DAFormer's 0.999 would average over
    more steps than a short run has). ``pseudo_label_threshold`` is DAFormer's 0.968.
    """

    steps: int = 400
    lr: float = 1e-3
    decoder_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_steps: int = 20
    schedule: str = "poly"
    batch_size: int = 8
    seed: int = 0
    flip: bool = True
    ema_alpha: float = 0.99
    pseudo_label_threshold: float = 0.968
    #: Random rescaling of labelled batches by a factor in (low, high), then crop/pad back (mmseg's
    #: resize-and-crop, which DAFormer trains with at 0.5-2.0); None: no rescaling.
    scales: tuple[float, float] | None = None
    #: Colour jitter and blur on self-training's mixed images, as DACS and DAFormer do.
    strong_augment: bool = True
    #: Weight of DAFormer's thing-class feature distance to the start's encoder in self-training
    #: (:mod:`~segmerge_bench.training.feature_distance`; DAFormer: 0.005); 0 leaves it out.
    feature_distance: float = 0.0
    #: How self-training weights its pseudo-labels: ``"batch"`` (DAFormer: every pixel by the
    #: batch's share of confident pixels) or ``"pixel"`` (1 on confident pixels, 0 elsewhere).
    pseudo_label_weighting: str = "batch"
    #: DAFormer's rare-class sampling of labelled batches (:mod:`~segmerge_bench.training.rare_classes`):
    #: its temperature (DAFormer: 0.01); 0 draws images uniformly. ``rare_class_min_share``: the
    #: share of an image a class must cover for the image to be drawn for it (DAFormer's 3000
    #: pixels of a GTA5 label).
    rare_class_temperature: float = 0.0
    rare_class_min_share: float = DAFORMER_MIN_SHARE
    threads: int = 2
    #: Where the model trains: ``"cpu"`` (the tested path), ``"cuda"``, ``"cuda:1"``, ... Batches,
    #: masks and mixes are drawn on the CPU from the run's generators and moved there; the trained
    #: model comes back on the CPU. Dropout draws from the device's own generator, so a model trained
    #: on a GPU is another draw of the same training, not the CPU model's bits.
    device: str = "cpu"
    deterministic: bool = True
    progress: bool = True
    description: str = ""
    #: Steps (counted from 1) after which a copy of the model's state is kept in the log's
    #: ``snapshots``: checkpoints along one run, for learning curves and merges along a run.
    snapshots: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SegmergeError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise SegmergeError(f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        if self.schedule not in SCHEDULES:
            raise SegmergeError(
                f"TrainConfig.schedule {self.schedule!r} is unknown; choose one of {', '.join(SCHEDULES)}"
            )
        if any(isinstance(s, bool) or not isinstance(s, int) or not 0 < s <= self.steps for s in self.snapshots):
            raise SegmergeError(f"TrainConfig.snapshots must be steps in 1..{self.steps}, got {self.snapshots!r}")
        if self.scales is not None and not (len(self.scales) == 2 and 0 < self.scales[0] <= self.scales[1]):
            raise SegmergeError(f"TrainConfig.scales must be (low, high) with 0 < low <= high, got {self.scales!r}")
        parsed_device(self.device, "TrainConfig.device")
        if not self.lr > 0 or not self.decoder_lr_mult > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise SegmergeError("TrainConfig: lr and decoder_lr_mult must be > 0, weight_decay and warmup_steps >= 0")
        if self.pseudo_label_weighting not in PSEUDO_LABEL_WEIGHTINGS:
            raise SegmergeError(
                f"TrainConfig.pseudo_label_weighting {self.pseudo_label_weighting!r} is unknown; "
                f"choose one of {', '.join(PSEUDO_LABEL_WEIGHTINGS)}"
            )
        if not self.rare_class_temperature >= 0 or not 0 <= self.rare_class_min_share < 1:
            raise SegmergeError(
                "TrainConfig: rare_class_temperature must be >= 0 and rare_class_min_share in [0, 1), got "
                f"{self.rare_class_temperature!r} and {self.rare_class_min_share!r}"
            )
        if not self.feature_distance >= 0:
            raise SegmergeError(f"TrainConfig.feature_distance must be >= 0, got {self.feature_distance!r}")
        if not 0.0 <= self.ema_alpha < 1.0:
            raise SegmergeError(f"TrainConfig.ema_alpha must be in [0, 1), got {self.ema_alpha!r}")
        if not 0.0 < self.pseudo_label_threshold < 1.0:
            raise SegmergeError(
                f"TrainConfig.pseudo_label_threshold must be in (0, 1), got {self.pseudo_label_threshold!r}"
            )

    def replace(self, **changes) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)
