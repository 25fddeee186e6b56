"""The models a benchmark run trains, and where each one comes from (cached by its settings).

Per seed and regime (sources A and B): a SegFormer trained source-only on each source, a
SegFormer adapted to the target from each source (DACS/DAFormer self-training), a
DAFormer-style model and a panoptic model (EDAPS-style, :mod:`segmerge_bench.zoo.panoptic`)
adapted from source B; per seed a SegFormer trained on labelled target
images (the oracle, an upper bound). Every model descends from one shared start: a MiT
encoder pre-trained on the neutral domain and, per architecture, one decoder initialisation.
Source-only models and the oracle train from it; with ``BenchSettings.uda_warm_start`` each
UDA run starts from the source-only model of its architecture, source and seed (for the
DAFormer-style and panoptic models, one trained for the purpose), else from the shared start.
SegFormers are saved as Hugging Face folders, DAFormer and panoptic models as mmseg-style ``.pth`` files -
the layouts users hold - and merged through :mod:`segmerge.api` from those files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from segmerge.checkpoints.provenance import sha256_of
from segmerge.errors import SegmergeError
from segmerge_bench.benchmark.settings import PRETRAIN_DOMAIN, REGIMES, TARGET, BenchSettings
from segmerge_bench.benchmark.store import ArtifactStore, cache_key, remove_path
from segmerge_bench.training import (
    SharedStart,
    TrainConfig,
    TrainingData,
    continue_pretraining,
    pretrain,
    train_source_only,
    train_target_oracle,
    train_uda,
)
from segmerge_bench.training.devices import parsed_device
from segmerge_bench.training.panoptic import train_panoptic_supervised, train_panoptic_uda
from segmerge_bench.zoo.models import build_model, decoder_of, load_model, save_model
from segmerge_bench.zoo.panoptic import ARCHITECTURE as PANOPTIC

MIC = "uda-mic"
"""The recipe of a model adapted with masked image consistency on top of self-training."""

SHIPPED_START = "shared_start.pt"
"""The pre-trained shared start inside ``segmerge_bench/zoo/shipped`` (what ``--quick`` starts from)."""


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("segmerge_bench.zoo").joinpath("shipped", name)))


@dataclass(frozen=True)
class TrainedModelSpec:
    """One trained model: ``recipe`` is source-only, uda (DACS-style), uda-mic or oracle; ``source``
    its labelled domain.

    ``length``: the run's steps as a multiple of the recipe's (2: the convergence check's
    twice-as-long run). ``snapshots``: fractions of the run after which the model is also
    saved (checkpoints along one run: learning curves, merges along a run).
    """

    architecture: str
    recipe: str
    source: str
    seed: int
    decoder_init: int = 0
    length: int = 1
    snapshots: tuple[float, ...] = ()

    @property
    def name(self) -> str:
        init = f"-init{self.decoder_init}" if self.decoder_init else ""
        longer = f"-x{self.length}" if self.length != 1 else ""
        return f"{self.architecture}-{self.recipe}-{self.source}{init}{longer}-seed{self.seed}"

    def with_snapshots(self, *fractions: float) -> TrainedModelSpec:
        return replace(self, snapshots=tuple(fractions))

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
        key = cache_key(
            domain=domain,
            split=split,
            n=n,
            seed=seed,
            labelled=labelled,
            **_drawn(domain),
            **_flag(instances=instances),
        )
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


def _drawn(*domains: str) -> dict:
    """What the domains draw, by value: editing a domain's definition (a built-in's or a file's) keys
    its data, and every model trained on it, apart from what its old definition drew."""
    from segmerge_bench.synthetic.domains import get_domain

    return {"drawn": {name: get_domain(name).to_dict() for name in sorted(set(domains))}}


def _flag(**flags: bool) -> dict[str, bool]:
    """Only the flags that are set, so that adding one leaves the cache keys of earlier artefacts alone."""
    return {k: v for k, v in flags.items() if v}


def _config_fields(config: TrainConfig) -> dict:
    """What of a training config shapes the model it trains (so enters its cache key). The device
    only when it is not the CPU (a GPU draws other dropout masks), so CPU keys stay as they were."""
    unkeyed = ("progress", "description", "threads", "device", "snapshots")
    fields = {k: v for k, v in config.to_dict().items() if k not in unkeyed}
    kind = parsed_device(config.device).type
    return fields if kind == "cpu" else {**fields, "device": kind}


class ModelZoo:
    """Trains (or finds in the cache) the shared start and every :class:`TrainedModelSpec`."""

    def __init__(
        self,
        settings: BenchSettings,
        store: ArtifactStore,
        data: DataCache,
        progress: bool = True,
        threads: int | None = None,
    ):
        """``threads``: torch threads each training uses (None: the settings' configs say)."""
        self.settings, self.store, self.data, self.progress, self.threads = settings, store, data, progress, threads
        self._start: SharedStart | None = None
        self._start_key = ""
        self.trained: list[str] = []
        #: Seconds each model this zoo handed out took to train, from its training log - also for
        #: models an earlier, interrupted run trained (what the run's training costs in all).
        self.training_seconds: dict[str, float] = {}

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
            self._start_key = cache_key(shipped=sha256_of(path))  # not its size: other starts share it
            self._start = SharedStart.load(path)
            return self._start
        config = s.pretrain.replace(progress=self.progress, device=s.device)
        continued = s.pretrain_continued and s.pretrain_continued.replace(progress=self.progress, device=s.device)
        shape = {"encoder": s.encoder} if s.encoder else {}  # the tiny MiT's keys stay as they were
        second = {"continued": _config_fields(continued), "kept_head": s.pretrain_kept_head} if continued else {}
        self._start_key = cache_key(
            kind="start",
            n=s.pretrain_images,
            data_seed=s.data_seed,
            **shape,
            **_drawn(PRETRAIN_DOMAIN),
            **_config_fields(config),
            **second,
        )
        path = self.store.path("models", "shared-start", self._start_key, ".pt")

        def make(temporary: Path) -> None:
            images = self.data.get(PRETRAIN_DOMAIN, "train", s.pretrain_images)
            shared, _ = pretrain(images, config, encoder=s.encoder)
            if continued:
                shared, _ = continue_pretraining(shared, images, continued, s.pretrain_kept_head)
            shared.save(temporary)

        self.store.produce(path, make)
        self._start = SharedStart.load(path)
        return self._start

    def config_for(self, spec: TrainedModelSpec) -> TrainConfig:
        base = recipe_config(self.settings, spec.recipe)
        steps = base.steps * spec.length
        return base.replace(
            seed=spec.seed,
            steps=steps,
            warmup_steps=min(base.warmup_steps, steps),
            progress=self.progress,
            threads=self.threads or base.threads,
            device=self.settings.device,
            description=spec.name,
            snapshots=tuple(sorted({snapshot_step(f, steps) for f in spec.snapshots})),
        )

    def warm_start(self, spec: TrainedModelSpec) -> TrainedModelSpec | None:
        return warm_start(self.settings, spec)

    def _key(self, spec: TrainedModelSpec) -> str:
        s = self.settings
        self.start()
        fields = {k: v for k, v in spec.__dict__.items() if k != "snapshots" and not (k == "length" and v == 1)}
        warm = self.warm_start(spec)
        return cache_key(
            start=self._start_key if warm is None else self._key(warm),
            spec=fields,
            source_images=s.source_images,
            target_images=s.target_images,
            data_seed=s.data_seed,
            **_drawn(spec.source, TARGET),
            **_config_fields(self.config_for(spec)),
        )

    def snapshot_path(self, spec: TrainedModelSpec, fraction: float, train: bool = True) -> Path:
        """The model after ``fraction`` of its run (trains the run, saving its snapshots, if needed;
        ``train=False``: only where it is or would be)."""
        if fraction == 1:
            return self.path(spec, retrain=not train)
        spec = spec if fraction in spec.snapshots else replace(spec, snapshots=(*spec.snapshots, fraction))
        step = snapshot_step(fraction, self.config_for(spec).steps)
        path = self.store.path("models", f"{spec.name}-step{step}", self._key(spec), spec.suffix)
        if train and not path.exists():
            remove_path(self.path(spec, retrain=True))
            self.path(spec)
        if train and not path.exists():
            raise SegmergeError(f"{spec.name}: the run did not save its snapshot at step {step}")
        return path

    def path(self, spec: TrainedModelSpec, retrain: bool = False) -> Path:
        """The trained model (from the cache, or trained now). ``retrain``: only its path, for removal."""
        start = self.start()
        config = self.config_for(spec)
        key = self._key(spec)
        path = self.store.path("models", spec.name, key, spec.suffix)
        if retrain:
            return path

        def make(temporary: Path) -> None:
            warm = self.warm_start(spec)
            model = self._initial(start, spec) if warm is None else load_model(self.path(warm))
            data = self.data_for(spec)
            if spec.architecture == PANOPTIC and spec.recipe == "uda":
                model, log = train_panoptic_uda(model, *data, config)
            elif spec.architecture == PANOPTIC:
                model, log = train_panoptic_supervised(model, *data, config)
            elif spec.recipe == "source-only":
                model, log = train_source_only(model, *data, config)
            elif spec.recipe in ("uda", MIC):
                model, log = train_uda(model, *data, config, method="mic" if spec.recipe == MIC else "dacs")
            else:
                model, log = train_target_oracle(model, *data, config)
            for step, state in log["snapshots"].items():
                snapshot = self.store.path("models", f"{spec.name}-step{step}", key, spec.suffix)
                self.store.produce(snapshot, lambda to, state=state: _save_state(model, state, to), count=False)
            summary = {k: v for k, v in log.items() if k not in ("losses", "snapshots")}
            self.store.produce(log_path, lambda to: to.write_text(json.dumps(summary) + "\n"), count=False)
            save_model(model, temporary)
            self.trained.append(spec.name)

        log_path = self._log_path(spec, key)
        self.store.produce(path, make)
        self._count_training(spec)
        return path

    def _log_path(self, spec: TrainedModelSpec, key: str | None = None) -> Path:
        """Where ``spec``'s training log is cached (``key``: its cache key, when already made)."""
        return self.store.path("logs", spec.name, key or self._key(spec), ".json")

    def _count_training(self, spec: TrainedModelSpec) -> None:
        """Note the training seconds of ``spec`` and of the source-only run it started from, from
        their logs (a model cached before logs were kept counts nothing)."""
        while spec is not None and spec.name not in self.training_seconds:
            log = self._log_path(spec)
            if log.exists():
                self.training_seconds[spec.name] = json.loads(log.read_text())["seconds"]
            spec = self.warm_start(spec)

    def data_for(self, spec: TrainedModelSpec) -> tuple[TrainingData, ...]:
        """What ``spec`` trains on: its labelled source (with instances for a panoptic model), and
        the target's training images for UDA (the labelled ones for the oracle)."""
        if spec.recipe == "oracle":
            return (self.data.target_train(),)
        if spec.architecture == PANOPTIC and spec.recipe not in ("uda", "source-only"):
            raise SegmergeError(f"{spec.name}: the benchmark trains panoptic models source-only or by UDA")
        source = self.data.source(spec.source, instances=spec.architecture == PANOPTIC)
        return (source,) if spec.recipe == "source-only" else (source, self.data.target_train())

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


def recipe_config(settings: BenchSettings, recipe: str) -> TrainConfig:
    """The training settings of a recipe (source-only, uda, uda-mic, oracle) in a run."""
    return {"source-only": settings.source_only, "uda": settings.uda, MIC: settings.uda, "oracle": settings.oracle}[
        recipe
    ]


def with_warm_starts(settings: BenchSettings, specs) -> list[TrainedModelSpec]:
    """``specs`` and, before each UDA run, the source-only model it starts from (each once)."""
    out: dict[TrainedModelSpec, None] = {}
    for spec in specs:
        warm = warm_start(settings, spec)
        if warm is not None:
            out[warm] = None
        out[spec] = None
    return list(out)


def warm_start(settings: BenchSettings, spec: TrainedModelSpec) -> TrainedModelSpec | None:
    """The source-only model a UDA run starts from when ``settings.uda_warm_start`` (same
    architecture, source, seed, decoder init and length), else None: it starts from the shared start."""
    if not settings.uda_warm_start or spec.recipe not in ("uda", MIC):
        return None
    return replace(spec, recipe="source-only", snapshots=())


def snapshot_step(fraction: float, steps: int) -> int:
    if not 0 < fraction <= 1:
        raise SegmergeError(f"a snapshot is a fraction of a run in (0, 1], got {fraction!r}")
    return max(1, round(fraction * steps))


def _save_state(model, state: dict, path: Path) -> None:
    """Save ``model``'s architecture with the weights ``state`` (a snapshot of its run)."""
    import copy

    snapshot = copy.deepcopy(model)
    snapshot.load_state_dict(state)
    save_model(snapshot, path)


OTHER_SEED = 1000
"""Added to a run's seed for the second model of the different-seeds claim (same source and method)."""

HALF_WAY = 0.5
"""Where along UDA A's run the along-one-run claim takes its earlier checkpoint."""

SNAPSHOT_ROLES: dict[str, tuple[str, float]] = {"UDA A, half-way": ("UDA A", HALF_WAY)}
"""Roles that are a checkpoint along another role's run: role -> (that role, fraction of its run)."""


def regime_specs(regime: str, seed: int) -> dict[str, TrainedModelSpec]:
    """The models of one regime and seed, by role (snapshot roles: :data:`SNAPSHOT_ROLES`)."""
    a, b = REGIMES[regime].sources
    return {
        "source-only A": TrainedModelSpec("segformer", "source-only", a, seed),
        "source-only B": TrainedModelSpec("segformer", "source-only", b, seed),
        "UDA A": TrainedModelSpec("segformer", "uda", a, seed, snapshots=(HALF_WAY,)),
        "UDA B": TrainedModelSpec("segformer", "uda", b, seed),
        "UDA A, another seed": TrainedModelSpec("segformer", "uda", a, seed + OTHER_SEED),
        "MIC UDA A": TrainedModelSpec("segformer", MIC, a, seed),
        "DAFormer UDA B": TrainedModelSpec("daformer", "uda", b, seed),
        "panoptic UDA B": TrainedModelSpec(PANOPTIC, "uda", b, seed),
    }


def regime_paths(zoo: ModelZoo, regime: str, seed: int, roles) -> dict[str, Path]:
    """The trained models of ``roles`` (trained now where the cache has none), snapshots included."""
    specs = regime_specs(regime, seed)
    paths = {}
    for role in roles:
        if role in SNAPSHOT_ROLES:
            of, fraction = SNAPSHOT_ROLES[role]
            paths[role] = zoo.snapshot_path(specs[of], fraction)
        else:
            paths[role] = zoo.path(specs[role])
    return paths


def oracle_spec(seed: int) -> TrainedModelSpec:
    return TrainedModelSpec("segformer", "oracle", TARGET, seed)


def unshared_init_spec(regime: str, seed: int) -> TrainedModelSpec:
    return TrainedModelSpec("segformer", "uda", REGIMES[regime].sources[1], seed, decoder_init=1)
