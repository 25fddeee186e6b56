"""Recovering module order when a file stores its keys sorted by name.

Depth in the layer-wise rule follows module registration order. ``.pth`` files keep it;
safetensors files written by the ``safetensors`` library (and so by ``save_pretrained``)
sort keys by name, where ``block.10`` precedes ``block.2`` and ``decode_head`` precedes
the encoder. For such files the order is rebuilt: from the Hugging Face model class named
in ``config.json`` when ``transformers`` can build it (on the meta device: no weights),
otherwise from the key names (numbers compared as numbers, stage by stage, heads last).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

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


def hf_model_order(config: Mapping) -> list[str] | None:
    """Module registration order of the Hugging Face model a config describes, if buildable."""
    architectures = config.get("architectures") or []
    if not architectures or "model_type" not in config:
        return None
    try:
        import torch
        import transformers

        model_class = getattr(transformers, architectures[0])
        config_obj = transformers.AutoConfig.for_model(**dict(config))
        with torch.device("meta"):
            model = model_class(config_obj)
        return list(model.state_dict().keys())
    except Exception:  # an architecture this transformers cannot build: fall back to names
        return None


def restore_order(metas: Mapping[str, TensorMeta], config: Mapping | None = None) -> tuple[dict[str, TensorMeta], str]:
    """The metas in module order, and how that order was found."""
    keys = list(metas)
    if not looks_name_sorted(keys, metas):
        return dict(metas), "file"
    if config is not None:
        reference = hf_model_order(config)
        if reference:
            rank = {k: i for i, k in enumerate(reference)}
            known = [k for k in keys if k in rank]
            if len(known) >= 0.9 * len(keys):
                ordered = sorted(known, key=rank.__getitem__) + heuristic_order([k for k in keys if k not in rank])
                return {k: metas[k] for k in ordered}, "model-class"
    return {k: metas[k] for k in heuristic_order(keys)}, "key-names"
