"""Synthetic street-scene domains: what a GTA5, a SYNTHIA or a Cityscapes *is*, as data.

A :class:`Domain` holds every knob that tells one data set's images apart from another's
while the classes mean the same: per-class palettes and textures, global lighting (white
balance, contrast, gamma), optics (blur, sensor noise), the camera (height, where the
horizon falls) and the scene statistics (object sizes, how many cars, persons, poles...
an image holds, and which classes a data set never annotates). A domain is plain data:
``Domain.to_dict`` / ``Domain.from_dict`` round-trip through JSON or YAML, so a new domain
is a file (``{"base": "target", "name": "dusk", "lighting": {"brightness": 0.6}}``),
not code.

Built-in domains (:data:`DOMAINS`), each a stand-in for a real data set of the
GTA5/SYNTHIA -> Cityscapes unsupervised domain adaptation benchmarks:

``target``
    Cityscapes: muted, realistic colours (grey roads, beige paving, dull-green trees,
    overcast sky), moderate sensor noise and blur, camera at car height with the ego
    vehicle's bonnet at the bottom of the frame (labelled ignore, as in Cityscapes).
``pretrain``
    A neutral domain whose appearance is *re-drawn for every image* (random palettes,
    textures, lighting, blur, noise, camera): nothing about colour carries over between
    images, so a model pre-trained on it learns shape and layout but no domain's colours.
    It stands in for ImageNet pre-training, the common start of every adapted model.

Two regimes of source domains, each a pair that the merging benchmark adapts to ``target``:

(a) appearance shift, the same classes and shapes rendered differently, as GTA5 and
SYNTHIA differ from Cityscapes:

``appearance-a``
    GTA5-like: saturated colours, warm cast, high contrast, sharp and clean, a low camera
    (horizon near the middle of the frame), larger objects, many cars and trees, few
    persons.
``appearance-b``
    SYNTHIA-like: cold cast, washed-out, blurrier and noisier, many persons, riders and
    poles, fewer cars; never draws terrain, truck or train (SYNTHIA has no such classes).
    Its camera and object sizes are the target's: a source B seen from SYNTHIA's higher,
    tilted camera with smaller objects was tried first, and self-training from it did not
    adapt at any setting measured (docs/benchmark.md, "UDA from source B"); with the
    target's geometry it does, as it does from source A.

(b) class-specific shift, target-like images in which each source gets *different*
classes wrong, so each source model is right on different classes of the target:

``classes-a``
    Things (cars, persons, riders, two-wheelers, trucks, buses) look as in the target;
    the surroundings mislead: sidewalk and terrain swap looks, vegetation is autumn
    orange, buildings and walls swap looks, fences are painted.
``classes-b``
    The reverse: road, sidewalk, buildings, vegetation, terrain look as in the target;
    things mislead: cars in the greens and olives of the target's vegetation and terrain,
    persons and riders in bright pastels, trucks and buses swap looks, two-wheelers are
    brightly painted.

Both sources of a regime share the target's lighting and geometry except for the shift
they stand for, and each shifts a comparable number of classes, so neither source (nor
any way of combining their models) is favoured by construction.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segmerge.errors import SegmergeError
from segmerge.labels import CITYSCAPES_CLASSES, THING_TRAIN_IDS

TRAIN_ID_NAMES: tuple[str, ...] = CITYSCAPES_CLASSES
"""The 19 Cityscapes classes in trainId order (road = 0 ... bicycle = 18)."""

TRAIN_ID: dict[str, int] = {name: i for i, name in enumerate(TRAIN_ID_NAMES)}
THING_NAMES: tuple[str, ...] = tuple(TRAIN_ID_NAMES[i] for i in THING_TRAIN_IDS)
"""Countable classes: each object gets its own instance id."""

FREQUENCY_KEYS: tuple[str, ...] = (
    "car",
    "truck",
    "bus",
    "train",
    "person",
    "rider",
    "bicycle",
    "motorcycle",
    "pole",
    "traffic sign",
    "traffic light",
    "vegetation",
    "terrain",
    "wall",
    "fence",
    "building",
)
"""What :attr:`Domain.frequencies` may set. Each is the expected number per image (a Poisson
mean) of: cars, trucks, buses, trams; persons, riders (each on a bicycle or motorcycle),
parked bicycles and motorcycles; bare poles, poles carrying a traffic sign, poles carrying a
traffic light; trees; grass verges (terrain); wall and fence runs. ``building`` is instead
the share (0..1) of the street front lined with buildings rather than tree lines."""

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassLook:
    """How one class is painted: a palette, per-object variation and a surface texture.

    ``colors``: the base RGB colours an object (an instance, a building, a tree) picks one
    of; ``jitter``: the standard deviation (0..255 scale) of each object's own colour offset.
    ``texture``: amplitude of the surface noise; ``grain``: 0 = large blotches (clouds,
    stains) .. 1 = fine grain (asphalt, foliage). ``stripes``: depth of periodic joints
    (paving slabs, floors, fence boards) every ``period`` metres of the surface.
    """

    colors: tuple[RGB, ...]
    jitter: float = 8.0
    texture: float = 6.0
    grain: float = 0.5
    stripes: float = 0.0
    period: float = 1.0

    def __post_init__(self) -> None:
        colors = tuple(tuple(int(round(c)) for c in rgb) for rgb in self.colors)
        if not colors or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colors):
            raise SegmergeError(f"class look colors must be a non-empty list of [r, g, b] in 0..255, got {self.colors}")
        object.__setattr__(self, "colors", colors)
        for name in ("jitter", "texture", "grain", "stripes", "period"):
            if float(getattr(self, name)) < 0:
                raise SegmergeError(f"class look {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.grain <= 1:
            raise SegmergeError(f"class look grain must be in 0..1, got {self.grain}")
        if self.period <= 0:
            raise SegmergeError(f"class look period must be > 0 metres, got {self.period}")


@dataclass(frozen=True)
class Lighting:
    """Global light and camera response, applied after the class colours.

    ``cast``: white-balance gains per RGB channel (warm > 1 in red, cold > 1 in blue).
    ``contrast`` and ``saturation`` scale around mid-grey / the pixel's grey; ``gamma``
    bends the tone curve (< 1 brightens shadows). ``haze``: how far distant surfaces fade
    towards the sky colour (0 none .. 1 fully at 100 m). ``jitter``: per-image standard
    deviation of log-brightness and log-contrast, the weather/time-of-day variation within
    a data set.
    """

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    haze: float = 0.1
    jitter: float = 0.08

    def __post_init__(self) -> None:
        object.__setattr__(self, "cast", tuple(float(c) for c in self.cast))
        if len(self.cast) != 3 or min(self.cast) <= 0:
            raise SegmergeError(f"lighting cast must be 3 positive gains, got {self.cast}")
        for name in ("brightness", "contrast", "gamma"):
            if getattr(self, name) <= 0:
                raise SegmergeError(f"lighting {name} must be > 0, got {getattr(self, name)}")
        if self.saturation < 0 or self.jitter < 0 or not 0 <= self.haze <= 1:
            raise SegmergeError("lighting saturation and jitter must be >= 0 and haze in 0..1")


@dataclass(frozen=True)
class Camera:
    """Where the camera sits: ``height`` range in metres above the road and the horizon's
    row as a ``horizon`` range of fractions of the image height (0 = top); each image draws
    both uniformly. ``hood``: share of the image height taken by the ego vehicle's bonnet at
    the bottom (labelled ignore, as Cityscapes' "ego vehicle"); 0 for none."""

    height: tuple[float, float] = (1.2, 1.5)
    horizon: tuple[float, float] = (0.38, 0.46)
    hood: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "height", _range(self.height, "camera height"))
        object.__setattr__(self, "horizon", _range(self.horizon, "camera horizon"))
        if self.height[0] <= 0.3 or self.height[1] > 20:
            raise SegmergeError(f"camera height must lie in 0.3..20 metres, got {self.height}")
        if self.horizon[0] < 0.05 or self.horizon[1] > 0.8:
            raise SegmergeError(f"camera horizon must lie in 0.05..0.8 of the image height, got {self.horizon}")
        if not 0 <= self.hood <= 0.2:
            raise SegmergeError(f"camera hood must be in 0..0.2 of the image height, got {self.hood}")


@dataclass(frozen=True)
class Domain:
    """One synthetic data set's appearance and scene statistics (see the module docstring).

    ``looks`` maps every class name of :data:`TRAIN_ID_NAMES` to its :class:`ClassLook`.
    ``blur``: gaussian sigma and ``noise``: sensor noise std (0..255 scale), both in pixels
    of a 96x192 image (scaled with the width for other sizes). ``object_scale`` multiplies
    the physical size of every object. ``frequencies``: see :data:`FREQUENCY_KEYS`.
    ``absent_classes``: names of classes this data set never draws (and so never labels).
    ``randomize``: 0 keeps the looks and lighting as given; 1 draws them at random for
    every image (the ``pretrain`` domain); in between blends the two.
    """

    name: str
    looks: Mapping[str, ClassLook]
    frequencies: Mapping[str, float]
    description: str = ""
    height: int = 96
    width: int = 192
    lighting: Lighting = field(default_factory=Lighting)
    blur: float = 0.5
    noise: float = 3.0
    camera: Camera = field(default_factory=Camera)
    object_scale: float = 1.0
    absent_classes: tuple[str, ...] = ()
    randomize: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise SegmergeError(
                f"domain name {self.name!r} must be letters, digits, '-' or '.' (it names files; no '_' or '/')"
            )
        missing = [n for n in TRAIN_ID_NAMES if n not in self.looks]
        unknown = [n for n in self.looks if n not in TRAIN_ID]
        if missing or unknown:
            raise SegmergeError(
                f"domain {self.name!r}: looks must give every class exactly once; missing {missing}, unknown {unknown}"
            )
        looks = {
            n: self.looks[n] if isinstance(self.looks[n], ClassLook) else ClassLook(**self.looks[n])
            for n in TRAIN_ID_NAMES
        }
        object.__setattr__(self, "looks", looks)
        unknown = [k for k in self.frequencies if k not in FREQUENCY_KEYS]
        if unknown:
            raise SegmergeError(
                f"domain {self.name!r}: unknown frequencies {unknown}; valid keys: {', '.join(FREQUENCY_KEYS)}"
            )
        frequencies = {k: float(self.frequencies.get(k, 0.0)) for k in FREQUENCY_KEYS}
        if any(v < 0 for v in frequencies.values()) or frequencies["building"] > 1:
            raise SegmergeError(f"domain {self.name!r}: frequencies must be >= 0 (building a share in 0..1)")
        object.__setattr__(self, "frequencies", frequencies)
        absent = tuple(self.absent_classes)
        bad = [n for n in absent if n not in TRAIN_ID]
        required = [n for n in absent if n in ("road", "sky")]
        if bad or required:
            raise SegmergeError(
                f"domain {self.name!r}: absent_classes {bad or required} are not classes that can be left out "
                f"(any of {', '.join(n for n in TRAIN_ID_NAMES if n not in ('road', 'sky'))})"
            )
        object.__setattr__(self, "absent_classes", absent)
        if isinstance(self.lighting, Mapping):
            object.__setattr__(self, "lighting", Lighting(**self.lighting))
        if isinstance(self.camera, Mapping):
            object.__setattr__(self, "camera", Camera(**self.camera))
        if not (32 <= int(self.height) <= 4096 and 64 <= int(self.width) <= 8192):
            raise SegmergeError(f"domain {self.name!r}: image size {self.height}x{self.width} is out of range")
        if self.blur < 0 or self.noise < 0 or self.object_scale <= 0 or not 0 <= self.randomize <= 1:
            raise SegmergeError(
                f"domain {self.name!r}: blur and noise must be >= 0, object_scale > 0, randomize in 0..1"
            )

    def __hash__(self) -> int:
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(json.dumps(self.to_dict(), sort_keys=True))
            object.__setattr__(self, "_hash", cached)
        return cached

    def draws(self, name: str) -> bool:
        """Whether this domain ever draws the class ``name``."""
        return name not in self.absent_classes

    def labelled_ids(self) -> tuple[int, ...]:
        """The trainIds this domain draws, and so labels (SYNTHIA's 16 for ``appearance-b``)."""
        return tuple(i for i, name in enumerate(TRAIN_ID_NAMES) if self.draws(name))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-able data; ``Domain.from_dict(d.to_dict()) == d``."""
        return {
            "name": self.name,
            "description": self.description,
            "height": int(self.height),
            "width": int(self.width),
            "looks": {n: _plain(dataclasses.asdict(look)) for n, look in self.looks.items()},
            "lighting": _plain(dataclasses.asdict(self.lighting)),
            "blur": float(self.blur),
            "noise": float(self.noise),
            "camera": _plain(dataclasses.asdict(self.camera)),
            "object_scale": float(self.object_scale),
            "frequencies": dict(self.frequencies),
            "absent_classes": list(self.absent_classes),
            "randomize": float(self.randomize),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Domain:
        """A domain from plain data. With ``"base": "<built-in name>"`` only the fields given
        override that domain (looks and frequencies per class, lighting and camera per field)."""
        if not isinstance(data, Mapping):
            raise SegmergeError(f"a domain must be a mapping of fields, got {type(data).__name__}")
        data = dict(data)
        base_name = data.pop("base", None)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise SegmergeError(f"domain fields {unknown} are unknown; valid fields: base, {', '.join(sorted(fields))}")
        if base_name is not None:
            base = get_domain(base_name).to_dict()
            for key in ("looks", "frequencies", "lighting", "camera"):
                if key in data:
                    merged = dict(base[key])
                    for k, v in data[key].items():
                        merged[k] = {**merged[k], **v} if key == "looks" and k in merged else v
                    data[key] = merged
            data = {**base, **data}
        if "name" not in data:
            raise SegmergeError("a domain needs a 'name'")
        try:
            looks = {n: ClassLook(**look) for n, look in dict(data.get("looks", {})).items()}
            return cls(
                **{
                    **data,
                    "looks": looks,
                    "lighting": Lighting(**data.get("lighting", {})),
                    "camera": Camera(**data.get("camera", {})),
                    "absent_classes": tuple(data.get("absent_classes", ())),
                    "frequencies": dict(data.get("frequencies", {})),
                }
            )
        except TypeError as exc:
            raise SegmergeError(f"domain {data.get('name')!r}: {exc}") from exc

    def replace(self, **changes: Any) -> Domain:
        """A copy with some fields changed (``target.replace(name="target-big", height=192, width=384)``)."""
        return dataclasses.replace(self, **changes)


def load_domain(path: Path | str) -> Domain:
    """A domain from a ``.json`` or ``.yaml``/``.yml`` file holding :meth:`Domain.to_dict` data."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise SegmergeError(f"{path}: cannot read this domain file ({exc})") from exc
    return Domain.from_dict(data)


def get_domain(name: str | Domain) -> Domain:
    """A built-in domain by name (a :class:`Domain` passes through)."""
    if isinstance(name, Domain):
        return name
    try:
        return DOMAINS[name]
    except KeyError:
        raise SegmergeError(
            f"unknown synthetic domain {name!r}; built-in domains: {', '.join(DOMAINS)} "
            "(or load your own with load_domain / Domain.from_dict)"
        ) from None


def _range(value: Any, what: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if lo > hi:
        raise SegmergeError(f"{what} range {value} has min > max")
    return lo, hi


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- built-ins


def _look(colors, jitter=8.0, texture=6.0, grain=0.5, stripes=0.0, period=1.0) -> ClassLook:
    return ClassLook(tuple(colors), jitter, texture, grain, stripes, period)


TARGET_LOOKS: dict[str, ClassLook] = {
    "road": _look([(84, 84, 88), (98, 96, 99), (76, 78, 82)], 5, 7, 0.85),
    "sidewalk": _look([(150, 141, 140), (134, 128, 130), (160, 152, 142)], 7, 6, 0.7, 10, 0.9),
    "building": _look(
        [(118, 108, 98), (146, 136, 122), (98, 94, 94), (166, 158, 148), (128, 116, 112)], 12, 6, 0.35, 4, 3.2
    ),
    "wall": _look([(142, 136, 124), (116, 110, 104), (160, 150, 130)], 10, 8, 0.5, 3, 0.5),
    "fence": _look([(112, 110, 98), (88, 94, 88), (130, 124, 112)], 10, 5, 0.8, 14, 0.25),
    "pole": _look([(108, 108, 112), (80, 80, 86), (126, 122, 116)], 8, 3, 0.6),
    "traffic light": _look([(42, 42, 42), (60, 62, 56)], 5, 3, 0.6),
    "traffic sign": _look([(196, 186, 170), (44, 84, 160), (178, 44, 40), (208, 196, 64)], 10, 3, 0.6),
    "vegetation": _look([(70, 94, 44), (58, 82, 48), (86, 104, 54)], 10, 20, 0.75),
    "terrain": _look([(118, 124, 74), (136, 126, 88), (104, 116, 70)], 10, 12, 0.9),
    "sky": _look([(172, 188, 204), (198, 204, 210), (156, 176, 200)], 8, 8, 0.05),
    "person": _look(
        [(48, 48, 58), (84, 62, 50), (120, 120, 130), (30, 30, 36), (140, 42, 42), (44, 62, 102)], 14, 4, 0.7
    ),
    "rider": _look([(40, 40, 48), (96, 90, 70), (150, 40, 36), (50, 70, 110)], 14, 4, 0.7),
    "car": _look(
        [(40, 40, 46), (176, 178, 184), (118, 118, 124), (32, 42, 80), (128, 32, 30), (214, 214, 216)], 10, 3, 0.5
    ),
    "truck": _look([(196, 196, 196), (160, 62, 40), (62, 80, 118), (120, 116, 100)], 12, 4, 0.5, 3, 0.6),
    "bus": _look([(190, 178, 62), (200, 200, 206), (60, 108, 160)], 10, 3, 0.5),
    "train": _look([(216, 208, 196), (176, 60, 50)], 8, 3, 0.5),
    "motorcycle": _look([(40, 40, 42), (122, 30, 30), (70, 70, 80)], 10, 3, 0.6),
    "bicycle": _look([(52, 52, 54), (120, 120, 130), (40, 60, 90)], 10, 3, 0.6),
}

TARGET_FREQUENCIES: dict[str, float] = {
    "car": 4.0,
    "truck": 0.25,
    "bus": 0.2,
    "train": 0.05,
    "person": 2.5,
    "rider": 0.4,
    "bicycle": 0.5,
    "motorcycle": 0.15,
    "pole": 2.5,
    "traffic sign": 1.5,
    "traffic light": 0.8,
    "vegetation": 2.5,
    "terrain": 1.2,
    "wall": 0.5,
    "fence": 0.6,
    "building": 0.75,
}

TARGET = Domain(
    name="target",
    description="Cityscapes-like target: muted realistic colours, moderate noise, car-height camera with bonnet",
    looks=TARGET_LOOKS,
    frequencies=TARGET_FREQUENCIES,
    lighting=Lighting(
        brightness=1.0, contrast=1.0, saturation=0.9, cast=(1.0, 1.0, 1.02), gamma=1.0, haze=0.15, jitter=0.08
    ),
    blur=0.5,
    noise=3.0,
    camera=Camera(height=(1.2, 1.4), horizon=(0.4, 0.46), hood=0.07),
)

PRETRAIN = Domain(
    name="pretrain",
    description="ImageNet stand-in: appearance (palettes, textures, lighting, optics) re-drawn at random every image",
    looks=TARGET_LOOKS,
    frequencies={k: v * 1.1 if k != "building" else 0.6 for k, v in TARGET_FREQUENCIES.items()},
    lighting=Lighting(jitter=0.15),
    blur=0.6,
    noise=4.0,
    camera=Camera(height=(1.0, 3.0), horizon=(0.28, 0.52), hood=0.0),
    randomize=1.0,
)


def _recoloured(base: dict[str, ClassLook], **changes: ClassLook) -> dict[str, ClassLook]:
    return {**base, **{k.replace("_", " "): v for k, v in changes.items()}}


APPEARANCE_A = Domain(
    name="appearance-a",
    description="GTA5-like: saturated, warm, sharp, high contrast, low camera, big objects, many cars and trees",
    looks=_recoloured(
        TARGET_LOOKS,
        road=_look([(70, 68, 70), (82, 78, 76), (62, 62, 66)], 6, 8, 0.8),
        sidewalk=_look([(168, 150, 132), (150, 140, 128)], 8, 8, 0.6, 12, 1.0),
        building=_look(
            [(176, 140, 106), (150, 120, 96), (200, 180, 150), (120, 96, 84), (170, 160, 150)], 16, 8, 0.4, 6, 3.4
        ),
        vegetation=_look([(56, 118, 28), (72, 130, 34), (44, 96, 30)], 12, 24, 0.7),
        terrain=_look([(128, 140, 56), (150, 130, 80)], 12, 14, 0.85),
        sky=_look([(92, 150, 226), (120, 170, 230), (80, 136, 214)], 10, 10, 0.05),
        car=_look(
            [(20, 20, 24), (210, 210, 214), (150, 20, 20), (20, 60, 150), (230, 170, 30), (100, 100, 106)], 14, 3, 0.5
        ),
    ),
    frequencies={
        **TARGET_FREQUENCIES,
        "car": 5.0,
        "truck": 0.5,
        "person": 1.2,
        "rider": 0.3,
        "bicycle": 0.2,
        "motorcycle": 0.3,
        "pole": 3.0,
        "traffic sign": 1.0,
        "traffic light": 1.0,
        "vegetation": 3.5,
        "terrain": 2.0,
        "wall": 0.8,
        "fence": 0.8,
        "building": 0.6,
    },
    lighting=Lighting(
        brightness=1.05, contrast=1.3, saturation=1.4, cast=(1.1, 1.0, 0.86), gamma=0.95, haze=0.2, jitter=0.1
    ),
    blur=0.0,
    noise=1.0,
    camera=Camera(height=(0.9, 1.3), horizon=(0.44, 0.52), hood=0.0),
    object_scale=1.1,
)

APPEARANCE_B = Domain(
    name="appearance-b",
    description="SYNTHIA-like: cold, washed-out, blurry and noisy, many persons; no terrain, truck or train; "
    "the target's camera and object sizes",
    looks=_recoloured(
        TARGET_LOOKS,
        road=_look([(124, 124, 130), (110, 112, 118)], 5, 5, 0.9),
        sidewalk=_look([(170, 168, 160), (150, 150, 146)], 6, 4, 0.6, 8, 0.7),
        building=_look([(170, 170, 172), (140, 142, 150), (190, 186, 178), (120, 124, 132)], 8, 4, 0.3, 3, 3.0),
        vegetation=_look([(92, 110, 60), (80, 96, 66)], 8, 12, 0.6),
        sky=_look([(200, 210, 222), (214, 220, 228)], 6, 5, 0.05),
        person=_look(
            [(70, 70, 84), (110, 90, 80), (150, 150, 160), (60, 60, 66), (160, 70, 70), (70, 90, 130)], 14, 3, 0.6
        ),
    ),
    frequencies={
        **TARGET_FREQUENCIES,
        "car": 2.5,
        "truck": 0.0,
        "train": 0.0,
        "terrain": 0.0,
        "bus": 0.4,
        "person": 5.0,
        "rider": 0.8,
        "bicycle": 1.0,
        "motorcycle": 0.3,
        "pole": 3.5,
        "traffic sign": 2.0,
        "traffic light": 1.5,
        "vegetation": 1.5,
        "wall": 0.8,
        "fence": 0.8,
        "building": 0.85,
    },
    lighting=Lighting(
        brightness=1.05, contrast=0.85, saturation=0.75, cast=(0.9, 0.98, 1.12), gamma=1.1, haze=0.1, jitter=0.06
    ),
    blur=1.0,
    noise=6.0,
    camera=Camera(height=(1.2, 1.4), horizon=(0.4, 0.46), hood=0.0),
    absent_classes=("terrain", "truck", "train"),
)

CLASSES_A = Domain(
    name="classes-a",
    description="class shift A: things look as in the target; sidewalk/terrain and building/wall swap looks, "
    "vegetation autumn orange, fences painted",
    looks=_recoloured(
        TARGET_LOOKS,
        sidewalk=TARGET_LOOKS["terrain"],
        terrain=TARGET_LOOKS["sidewalk"],
        building=TARGET_LOOKS["wall"],
        wall=TARGET_LOOKS["building"],
        vegetation=_look([(168, 96, 36), (150, 70, 30), (184, 124, 40)], 12, 20, 0.75),
        fence=_look([(40, 120, 110), (150, 40, 60)], 10, 5, 0.8, 14, 0.25),
    ),
    frequencies=TARGET_FREQUENCIES,
    lighting=dataclasses.replace(TARGET.lighting, cast=(1.03, 1.0, 0.99)),
    blur=0.4,
    noise=3.0,
    camera=Camera(height=(1.2, 1.4), horizon=(0.4, 0.46), hood=0.0),
)

CLASSES_B = Domain(
    name="classes-b",
    description="class shift B: surroundings look as in the target; cars olive/khaki, persons and riders in pastels, "
    "trucks and buses swap looks, two-wheelers brightly painted",
    looks=_recoloured(
        TARGET_LOOKS,
        car=_look([(70, 98, 46), (96, 110, 60), (120, 124, 74), (84, 104, 52)], 8, 6, 0.6),
        person=_look([(230, 150, 190), (120, 220, 220), (236, 226, 110), (180, 150, 230)], 14, 4, 0.7),
        rider=_look([(236, 226, 110), (120, 220, 220), (230, 150, 190)], 14, 4, 0.7),
        truck=TARGET_LOOKS["bus"],
        bus=TARGET_LOOKS["truck"],
        motorcycle=_look([(230, 200, 40), (40, 200, 120)], 10, 3, 0.6),
        bicycle=_look([(240, 120, 30), (60, 200, 230)], 10, 3, 0.6),
    ),
    frequencies=TARGET_FREQUENCIES,
    lighting=dataclasses.replace(TARGET.lighting, cast=(0.99, 1.0, 1.04)),
    blur=0.6,
    noise=3.0,
    camera=Camera(height=(1.2, 1.4), horizon=(0.4, 0.46), hood=0.0),
)

DOMAINS: dict[str, Domain] = {d.name: d for d in (PRETRAIN, TARGET, APPEARANCE_A, APPEARANCE_B, CLASSES_A, CLASSES_B)}
"""The built-in domains by name: pretrain, target, appearance-a/-b, classes-a/-b."""
