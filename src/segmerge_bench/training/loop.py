"""The optimisation loop every training recipe shares: seeded, single-threaded-friendly, logged.

A recipe (supervised, self-training) supplies only its loss for a step; this module owns
the optimiser, schedule, reproducibility settings, progress bar and the log. Global torch
settings it changes (threads, deterministic algorithms) are restored afterwards, so
training inside a test or a benchmark leaves the process as it found it.

Devices: a recipe copies its start onto ``config.device`` (:func:`on_device`), batches are
drawn on the CPU from seeded CPU generators and moved there, and :func:`optimise` hands the
trained model (and its snapshots) back on the CPU, where the benchmark saves and merges it.
So a run draws the same batches, masks and mixes on any device.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from segmerge_bench.training.config import TrainConfig
from segmerge_bench.training.devices import usable_device
from segmerge_bench.training.optimisation import make_optimizer, make_scheduler

StepLoss = Callable[[int], "tuple[torch.Tensor, dict[str, float]]"]


@contextmanager
def reproducible(config: TrainConfig) -> Iterator[None]:
    """Seed global state (dropout draws from it), fix the thread count, prefer deterministic kernels."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(config.seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def training_device(config: TrainConfig) -> torch.device:
    """``config.device``, checked before any step: one this machine has, of a kind that trains."""
    return usable_device(config.device, "TrainConfig.device")


def on_device(start: nn.Module, config: TrainConfig) -> nn.Module:
    """A copy of ``start`` (left unchanged) on the device ``config`` trains on."""
    return copy.deepcopy(start).to(training_device(config))


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s state on the CPU (a snapshot along a run)."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """An independent random stream per purpose (source batches, target batches, mixing) of one run."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters are."""
    return next(model.parameters()).device


def optimise(
    model: nn.Module,
    config: TrainConfig,
    step_loss: StepLoss,
    before_step: Callable[[int], None] | None = None,
) -> dict:
    """Run ``config.steps`` AdamW steps on ``step_loss(step)``; returns the run's log. ``model``
    trains where it is (:func:`on_device`) and ends on the CPU, in eval mode.

    The log: ``steps``, ``seconds``, ``steps_per_second``, ``first_loss``, ``final_loss``
    (mean of the last 10% of steps, at least 1), ``losses`` (every step), the means of
    whatever statistics the recipe reports, and ``snapshots`` ({step: state dict} for the
    steps in ``config.snapshots``).
    """
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config)
    model.train()
    losses: list[float] = []
    totals: dict[str, float] = {}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc=config.description or "train", disable=not config.progress, leave=False)
    for step in bar:
        if before_step is not None:
            before_step(step)
        loss, stats = step_loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        for key, value in stats.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        if step + 1 in config.snapshots:
            snapshots[step + 1] = cpu_state(model)
        if step % 10 == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", **{k: f"{v:.3f}" for k, v in stats.items()})
    seconds = time.perf_counter() - start
    model.eval().to("cpu")
    tail = max(1, config.steps // 10)
    return {
        "steps": config.steps,
        "seconds": round(seconds, 3),
        "steps_per_second": round(config.steps / seconds, 3) if seconds > 0 else float("inf"),
        "first_loss": losses[0],
        "final_loss": sum(losses[-tail:]) / tail,
        "losses": losses,
        **{f"mean_{key}": value / config.steps for key, value in totals.items()},
        "snapshots": snapshots,
    }
