"""The paper's claims as experiments: which two models are merged, and what the paper reports.

Each claim names two model roles of :func:`segmerge_bench.benchmark.models.regime_specs`; the
first is the default anchor, and ``anchors`` says which may anchor at all (a semantic
model cannot anchor a merge with a panoptic one: the merge would lose the panoptic
output). ``rename`` maps the donor's keys onto the anchor's names when the checkpoints use
different layouts (a DAFormer or panoptic ``.pth`` keeps its encoder under ``backbone.``,
a Hugging Face SegFormer under ``segformer.encoder.``) - the same rule a user writes for
their own files.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PAPER_GAINS: dict[str, float] = {
    "same-architecture": 2.6,
    "different-architecture": 6.8,
    "semantic-to-panoptic": 7.0,
}
"""Gain of the merged model over the best single model in the paper's abstract (mIoU, or mPQ)."""

HF_TO_MMSEG = [(r"^segformer\.encoder\.", "backbone.")]
MMSEG_TO_HF = [(r"^backbone\.", "segformer.encoder.")]


@dataclass(frozen=True)
class Claim:
    name: str
    title: str
    roles: tuple[str, str]
    paper_gain: float | None = None
    #: Rename rules for model i when the other model is the anchor: {i: [(pattern, replacement)]}.
    renames: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    metric: str = "mIoU"
    #: The models that may anchor a merge (the sweep tries the others as anchor too).
    anchors: tuple[int, ...] = (0, 1)

    def rename_for(self, anchor: int) -> dict[int, list[tuple[str, str]]]:
        return {i: rules for i, rules in self.renames.items() if i != anchor}


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "same-architecture",
        "SegFormer adapted from source A + SegFormer adapted from source B (UDA)",
        ("UDA A", "UDA B"),
        PAPER_GAINS["same-architecture"],
    ),
    Claim(
        "same-architecture-source-only",
        "SegFormer trained on source A + SegFormer trained on source B (no adaptation)",
        ("source-only A", "source-only B"),
    ),
    Claim(
        "different-seeds",
        "SegFormer adapted from source A + the same, trained with another seed (same source, same UDA method)",
        ("UDA A", "UDA A, another seed"),
    ),
    Claim(
        "different-uda-methods",
        "SegFormer adapted from source A by self-training (DACS) + the same adapted with masked image "
        "consistency on top (MIC)",
        ("UDA A", "MIC UDA A"),
    ),
    Claim(
        "along-one-run",
        "SegFormer adapted from source A + its own checkpoint half-way through that run",
        ("UDA A", "UDA A, half-way"),
    ),
    Claim(
        "different-architecture",
        "SegFormer adapted from A (HF folder) + DAFormer-style model adapted from B (mmseg .pth)",
        ("UDA A", "DAFormer UDA B"),
        PAPER_GAINS["different-architecture"],
        renames={0: HF_TO_MMSEG, 1: MMSEG_TO_HF},
    ),
    Claim(
        "semantic-to-panoptic",
        "panoptic model adapted from B (EDAPS-style .pth, the anchor) + semantic SegFormer adapted from A "
        "(HF folder): the encoders blend, both heads stay the panoptic model's",
        ("panoptic UDA B", "UDA A"),
        PAPER_GAINS["semantic-to-panoptic"],
        renames={1: HF_TO_MMSEG},
        metric="PQ",
        anchors=(0,),
    ),
)

HEADLINE_CLAIMS = ("same-architecture", "different-architecture", "semantic-to-panoptic")
"""The claims the demo's JSON reports (the paper's three claims)."""
