import torch

from segmerge.checkpoints.key_order import heuristic_order, looks_name_sorted, restore_order
from segmerge.merging.sources import TensorMeta


def metas(keys):
    return {k: TensorMeta((1,), torch.float32) for k in keys}


def test_name_sorted_files_are_detected():
    assert looks_name_sorted(["a.x", "b.x", "c.x"], metas(["a.x", "b.x", "c.x"]))
    assert not looks_name_sorted(["b.x", "a.x", "c.x"], metas(["b.x", "a.x", "c.x"]))


def test_heuristic_restores_stage_order_with_heads_last():
    module_order = [
        "segformer.encoder.patch_embeddings.0.proj.weight",
        "segformer.encoder.block.0.0.attention.self.query.weight",
        "segformer.encoder.layer_norm.0.weight",
        "segformer.encoder.patch_embeddings.1.proj.weight",
        "segformer.encoder.block.1.0.attention.self.query.weight",
        "segformer.encoder.block.1.1.attention.self.query.weight",
        "segformer.encoder.layer_norm.1.weight",
        "segformer.encoder.block.10.0.mlp.weight",
        "decode_head.linear_c.0.proj.weight",
        "decode_head.linear_fuse.weight",
        "decode_head.classifier.weight",
    ]
    assert heuristic_order(sorted(module_order)) == module_order


def test_files_in_module_order_are_left_alone():
    keys = ["stem.weight", "block.0.weight", "head.weight"]
    ordered, how = restore_order(metas(keys))
    assert list(ordered) == keys and how == "file"
