"""Learn per-layer merge coefficients from unlabelled target images (AdaMerging for dense prediction).

Each merged layer l holds logits a_l in R^M; its weights w_l = softmax(a_l) lie on the
simplex. Every eligible key k of layer l is merged as in docs/method.md rule 6 (weights
renormalised over the models that hold k), BatchNorm statistics as in rule 7 - the same
maths as :mod:`segmerge.merging.execute`, written with differentiable tensor operations.
The anchor's network runs the merged tensors through ``torch.func.functional_call``;
keys that are not merged keep the anchor's values. Memory holds the M inputs of each
merged key (what the weighted sum needs) and one network.

Losses, on the anchor network's per-pixel class distribution p:
``entropy``: mean_pixels H(p); ``distill``: mean_pixels KL(p_ens || p), p_ens being the
output ensemble's distribution; ``both``: their sum. Adam on the logits.

The result is a recipe whose overrides give every learned layer its weights, so
``segmerge merge -r`` rebuilds the learned merge, and the state dict that recipe merges to.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from segmerge import api
from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import InferenceConfig
from segmerge.merging.keys import BN_MEAN, BN_VAR, leaf_of, sibling
from segmerge.merging.plan import Action, MergePlan
from segmerge.recipe import Recipe
from segmerge.tuning.adabn import batch_norms, reestimate_batch_norm
from segmerge.tuning.candidates import Rename
from segmerge.tuning.images import ImageSource, load_images
from segmerge.tuning.models import TuningModels
from segmerge.tuning.network import iter_batches
from segmerge.tuning.search import with_batch_norm_statistics

LOSSES = ("entropy", "distill", "both")
#: Decimals of the learned weights written to the recipe (a rounding error of 5e-7 per weight).
WEIGHT_DECIMALS = 6
INITIAL_WEIGHT_FLOOR = 1e-4


def layer_pattern(layer: str) -> str:
    """A regex matching exactly the keys of ``layer`` (``layer.<leaf>``, or ``layer`` itself for a top-level key)."""
    return f"^{re.escape(layer)}(\\.[^.]+)?$"


@dataclass
class _MergedKey:
    key: str
    layer: int
    models: torch.Tensor  # long [n]: which models hold the key
    stack: torch.Tensor  # [n, ...]: their tensors, float32
    means: torch.Tensor | None = None  # running_var only: the holders' running means [n, ...]


class FunctionalMerge(torch.nn.Module):
    """The merged tensors as a differentiable function of per-layer logits [L, M]."""

    def __init__(self, plan: MergePlan, states: Sequence[Mapping[str, torch.Tensor]], device: str = "cpu"):
        super().__init__()
        merged = [k for k in plan.keys if k.action == Action.MERGED]
        if not merged:
            raise SegmergeError("no key is merged under this recipe: nothing to learn (check rename/overrides)")
        self.layers = list(dict.fromkeys(k.layer for k in merged))
        index = {name: i for i, name in enumerate(self.layers)}
        initial = {layer.name: layer.weights for layer in plan.layers}
        start = torch.tensor([initial[name] for name in self.layers], dtype=torch.float32)
        # A zero weight would be a logit of -inf, which no gradient step can move: start at 1e-4.
        self.logits = torch.nn.Parameter(start.clamp_min(INITIAL_WEIGHT_FLOOR).log().to(device))
        self.keys: list[_MergedKey] = []
        for k in merged:
            holders = torch.tensor([i for i, _ in k.sources], device=device)
            stack = torch.stack([states[i][key].float() for i, key in k.sources]).to(device)
            means = None
            if leaf_of(k.key) == BN_VAR:
                try:
                    means = torch.stack([states[i][sibling(key, BN_MEAN)].float() for i, key in k.sources]).to(device)
                except KeyError:
                    means = None
            self.keys.append(_MergedKey(k.key, index[k.layer], holders, stack, means))

    def weights(self) -> torch.Tensor:
        """[L, M]: every layer's weights, on the simplex."""
        return self.logits.softmax(dim=-1)

    def forward(self) -> dict[str, torch.Tensor]:
        weights = self.weights()
        out = {}
        for k in self.keys:
            w = weights[k.layer, k.models]
            w = w / w.sum()
            shape = (-1,) + (1,) * (k.stack.ndim - 1)
            if leaf_of(k.key) in (BN_MEAN, BN_VAR):
                # BatchNorm kernels take no gradient through their statistics: they follow the
                # weights, but only the layer's parameters steer them.
                w = w.detach()
            if k.means is None:
                out[k.key] = (w.view(shape) * k.stack).sum(0)
            else:  # moment-matched variance of the blended population (docs/method.md rule 7)
                mixed = (w.view(shape) * k.means).sum(0)
                out[k.key] = (w.view(shape) * (k.stack + (k.means - mixed) ** 2)).sum(0)
        return out


def pixel_loss(logits: torch.Tensor, target: torch.Tensor | None, loss: str) -> torch.Tensor:
    """Mean over pixels of the entropy of softmax(logits), of KL(target || softmax(logits)), or their sum."""
    log_p = logits.float().log_softmax(dim=1)
    total = logits.new_zeros((), dtype=torch.float32)
    if loss in ("entropy", "both"):
        total = total - (log_p.exp() * log_p).sum(1).mean()
    if loss in ("distill", "both"):
        t = target.float()
        total = total + (t * (t.clamp_min(1e-12).log() - log_p)).sum(1).mean()
    return total


@dataclass
class LearnResult:
    """``recipe``: reproduces the learned merge (per-layer weight overrides); ``state_dict``: what it
    merges to (with AdaBN statistics when asked); ``layer_weights``: layer -> weight per model;
    ``losses``: per step; ``initial_loss``/``final_loss``: over all images, before and after."""

    recipe: Recipe
    state_dict: dict[str, torch.Tensor]
    layer_weights: dict[str, list[float]]
    losses: list[float]
    initial_loss: float
    final_loss: float
    loss: str
    seconds_per_step: float
    adabn: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": self.loss,
            "initial_loss": self.initial_loss,
            "final_loss": self.final_loss,
            "steps": len(self.losses),
            "seconds_per_step": self.seconds_per_step,
            "losses": self.losses,
            "layer_weights": self.layer_weights,
            "recipe": self.recipe.model_dump(mode="json"),
            "adabn": self.adabn,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=True)

    def to_markdown(self) -> str:
        lines = [
            f"# segmerge tune: learned merge coefficients ({len(self.losses)} steps, loss {self.loss})",
            "",
            f"Loss over the target images: {self.initial_loss:.4f} before, {self.final_loss:.4f} after "
            f"({self.seconds_per_step:.3f} s per step).",
            "",
            "| layer | " + " | ".join(f"model {i}" for i in range(len(self.recipe.models))) + " |",
            "|---|" + "---:|" * len(self.recipe.models),
        ]
        for layer, weights in self.layer_weights.items():
            lines.append(f"| {layer} | " + " | ".join(f"{w:.3f}" for w in weights) + " |")
        lines += [f"- note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def learn(
    models: Sequence[str | Path] | TuningModels,
    images: ImageSource,
    *,
    anchor: int = 0,
    rename: Rename | None = None,
    init: Mapping[str, Any] | None = None,
    loss: str = "distill",
    steps: int = 100,
    batch_size: int = 8,
    lr: float = 0.05,
    seed: int = 0,
    adabn: bool = False,
    factory: str | None = None,
    device: str = "cpu",
    amp: bool = False,
    progress: bool = False,
) -> LearnResult:
    """Learn per-layer, per-model merge weights on unlabelled ``images`` by gradient.

    ``init``: make_recipe options of the starting recipe (default: the uniform soup,
    ``{"method": "linear"}``); its ``keep`` overrides stay. ``steps`` batches of ``batch_size``
    images, drawn by a generator seeded with ``seed``.
    """
    if loss not in LOSSES:
        raise SegmergeError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if steps < 0 or batch_size < 1:
        raise SegmergeError(f"steps must be >= 0 and batch size >= 1; got {steps} and {batch_size}")
    if not isinstance(models, TuningModels):
        models = TuningModels.open(models, factory, InferenceConfig(device=device, amp=amp, batch_size=batch_size))
    config = models.config
    images = load_images(images)
    torch.manual_seed(seed)
    options = {"method": "linear", **dict(init or {}), "anchor": anchor}
    donor_rules = {int(i): rules for i, rules in (rename or {}).items() if int(i) != anchor and rules}
    if donor_rules:
        options["rename"] = donor_rules  # rules given for the anchor itself apply only when it is a donor
    opened = api.open_merge(models.states, **dict(options))
    merge = FunctionalMerge(opened.plan, models.states, config.device)
    network = models.bound(anchor)
    notes = [f"{len(network.unbound)} tensors of the network hold no checkpoint key: {network.unbound[:3]}"] * bool(
        network.unbound
    )
    missing = [k.key for k in merge.keys if k.key not in network.by_key()]
    if missing:
        notes.append(f"{len(missing)} merged keys are not tensors of the anchor's network, e.g. {missing[0]!r}")

    size = models.output_size(images, anchor)
    target = models.ensemble(images, size) if loss != "entropy" else None

    def batch_loss(part) -> torch.Tensor:
        tensors = {k: v for k, v in merge().items() if k not in missing}
        pixels = network.segmenter.normalise(images[part].to(config.device))
        with config.autocast():
            logits = network.scores_with(tensors, pixels)
        logits = logits.float()
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        reference = target[part].to(config.device) if target is not None else None
        return pixel_loss(logits, reference, loss)

    def full_loss() -> float:
        with torch.no_grad():
            total = 0.0
            for part in iter_batches(len(images), batch_size):
                total += float(batch_loss(part)) * (part.stop - part.start)
        return total / len(images)

    initial = full_loss()
    optimiser = torch.optim.Adam(merge.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc="learn merge", disable=not progress, leave=False):
        if len(order) < batch_size:
            order += torch.randperm(len(images), generator=generator).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        optimiser.zero_grad(set_to_none=True)
        value = batch_loss(torch.tensor(chosen))
        value.backward()
        optimiser.step()
        losses.append(float(value.detach()))
    seconds = (time.perf_counter() - start) / steps if steps else math.nan
    final = full_loss()

    learned = merge.weights().detach().cpu()
    layer_weights = {
        name: [round(float(w), WEIGHT_DECIMALS) for w in row] for name, row in zip(merge.layers, learned, strict=True)
    }
    user_overrides = list(options.pop("overrides", None) or [])
    keep = [{"pattern": p, "keep": True} for p in options.pop("keep", None) or []]
    overrides = [*user_overrides, *keep]
    overrides += [{"pattern": layer_pattern(name), "weights": w} for name, w in layer_weights.items()]
    paths = [str(p) for p in models.paths]
    recipe = api.make_recipe(paths, **{**options, "overrides": overrides})
    state = api.merge(models.states, **{**options, "overrides": overrides})
    if adabn:
        if batch_norms(network.module):
            with network.preserved():
                network.load(state)
                reestimate_batch_norm(network.segmenter, images, batch_size, config.device)
                state = with_batch_norm_statistics(state, network.state())
            notes.append(
                "BatchNorm statistics were re-estimated on the target images (AdaBN): the checkpoint holds them; "
                "the recipe alone reproduces the merge before re-estimation"
            )
        else:
            notes.append("--adabn: the anchor's network has no BatchNorm layers; nothing was re-estimated")
            adabn = False
    return LearnResult(recipe, state, layer_weights, losses, initial, final, loss, seconds, adabn, notes)
