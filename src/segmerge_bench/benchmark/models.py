"""The models a benchmark run trains, and where each one comes from (cached by its settings).

Per seed and regime (sources A and B): a SegFormer trained source-only on each source, a
SegFormer adapted to the target from each source (DACS/DAFormer self-training), a
DAFormer-style model and a panoptic model (EDAPS-style, :mod:`segmerge_bench.zoo.panoptic`)
adapted from source B; per seed a SegFormer trained on labelled target
images (the oracle, an upper bound). All start from one shared start: a MiT encoder
pre-trained on the neutral domain and, per architecture, one decoder initialisation.
SegFormers are saved as Hugging Face folders, DAFormer and panoptic models as mmseg-style ``.pth`` files -
the layouts users hold - and merged through :mod:`segmerge.api` from those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from segmerge.errors import SegmergeError
from segmerge_bench.benchmark.settings import PRETRAIN_DOMAIN, REGIMES, TARGET, BenchSettings
from segmerge_bench.benchmark.store import ArtifactStore, cache_key
from segmerge_bench.training import (
    SharedStart,
    TrainConfig,
    TrainingData,
    pretrain,
    train_source_only,
    train_target_oracle,
    train_uda,
)
from segmerge_bench.training.panoptic import train_panoptic_uda
from segmerge_bench.zoo.models import build_model, decoder_of, save_model
from segmerge_bench.zoo.panoptic import ARCHITECTURE as PANOPTIC

SHIPPED_START = "shared_start.pt"
"""The pre-trained shared start inside ``segmerge_bench/zoo/shipped`` (what ``--quick`` starts from)."""


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("segmerge_bench.zoo").joinpath("shipped", name)))


@dataclass(frozen=True)
class TrainedModelSpec:
    """One trained model: ``recipe`` is source-only, uda or oracle; ``source`` its labelled domain."""

    architecture: str
    recipe: str
    source: str
    seed: int
    decoder_init: int = 0

    @property
    def name(self) -> str:
        init = f"-init{self.decoder_init}" if self.decoder_init else ""
        return f"{self.architecture}-{self.recipe}-{self.source}{init}-seed{self.seed}"

    @property
    def suffix(self) -> str:
        return "" if self.architecture == "segformer" else ".pth"


class DataCache:
    """Rendered training/test tensors, shared by every model of a run (read from the store once)."""

    def __init__(self, settings: BenchSettings, store: ArtifactStore, progress: bool = True) -> None:
        self.settings, self.store, self.progress = settings, store, progress
        self._loaded: dict[str, TrainingData] = {}

    def get(self, domain: str, split: str, n: int, labelled: bool = True, instances: bool = False) -> TrainingData:
        """``instances``: also the thing instance ids (what panoptic training and PQ need)."""
        from segmerge_bench.synthetic import SyntheticDataset

        seed = self.settings.data_seed
        key = cache_key(domain=domain, split=split, n=n, seed=seed, labelled=labelled, **_flag(instances=instances))
        if key in self._loaded:
            return self._loaded[key]

        def render() -> TrainingData:
            samples = SyntheticDataset(domain, n=n, seed=seed, split=split)
            name = f"{domain}/{split}"
            return TrainingData.from_samples(samples, labelled, name, self.progress, instances=instances)

        suffix = "-instances" if instances else ""
        self._loaded[key] = self.store.data(f"{domain}-{split}-{n}{suffix}", key, render)
        return self._loaded[key]

    def source(self, domain: str, instances: bool = False) -> TrainingData:
        return self.get(domain, "train", self.settings.source_images, instances=instances)

    def target_train(self) -> TrainingData:
        return self.get(TARGET, "train", self.settings.target_images)

    def target_test(self) -> TrainingData:
        """Labels and instances: every claim's test split, mIoU and PQ alike."""
        return self.get(TARGET, "test", self.settings.test_images, instances=True)


def _flag(**flags: bool) -> dict[str, bool]:
    """Only the flags that are set, so that adding one leaves the cache keys of earlier artefacts alone."""
    return {k: v for k, v in flags.items() if v}


def _config_fields(config: TrainConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in ("progress", "description", "threads")}


class ModelZoo:
    """Trains (or finds in the cache) the shared start and every :class:`TrainedModelSpec`."""

    def __init__(self, settings: BenchSettings, store: ArtifactStore, data: DataCache, progress: bool = True):
        self.settings, self.store, self.data, self.progress = settings, store, data, progress
        self._start: SharedStart | None = None
        self._start_key = ""
        self.trained: list[str] = []

    def start(self) -> SharedStart:
        if self._start is not None:
            return self._start
        s = self.settings
        if not s.pretrain_from_scratch:
            path = shipped_path(SHIPPED_START)
            if not path.exists():
                raise SegmergeError(
                    f"{path}: the shipped pre-trained start is missing; run without --quick to pre-train it"
                )
            self._start_key = cache_key(shipped=path.stat().st_size)
            self._start = SharedStart.load(path)
            return self._start
        config = s.pretrain.replace(progress=self.progress)
        self._start_key = cache_key(kind="start", n=s.pretrain_images, data_seed=s.data_seed, **_config_fields(config))
        path = self.store.path("models", "shared-start", self._start_key, ".pt")

        def make(temporary: Path) -> None:
            images = self.data.get(PRETRAIN_DOMAIN, "train", s.pretrain_images)
            shared, _ = pretrain(images, config)
            shared.save(temporary)

        self.store.produce(path, make)
        self._start = SharedStart.load(path)
        return self._start

    def config_for(self, spec: TrainedModelSpec) -> TrainConfig:
        s = self.settings
        base = {"source-only": s.source_only, "uda": s.uda, "oracle": s.oracle}[spec.recipe]
        return base.replace(seed=spec.seed, progress=self.progress, description=spec.name)

    def path(self, spec: TrainedModelSpec) -> Path:
        s = self.settings
        start = self.start()
        config = self.config_for(spec)
        key = cache_key(
            start=self._start_key,
            spec=spec.__dict__,
            source_images=s.source_images,
            target_images=s.target_images,
            data_seed=s.data_seed,
            **_config_fields(config),
        )
        path = self.store.path("models", spec.name, key, spec.suffix)

        def make(temporary: Path) -> None:
            model = self._initial(start, spec)
            if spec.architecture == PANOPTIC and spec.recipe == "uda":
                source = self.data.source(spec.source, instances=True)
                model, _ = train_panoptic_uda(model, source, self.data.target_train(), config)
            elif spec.architecture == PANOPTIC:
                raise SegmergeError(f"{spec.name}: the benchmark trains panoptic models by UDA only")
            elif spec.recipe == "source-only":
                model, _ = train_source_only(model, self.data.source(spec.source), config)
            elif spec.recipe == "uda":
                model, _ = train_uda(model, self.data.source(spec.source), self.data.target_train(), config)
            else:
                model, _ = train_target_oracle(model, self.data.target_train(), config)
            save_model(model, temporary)
            self.trained.append(spec.name)

        return self.store.produce(path, make)

    def _initial(self, start: SharedStart, spec: TrainedModelSpec):
        if not spec.decoder_init:
            return start.model(spec.architecture)
        other = decoder_of(
            build_model(
                spec.architecture, start.num_classes, spec.decoder_init, **start.settings.get(spec.architecture, {})
            )
        )
        decoders = {**start.decoders, spec.architecture: other.state_dict()}
        return SharedStart(start.encoder, decoders, start.num_classes, start.settings).model(spec.architecture)


def regime_specs(regime: str, seed: int) -> dict[str, TrainedModelSpec]:
    """The models of one regime and seed, by role."""
    a, b = REGIMES[regime].sources
    return {
        "source-only A": TrainedModelSpec("segformer", "source-only", a, seed),
        "source-only B": TrainedModelSpec("segformer", "source-only", b, seed),
        "UDA A": TrainedModelSpec("segformer", "uda", a, seed),
        "UDA B": TrainedModelSpec("segformer", "uda", b, seed),
        "DAFormer UDA B": TrainedModelSpec("daformer", "uda", b, seed),
        "panoptic UDA B": TrainedModelSpec(PANOPTIC, "uda", b, seed),
    }


def oracle_spec(seed: int) -> TrainedModelSpec:
    return TrainedModelSpec("segformer", "oracle", TARGET, seed)


def unshared_init_spec(regime: str, seed: int) -> TrainedModelSpec:
    return TrainedModelSpec("segformer", "uda", REGIMES[regime].sources[1], seed, decoder_init=1)
