"""Training on a device other than the CPU: what `segmerge bench --device cuda` relies on.

This machine has no GPU, so the CUDA path cannot run here. What can: every tensor a
training step makes must be made on the device of the tensors it meets, or drawn on the
CPU and moved. The tripwire below runs each recipe's steps with torch's default device
set to ``meta``: a tensor made without saying where (``torch.zeros(n)``, ``torch.tensor(x)``)
lands on ``meta`` and fails at the first operation with a CPU tensor, exactly where it
would land on the CPU and fail beside CUDA tensors. The trained weights must also equal an
unguarded run's (the guard changes nothing else), and the model must come back on the CPU.
On a machine with CUDA the last test trains there for real.
"""

from __future__ import annotations

import os

import pytest
import torch

from segmerge.errors import SegmergeError
from segmerge_bench.synthetic import SyntheticDataset
from segmerge_bench.training import (
    TrainConfig,
    TrainingData,
    panoptic,
    self_training,
    supervised,
    train_source_only,
    train_uda,
)
from segmerge_bench.training.loop import optimise
from segmerge_bench.training.panoptic import train_panoptic_supervised, train_panoptic_uda
from segmerge_bench.zoo.models import build_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAST = TrainConfig(steps=4, batch_size=4, lr=2e-3, warmup_steps=1, threads=1, progress=False)


@pytest.fixture(scope="module")
def scenes() -> dict[str, TrainingData]:
    def data(domain: str) -> TrainingData:
        return TrainingData.from_samples(SyntheticDataset(domain, 8, split="train"), name=domain, instances=True)

    return {"source": data("appearance-b"), "target": data("target")}


def _guarded_optimise(model, config, step_loss, before_step=None):
    """:func:`optimise` with each step's loss (and the teacher's update) computed under the
    ``meta`` default device."""

    def guarded(step):
        with torch.device("meta"):
            return step_loss(step)

    def guarded_before(step):
        with torch.device("meta"):
            before_step(step)

    return optimise(model, config, guarded, guarded_before if before_step else None)


def _recipes(scenes, device: str = "cpu"):
    source, target = scenes["source"], scenes["target"]
    semantic_source = TrainingData(source.images, source.labels, "source")
    fast = FAST.replace(device=device)
    uda_levers = fast.replace(
        feature_distance=0.05,
        pseudo_label_weighting="pixel",
        rare_class_temperature=0.01,
        scales=(0.5, 2.0),
        pseudo_label_threshold=0.3,
    )
    return {
        "source-only segformer": lambda: train_source_only(build_model("segformer"), semantic_source, fast),
        "source-only daformer, resize-and-crop": lambda: train_source_only(
            build_model("daformer"), semantic_source, fast.replace(scales=(0.5, 2.0))
        ),
        "dacs with every lever": lambda: train_uda(build_model("segformer"), semantic_source, target, uda_levers),
        "mic": lambda: train_uda(build_model("daformer"), semantic_source, target, fast, method="mic"),
        "panoptic supervised": lambda: train_panoptic_supervised(build_model("panoptic"), source, fast),
        "panoptic uda": lambda: train_panoptic_uda(build_model("panoptic"), source, target, fast),
    }


RECIPES = (
    "source-only segformer",
    "source-only daformer, resize-and-crop",
    "dacs with every lever",
    "mic",
    "panoptic supervised",
    "panoptic uda",
)


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_training_step_makes_its_tensors_where_the_model_trains(scenes, recipe, monkeypatch):
    train = _recipes(scenes)[recipe]
    plain, plain_log = train()
    for module in (supervised, self_training, panoptic):
        monkeypatch.setattr(module, "optimise", _guarded_optimise)
    guarded, log = train()
    assert log["losses"] == plain_log["losses"]
    state, expected = guarded.state_dict(), plain.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert {tensor.device.type for tensor in state.values()} == {"cpu"}


def test_the_tripwire_catches_a_tensor_made_without_a_device(scenes, monkeypatch):
    """The guard is not vacuous: a batch normalised with a mean made on the default device fails."""
    from segmerge_bench.training import data

    def careless(images):
        x = images.permute(0, 3, 1, 2).float() / 255.0
        return x - torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)

    monkeypatch.setattr(data, "normalise", careless)
    monkeypatch.setattr(supervised, "optimise", _guarded_optimise)
    source = TrainingData(scenes["source"].images, scenes["source"].labels, "source")
    with pytest.raises((RuntimeError, NotImplementedError)):
        train_source_only(build_model("segformer"), source, FAST)


def test_snapshots_along_a_run_come_back_on_the_cpu(scenes):
    source = TrainingData(scenes["source"].images, scenes["source"].labels, "source")
    model, log = train_source_only(build_model("segformer"), source, FAST.replace(snapshots=(2,), device="cpu"))
    assert {t.device.type for t in log["snapshots"][2].values()} == {"cpu"}
    assert next(model.parameters()).device.type == "cpu" and not model.training


def test_a_device_that_cannot_train_is_refused_before_any_step(scenes):
    with pytest.raises(SegmergeError, match="not a device"):
        TrainConfig(device="gpu")
    source = TrainingData(scenes["source"].images, scenes["source"].labels, "source")
    start = build_model("segformer")
    if not torch.cuda.is_available():
        with pytest.raises(SegmergeError, match="no CUDA"):
            train_source_only(start, source, FAST.replace(device="cuda"))
    with pytest.raises(SegmergeError, match="trains on cpu, cuda, mps"):
        train_source_only(start, source, FAST.replace(device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("recipe", RECIPES)
def test_training_on_cuda_learns_and_hands_the_model_back_on_the_cpu(scenes, recipe):
    """Dropout draws from the GPU's generator, so the weights are another draw: compared loosely."""
    _, cpu_log = _recipes(scenes)[recipe]()
    on_gpu, gpu_log = _recipes(scenes, "cuda")[recipe]()
    assert {t.device.type for t in on_gpu.state_dict().values()} == {"cpu"}
    assert gpu_log["final_loss"] < gpu_log["first_loss"]
    assert abs(gpu_log["first_loss"] - cpu_log["first_loss"]) < 0.1 * abs(cpu_log["first_loss"])
