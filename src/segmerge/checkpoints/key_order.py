"""The order of a checkpoint's layers, which gives their depth.

Depth in the layer-wise rule follows the forward pass. For the families the field uses
(MiT in its three layouts, the mmseg and transformers SegFormer, DAFormer, HRDA and UperNet
heads) the order comes from their profiles (:mod:`segmerge.merging.forward_order`), the
same from every file format. Otherwise ``.pth`` files keep module registration order,
which is used as it is; safetensors files written by the ``safetensors`` library (and so
by ``save_pretrained``) sort keys by name, where ``block.10`` precedes ``block.2`` and
``decode_head`` precedes the encoder: for those the order is rebuilt from the key names
(numbers compared as numbers, stage by stage, heads last), and the plan warns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

from segmerge.merging.forward_order import forward_order
from segmerge.merging.sources import TensorMeta

HEAD_NAMES = {
    "decode_head", "auxiliary_head", "head", "heads", "classifier", "decoder", "sem_seg_head",
    "panoptic_head", "seg_head", "fc", "cls_head", "mask_head", "instance_head",
}  # fmt: skip
EMBED_WORDS = ("embed", "stem", "patch")
CLASSIFIER_WORDS = ("classifier", "conv_seg", "cls_score", "logits")


def looks_name_sorted(keys: Sequence[str], metas: Mapping[str, TensorMeta]) -> bool:
    """True when keys of each dtype appear in lexicographic order (how safetensors saves)."""
    if len(keys) < 3:
        return False
    last: dict = {}
    for key in keys:
        dtype = metas[key].dtype
        if dtype in last and last[dtype] > key:
            return False
        last[dtype] = key
    return True


def heuristic_order(keys: Sequence[str]) -> list[str]:
    return sorted(keys, key=_sort_key)


def _sort_key(key: str):
    parts = key.split(".")
    is_head = any(p in HEAD_NAMES for p in parts[:3])
    numbers = [int(n) for n in re.findall(r"\d+", key)]
    stage = numbers[0] if numbers else 1 << 30  # unnumbered modules (fuse, norm) follow the stages
    is_classifier = any(w in key for w in CLASSIFIER_WORDS)
    module = parts[:-1]
    in_block = any(re.fullmatch(r"(block|blocks|layer|layers)\d*", p) for p in module)
    if any(w in key.lower() for w in EMBED_WORDS):
        role = 0
    elif any("norm" in p for p in module[-2:]) and not in_block:
        role = 2  # a stage's closing norm comes after its blocks
    else:
        role = 1
    natural = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]
    return (is_head, is_classifier, stage, role, natural)


def restore_order(metas: Mapping[str, TensorMeta], config: Mapping | None = None) -> tuple[dict[str, TensorMeta], str]:
    """The metas in forward order, and how that order was found.

    ``forward (FAMILIES)`` when a profile of :mod:`segmerge.merging.forward_order` knows the
    keys (whatever the file's order), else ``file`` when the file keeps module order, else
    ``key-names`` (the heuristic below). ``config`` is accepted for compatibility and unused.
    """
    keys = list(metas)
    found = _forward_order(tuple(keys))
    if found is not None:
        return {k: metas[k] for k in found.keys}, f"forward ({', '.join(found.families)})"
    if not looks_name_sorted(keys, metas):
        return dict(metas), "file"
    return {k: metas[k] for k in heuristic_order(keys)}, "key-names"


@functools.lru_cache(maxsize=8)
def _forward_order(keys: tuple[str, ...]):
    # Fine-tunes of one model share their key list: ten inputs cost one ordering, not ten.
    return forward_order(keys)
