"""The field's real checkpoint layouts (fixtures: tests/real_layouts.py, with their sources)."""

from __future__ import annotations

import pytest
import torch
from real_layouts import daformer, mmcv_checkpoint, revise_and_check, uda_wrapper
from typer.testing import CliRunner

from segmerge import api
from segmerge.checkpoints import open_checkpoint
from segmerge.cli.app import app
from segmerge.merging.networks import find_networks
from segmerge.merging.sources import TensorMeta


def _save_uda(path, seed):
    torch.save(mmcv_checkpoint(uda_wrapper(seed)), path)
    return str(path)


def test_uda_networks_are_found_and_plain_models_are_not():
    metas = {k: TensorMeta.of(v) for k, v in uda_wrapper(0).items()}
    nets = find_networks(metas)
    assert [(n.prefix, n.role) for n in nets] == [
        ("model.", "student"),
        ("ema_model.", "teacher"),
        ("imnet_model.", "imagenet"),
    ]
    assert find_networks({k: TensorMeta.of(v) for k, v in daformer(0).items()}) == []


def test_uda_merge_schedules_the_student_alone_and_loads_origin_style(tmp_path):
    a, b = _save_uda(tmp_path / "a.pth", 1), _save_uda(tmp_path / "b.pth", 2)
    opened = api.open_merge([a, b])
    student = daformer(1)
    plan = opened.plan
    assert {k.key for k in plan.keys} == set(student)  # the student only, prefix stripped
    assert plan.layers[-1].depth == 1.0 and plan.layers[0].depth == 0.0
    # depth counted within the student: its last layer reaches the end weight
    assert plan.layers[-1].weights[0] == 0.75
    assert any("student" in n and "ema_model." in n and "imnet_model." in n for n in plan.notes)
    out = tmp_path / "m.pth"
    api.write_merge(opened, out, False)
    saved = torch.load(out, weights_only=False)
    assert set(saved) == {"state_dict", "meta"}
    assert len(saved["state_dict"]) == len(student)  # only the chosen network
    assert revise_and_check(saved, student) == []
    merged = saved["state_dict"]["backbone.block1.0.attn.q.weight"]
    expected = (
        0.5 * daformer(1)["backbone.block1.0.attn.q.weight"] + 0.5 * daformer(2)["backbone.block1.0.attn.q.weight"]
    )
    assert torch.allclose(merged, expected)


def test_uda_teacher_on_request_and_wrapper_kept_on_request(tmp_path):
    a, b = _save_uda(tmp_path / "a.pth", 1), _save_uda(tmp_path / "b.pth", 2)
    result = CliRunner().invoke(app, ["merge", a, b, "-o", str(tmp_path / "t.pth"), "--network", "teacher"])
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "t.pth", weights_only=False)["state_dict"]
    key = "backbone.patch_embed1.proj.weight"
    assert torch.allclose(saved[key], 0.5 * daformer(51)[key] + 0.5 * daformer(52)[key])
    assert "network: teacher" in open_checkpoint(tmp_path / "t.pth").provenance()["recipe"]
    result = CliRunner().invoke(app, ["merge", a, b, "-o", str(tmp_path / "w.pth"), "--keep-wrapper"])
    assert result.exit_code == 0, result.output
    wrapped = torch.load(tmp_path / "w.pth", weights_only=False)["state_dict"]
    assert set(wrapped) == set(uda_wrapper(1))
    assert torch.equal(wrapped["ema_model." + key], uda_wrapper(1)["ema_model." + key])
    assert revise_and_check({"state_dict": wrapped}, daformer(1)) == []


def _rename_head(state: dict) -> dict:
    """DAFormer's head keys as a SegFormer-style head spells its MLP embeddings (8 keys, other widths)."""
    out = {}
    for k, v in state.items():
        if ".embed_layers." in k:
            k = k.replace("decode_head.embed_layers.", "decode_head.linear_c.")
            v = torch.zeros(v.shape[0] + 1, *v.shape[1:])
        out[k] = v
    return out


def test_merge_with_nothing_in_common_is_refused_and_writes_nothing(tmp_path):
    torch.save(mmcv_checkpoint(daformer(1)), tmp_path / "a.pth")
    hf_like = {k.replace("backbone.", "segformer.encoder.", 1): v for k, v in daformer(2).items()}
    hf_like = {k: v for k, v in hf_like.items() if not k.startswith("decode_head.")}
    torch.save(hf_like, tmp_path / "b.pth")
    out = tmp_path / "m.pth"
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    assert "0.0% of the anchor's values" in result.output and "--allow-few" in result.output
    assert "hint:" in result.output and "--rename '1:^segformer\\.encoder\\.=backbone.'" in result.output
    allowed = ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(out), "--allow-few"]
    assert CliRunner().invoke(app, allowed).exit_code == 0 and out.exists()


def test_no_hint_that_leads_to_shape_mismatches():
    a = daformer(1)
    b = _rename_head(daformer(2))
    p = api.plan([a, b])
    assert not any("linear_c" in h for h in p.hints)


def test_relatedness_covers_norm_only_layers_and_merge_prints_it(tmp_path):
    a = daformer(1)
    b = {k: v.clone() for k, v in a.items()}
    gen = torch.Generator().manual_seed(5)
    b["backbone.norm4.weight"] = torch.randn(b["backbone.norm4.weight"].shape, generator=gen)
    b["backbone.norm4.bias"] = torch.randn(b["backbone.norm4.bias"].shape, generator=gen)
    p = api.plan([a, b], check_relatedness=True)
    assert any("backbone.norm4" in w and "unrelated" in w for w in p.warnings)
    torch.save(a, tmp_path / "a.pth")
    torch.save(b, tmp_path / "b.pth")
    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "-o", str(tmp_path / "m.pth")]
    )
    assert result.exit_code == 0 and "backbone.norm4" in result.output


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_the_relatedness_check_a_merge_makes_as_it_reads_equals_the_plans(tmp_path, suffix):
    """`segmerge merge` checks relatedness on the tensors it merges, without reading them twice: the
    same cosines, layer by layer, as `segmerge plan --check` (peeks at safetensors, whole .pth tensors)."""
    from safetensors.torch import save_file

    from segmerge.merging.execute import execute
    from segmerge.merging.relatedness import SimilarityTally, layer_similarities

    a = daformer(1)
    b = {k: v + 0.5 * torch.randn_like(v) if i % 3 == 0 else v.clone() for i, (k, v) in enumerate(a.items())}
    c = daformer(3)
    paths = [tmp_path / f"{name}{suffix}" for name in "abc"]
    for path, state in zip(paths, (a, b, c), strict=True):
        torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    opened = api.open_merge([str(p) for p in paths])
    for sample in (7, 4096, None):
        tally = SimilarityTally(sample)
        for _ in execute(opened.plan, opened.sources, opened.method, None, tally):
            pass
        during = {(s.layer, s.model): s.cosine for s in tally.similarities()}
        apart = {(s.layer, s.model): s.cosine for s in layer_similarities(opened.plan, opened.sources, sample)}
        assert during.keys() == apart.keys() and len(during) > 10
        assert all(during[k] == pytest.approx(apart[k], abs=1e-12) for k in during)
        assert min(v for (_, m), v in during.items() if m == 2) < 0.2 < min(v for (_, m), v in during.items() if m == 1)
    planned = api.plan([str(p) for p in paths], check_relatedness=True).warnings
    api.write_merge(opened, tmp_path / f"m{suffix}", False, check_relatedness=True)
    assert opened.plan.warnings == planned and any("unrelated" in w for w in planned)


def test_a_module_merged_in_part_is_reported():
    a = daformer(1)
    b = {k: (torch.zeros(v.shape[0] + 2, *v.shape[1:]) if ".attn.kv." in k else v) for k, v in daformer(2).items()}
    p = api.plan([a, b])
    assert any(
        "merged only in part" in w and "backbone.block1.0.attn (merged" in w and "kept kv" in w for w in p.warnings
    )


MMENGINE_WRITER = r'''
"""Writes an mmseg 1.x checkpoint as mmengine's Runner.save_checkpoint lays it out
(open-mmlab/mmengine mmengine/runner/runner.py, save_checkpoint: {meta, state_dict,
message_hub, optimizer, param_schedulers}; message_hub from MessageHub.state_dict in
mmengine/logging/message_hub.py: log_scalars of HistoryBuffers, runtime_info, resumed_keys).
The classes are look-alikes under mmengine's module names, made in this process only."""
import sys, types
from collections import OrderedDict
import numpy as np
import torch

sys.path.insert(0, sys.argv[2])
from real_layouts import mit_mmseg1, segformer_head_mmseg1

for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
    sys.modules[name] = types.ModuleType(name)


class HistoryBuffer:
    def __init__(self, values):
        self.max_length = 1000000
        self._log_history = np.array(values, dtype=np.float64)
        self._count_history = np.ones(len(values), dtype=np.int64)
        # a method defined in the class body: pickle protocol 2 writes getattr(HistoryBuffer, 'mean')
        self._statistics_methods = {"mean": HistoryBuffer.mean}

    def mean(self, window_size=None):
        return float(self._log_history.mean())


HistoryBuffer.__module__ = "mmengine.logging.history_buffer"
sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = HistoryBuffer
sys.modules["mmengine.logging"].HistoryBuffer = HistoryBuffer

state = {**mit_mmseg1(1), **segformer_head_mmseg1(1)}
meta = {
    "epoch": 0, "iter": 40000, "cfg": "model = dict(type='EncoderDecoder')", "seed": 0,
    "experiment_name": "segformer_mit-b5", "time": "20240101_000000", "mmengine_version": "0.10.4",
    "dataset_meta": {"classes": ("road", "sidewalk"), "palette": [[128, 64, 128], [244, 35, 232]],
                     "label_map": None, "reduce_zero_label": False},
}
hub = {
    "log_scalars": OrderedDict({"train/loss": HistoryBuffer([0.5, 0.4]), "train/lr": HistoryBuffer([6e-05])}),
    "runtime_info": OrderedDict({"iter": 40000, "max_iters": 160000}),
    "resumed_keys": OrderedDict({"train/loss": True, "iter": True}),
}
checkpoint = {
    "meta": meta, "state_dict": state, "message_hub": hub,
    "optimizer": {"state": {0: {"step": torch.tensor(40000.0)}}, "param_groups": [{"lr": 6e-05, "params": [0]}]},
    "param_schedulers": [{"eta_min": 0.0, "begin": 1500, "end": 160000, "last_step": 40000, "by_epoch": False}],
}
torch.save(checkpoint, sys.argv[1])
'''


def _mmengine_file(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "write_mmengine.py"
    script.write_text(MMENGINE_WRITER)
    out = tmp_path / "iter_40000.pth"
    subprocess.run([sys.executable, str(script), str(out), str(Path(__file__).parent)], check=True)
    return out


def test_mmengine_file_loads_without_mmengine_or_trust_and_keeps_meta(tmp_path):
    import sys

    import pytest
    from real_layouts import mit_mmseg1, segformer_head_mmseg1

    from segmerge.errors import CheckpointError

    path = _mmengine_file(tmp_path)
    assert "mmengine" not in sys.modules
    checkpoint = open_checkpoint(path)  # no --trust-pickle, no mmengine
    expected = {**mit_mmseg1(1), **segformer_head_mmseg1(1)}
    state = checkpoint.state_dict()
    assert set(state) == set(expected) and all(torch.equal(state[k], expected[k]) for k in expected)
    assert "mmengine" not in sys.modules
    meta = checkpoint.pth_content.meta
    assert meta["dataset_meta"]["label_map"] is None and meta["dataset_meta"]["reduce_zero_label"] is False
    api.merge_to_file([str(path), str(path)], output=tmp_path / "m.pth", allow_few=True)
    saved = torch.load(tmp_path / "m.pth", weights_only=True)
    assert set(saved) == {"state_dict", "meta"}
    assert saved["meta"]["dataset_meta"] == meta["dataset_meta"] and saved["meta"]["iter"] == 40000
    with pytest.raises(CheckpointError, match="needs the module 'mmengine'") as err:
        open_checkpoint(path, trust_pickle=True)
    assert "truncated" not in str(err.value)


def test_refusal_lists_only_refused_globals(tmp_path):
    import numpy as np
    import pytest

    from segmerge.errors import UnsafeCheckpointError

    torch.save(
        {"state_dict": daformer(1), "meta": {"hist": np.arange(3), "f": np.float64(1.0)}, "x": print},
        tmp_path / "bad.pth",
    )
    with pytest.raises(UnsafeCheckpointError) as err:
        open_checkpoint(tmp_path / "bad.pth")
    assert "builtins.print" in str(err.value) and "numpy" not in str(err.value)


def _layers(plan):
    return [layer.name for layer in plan.layers]


def test_daformer_depth_follows_the_forward_pass(tmp_path):
    torch.save(mmcv_checkpoint(daformer(1)), tmp_path / "a.pth")
    torch.save(mmcv_checkpoint(daformer(2)), tmp_path / "b.pth")
    plan = api.plan([str(tmp_path / "a.pth"), str(tmp_path / "b.pth")])
    names = _layers(plan)
    assert names[:8] == [
        "backbone.patch_embed1.proj",
        "backbone.patch_embed1.norm",
        "backbone.block1.0.norm1",
        "backbone.block1.0.attn.q",
        "backbone.block1.0.attn.sr",
        "backbone.block1.0.attn.norm",
        "backbone.block1.0.attn.kv",
        "backbone.block1.0.attn.proj",
    ]
    assert names.index("backbone.norm3") + 1 == names.index("backbone.patch_embed4.proj")
    assert names[-1] == "decode_head.conv_seg" and plan.layers[-1].depth == 1.0
    assert names.index("decode_head.fuse_layer.aspp_modules.1.depthwise_conv.conv") + 1 == names.index(
        "decode_head.fuse_layer.aspp_modules.1.depthwise_conv.bn"
    )
    assert any("forward pass" in n and "mit-mmseg0" in n for n in plan.notes)


def test_mmseg1_and_hf_layouts_follow_the_forward_pass():
    from real_layouts import hf_segformer, mit_mmseg1, segformer_head_mmseg1

    names = _layers(
        api.plan([{**mit_mmseg1(1), **segformer_head_mmseg1(1)}, {**mit_mmseg1(2), **segformer_head_mmseg1(2)}])
    )
    assert names[:5] == [
        "backbone.layers.0.0.projection",
        "backbone.layers.0.0.norm",
        "backbone.layers.0.1.0.norm1",
        "backbone.layers.0.1.0.attn.sr",
        "backbone.layers.0.1.0.attn.norm",
    ]
    assert names.index("backbone.layers.0.2") + 1 == names.index("backbone.layers.1.0.projection")
    assert names[-1] == "decode_head.conv_seg"
    names = _layers(api.plan([hf_segformer(1), hf_segformer(2)]))
    block = "segformer.encoder.block.0.0."
    assert names[2:6] == [
        block + "layer_norm_1",
        block + "attention.self.query",
        block + "attention.self.sr",
        block + "attention.self.layer_norm",
    ]
    assert names.index("segformer.encoder.layer_norm.0") + 1 == names.index("segformer.encoder.patch_embeddings.1.proj")
    assert names[-4:] == [
        "decode_head.linear_c.3.proj",
        "decode_head.linear_fuse",
        "decode_head.batch_norm",
        "decode_head.classifier",
    ]


def test_one_model_gets_the_same_depths_from_every_format(tmp_path):
    import json

    from real_layouts import hf_segformer
    from safetensors.torch import save_file

    state = hf_segformer(1)
    torch.save(state, tmp_path / "pytorch_model.bin")  # module order, as a hub .bin
    save_file(state, tmp_path / "sorted.safetensors")  # name-sorted, as save_pretrained writes
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(
        json.dumps({"model_type": "segformer", "architectures": ["SegformerForSemanticSegmentation"]})
    )
    other = str(tmp_path / "other.pth")
    torch.save(hf_segformer(2), other)
    depths = []
    for path in (tmp_path / "pytorch_model.bin", tmp_path / "sorted.safetensors", folder):
        plan = api.plan([str(path), other])
        depths.append({layer.name: layer.depth for layer in plan.layers})
        assert not any("sorted by name" in w for w in plan.warnings)
    assert depths[0] == depths[1] == depths[2]
    assert depths[0]["segformer.encoder.patch_embeddings.3.proj"] > depths[0]["segformer.encoder.layer_norm.2"]


def test_order_from_a_donor_that_keeps_module_order(tmp_path):
    from safetensors.torch import load_file, save_file
    from tiny_models import tiny_state

    state = tiny_state(1)
    save_file(state, tmp_path / "a.safetensors")
    assert list(load_file(tmp_path / "a.safetensors")) != list(state)  # stored sorted by name
    torch.save(tiny_state(2), tmp_path / "b.pth")
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.pth")
    plan = api.plan([a, b])
    module_order = list(dict.fromkeys(k.rpartition(".")[0] for k in state if state[k].is_floating_point()))
    assert _layers(plan) == module_order
    assert any("taken from model 1" in n for n in plan.notes)
    plan = api.plan([a, b], order_from=1)
    assert _layers(plan) == module_order and any("model 1's key order" in n for n in plan.notes)
    result = CliRunner().invoke(app, ["plan", a, b, "--order-from", "1", "--no-check"])
    assert result.exit_code == 0 and "model 1's key order" in result.output


def _hf_folder(path, state):
    import json

    from safetensors.torch import save_file

    path.mkdir()
    save_file(state, path / "model.safetensors")
    config = {
        "model_type": "segformer",
        "architectures": ["SegformerForSemanticSegmentation"],
        "num_channels": 3,
        "num_encoder_blocks": 4,
        "depths": [2, 2, 2, 2],
        "sr_ratios": [8, 4, 2, 1],
        "hidden_sizes": [8, 16, 24, 32],
        "patch_sizes": [7, 3, 3, 3],
        "strides": [4, 2, 2, 2],
        "num_attention_heads": [1, 2, 3, 4],
        "mlp_ratios": [4, 4, 4, 4],
        "decoder_hidden_size": 16,
        "num_labels": 19,
    }
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


def test_daformer_and_hf_segformer_merge_every_encoder_tensor(tmp_path):
    from real_layouts import hf_segformer, mit_mmseg0

    torch.save(mmcv_checkpoint(daformer(1)), tmp_path / "daformer.pth")
    hf = _hf_folder(tmp_path / "hf_segformer", hf_segformer(2))
    opened = api.open_merge([str(tmp_path / "daformer.pth"), hf])
    plan = opened.plan
    encoder = [k for k in mit_mmseg0(1)]
    merged = {k.key for k in plan.keys if k.action.value == "merged"}
    assert set(encoder) <= merged  # attention included: q from query, kv from key and value
    assert any("converted from the Hugging Face transformers layout" in n for n in plan.notes)
    out = tmp_path / "m.pth"
    api.write_merge(opened, out, False)
    got = torch.load(out, weights_only=True)["state_dict"]
    # the same as merging with the donor's tensors written in the anchor's layout beforehand
    expected = api.merge([daformer(1), mit_mmseg0(2)], allow_few=True)
    for key in encoder:
        assert torch.equal(got[key], expected[key]), key


def test_conversions_round_trip_bit_identically(tmp_path):
    from real_layouts import hf_segformer, mit_mmseg1

    segformer_mmseg = {**daformer(3)}  # MiT + DAFormer head: the head has no HF or mmseg 1.x name
    torch.save(mmcv_checkpoint(segformer_mmseg), tmp_path / "a.pth")
    runner = CliRunner()
    steps = [("a.pth", "b.safetensors", "hf"), ("b.safetensors", "c.pth", "mmseg1"), ("c.pth", "d.pth", "mmseg")]
    for src, dst, to in steps:
        result = runner.invoke(app, ["convert", str(tmp_path / src), str(tmp_path / dst), "--to", to])
        assert result.exit_code == 0, result.output
    assert (
        "of a SegFormer head the hf layout names"
        in runner.invoke(app, ["convert", str(tmp_path / "a.pth"), str(tmp_path / "x.pth"), "--to", "hf"]).output
    )
    back = open_checkpoint(tmp_path / "d.pth").state_dict()
    assert set(back) == set(segformer_mmseg)
    assert all(torch.equal(back[k], segformer_mmseg[k]) and back[k].dtype == segformer_mmseg[k].dtype for k in back)
    encoder1 = open_checkpoint(tmp_path / "c.pth").state_dict()
    assert all(torch.equal(encoder1[k], v) for k, v in mit_mmseg1(3).items())
    hf = open_checkpoint(tmp_path / "b.safetensors").state_dict()
    assert all(torch.equal(hf[k], v) for k, v in hf_segformer(3).items() if k.startswith("segformer."))
    assert torch.load(tmp_path / "x.pth", weights_only=True)["meta"]["iter"] == 40000  # .pth to .pth keeps meta


def test_converted_segformer_loads_in_transformers_without_missing_keys(tmp_path):
    import pytest

    transformers = pytest.importorskip("transformers")
    from real_layouts import hf_segformer

    # an mmseg 0.x SegFormer (MiT + SegFormer MLP head), from the HF fixture's tensors
    folder = tmp_path / "hf_in"
    _hf_folder(folder, hf_segformer(4))
    assert CliRunner().invoke(app, ["convert", str(folder), str(tmp_path / "s.pth"), "--to", "mmseg"]).exit_code == 0
    assert "decode_head.linear_c4.proj.weight" in open_checkpoint(tmp_path / "s.pth").metas()
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "s.pth"), str(tmp_path / "hf_out"), "--to", "hf"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    model, info = transformers.SegformerForSemanticSegmentation.from_pretrained(
        tmp_path / "hf_out", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    state = model.state_dict()
    key = "segformer.encoder.block.0.0.attention.self.key.weight"
    expected = hf_segformer(4)
    if key in state:  # transformers 4.x names; 5.x renames modules internally
        assert torch.equal(state[key], expected[key])


def test_a_converted_folder_appears_whole_with_its_config_or_not_at_all(tmp_path, monkeypatch):
    from real_layouts import hf_segformer

    import segmerge.checkpoints.hf_folder as hf_folder

    folder = tmp_path / "hf_in"
    _hf_folder(folder, hf_segformer(4))
    assert CliRunner().invoke(app, ["convert", str(folder), str(tmp_path / "s.pth"), "--to", "mmseg"]).exit_code == 0

    def broken(metas):
        raise OSError("disk full")

    monkeypatch.setattr(hf_folder, "segformer_config", broken)
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "s.pth"), str(tmp_path / "hf_out"), "--to", "hf"])
    assert result.exit_code != 0
    assert not (tmp_path / "hf_out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hf_in", "s.pth"]
    monkeypatch.undo()
    assert (
        CliRunner().invoke(app, ["convert", str(tmp_path / "s.pth"), str(tmp_path / "hf_out"), "--to", "hf"]).exit_code
        == 0
    )
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "hf_out").iterdir()}


def test_daformer_and_mmseg1_segformer_merge_every_encoder_tensor(tmp_path):
    from real_layouts import mit_mmseg0, mit_mmseg1, segformer_head_mmseg1

    torch.save(mmcv_checkpoint(daformer(1)), tmp_path / "daformer.pth")
    torch.save({"state_dict": {**mit_mmseg1(2), **segformer_head_mmseg1(2)}}, tmp_path / "segformer1.pth")
    result = CliRunner().invoke(
        app, ["merge", str(tmp_path / "daformer.pth"), str(tmp_path / "segformer1.pth"), "-o", str(tmp_path / "m.pth")]
    )
    assert result.exit_code == 0, result.output
    assert "converted from the mmseg 1.x layout" in result.output
    # the heads differ but both end in a 19-class conv_seg: its bias alone matches, and is reported
    assert "decode_head: only 1 of its" in " ".join(result.output.split())
    got = torch.load(tmp_path / "m.pth", weights_only=True)["state_dict"]
    bias = "decode_head.conv_seg.bias"
    expected = api.merge([daformer(1), {**mit_mmseg0(2), bias: segformer_head_mmseg1(2)[bias]}])
    assert all(torch.equal(got[k], expected[k]) for k in mit_mmseg0(1))
    assert not torch.equal(got["backbone.block1.0.attn.kv.weight"], daformer(1)["backbone.block1.0.attn.kv.weight"])


def test_networks_in_mic_files_and_no_false_copies(monkeypatch):
    import real_layouts

    from segmerge.merging.networks import pick_network

    # MIC (lhoyer/MIC seg/mmseg/models/uda/dacs.py l. 94-101, masking_consistency_module.py
    # l. 37 and teacher_module.py l. 33): with its own EMA teacher, a fourth copy under mic.teacher.ema_model.
    state = {**uda_wrapper(0), **{f"mic.teacher.ema_model.{k}": v for k, v in daformer(7).items()}}
    nets = find_networks({k: TensorMeta.of(v) for k, v in state.items()})
    assert [n.prefix for n in nets] == ["model.", "ema_model.", "imnet_model.", "mic.teacher.ema_model."]
    assert pick_network(nets, None).prefix == "model." and pick_network(nets, "teacher").prefix == "ema_model."
    # a deep stage of identical blocks (MiT-B5 has 40 in stage 3) is one network, not copies
    monkeypatch.setattr(real_layouts, "DEPTHS", (2, 2, 12, 2))
    assert find_networks({k: TensorMeta.of(v) for k, v in real_layouts.daformer(0).items()}) == []


def test_mask2former_forward_order_from_a_name_sorted_file():
    """Key names as transformers' models/mask2former/modeling_mask2former.py registers them
    (Mask2FormerForUniversalSegmentation: model.pixel_level_module.{encoder, decoder},
    model.transformer_module, class_predictor)."""
    from segmerge.merging.forward_order import forward_order

    pix, trf = "model.pixel_level_module.decoder.", "model.transformer_module."
    forward = [
        "model.pixel_level_module.encoder.embeddings.patch_embeddings.projection.weight",
        "model.pixel_level_module.encoder.encoder.layers.0.blocks.0.layernorm_before.weight",
        "model.pixel_level_module.encoder.encoder.layers.1.blocks.0.layernorm_before.weight",
        pix + "input_projections.0.0.weight",
        pix + "level_embed",
    ]
    for b in (0, 1, 10):
        forward += [pix + f"encoder.layers.{b}.self_attn.value_proj.weight", pix + f"encoder.layers.{b}.fc1.weight"]
    forward += [pix + "adapter_1.0.weight", pix + "layer_1.0.weight", pix + "mask_projection.weight"]
    forward += [trf + "queries_embedder.weight"]
    for b in (0, 2, 9):
        forward += [
            trf + f"decoder.layers.{b}.cross_attn.in_proj_weight",
            trf + f"decoder.layers.{b}.self_attn.q_proj.weight",
            trf + f"decoder.layers.{b}.final_layer_norm.weight",
        ]
    forward += [trf + "decoder.layernorm.weight", trf + "decoder.mask_predictor.mask_embedder.0.0.weight"]
    forward += ["class_predictor.weight"]
    found = forward_order(sorted(forward))
    assert found is not None and found.families == ["mask2former-hf"]
    assert found.keys == forward


def test_edaps_panoptic_model_forward_order():
    """EDAPS's MaskRCNNPanoptic registers backbone, neck, rpn_head, roi_head, then decode_head
    (susaha/edaps mmdet/models/detectors/mask_rcnn_panoptic.py l. 48; mmdet fpn.py, rpn_head.py,
    convfc_bbox_head.py, fcn_mask_head.py)."""
    from segmerge.merging.forward_order import forward_order

    encoder = list(real_layouts_mit())
    neck = [f"neck.lateral_convs.{i}.conv.weight" for i in range(4)] + [
        f"neck.fpn_convs.{i}.conv.weight" for i in range(4)
    ]
    rpn = ["rpn_head.rpn_conv.weight", "rpn_head.rpn_cls.weight", "rpn_head.rpn_reg.weight"]
    bbox = [f"roi_head.bbox_head.{m}.weight" for m in ("shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg")]
    mask = [f"roi_head.mask_head.convs.{i}.conv.weight" for i in range(4)]
    mask += ["roi_head.mask_head.upsample.weight", "roi_head.mask_head.conv_logits.weight"]
    head = [k for k in daformer(0) if k.startswith("decode_head.")]
    registered = encoder + neck + rpn + bbox + mask + head
    found = forward_order(registered)
    assert found is not None and "mmdet-panoptic" in found.families and found.unmatched == 0
    keys = found.keys
    assert keys.index("backbone.norm4.bias") < keys.index("neck.lateral_convs.0.conv.weight")
    assert keys.index("neck.fpn_convs.3.conv.weight") < keys.index("decode_head.embed_layers.0.proj.weight")
    assert keys.index("decode_head.conv_seg.bias") < keys.index("rpn_head.rpn_conv.weight")
    assert keys[-1] == "roi_head.mask_head.conv_logits.weight"

    def layers(ks):
        return list(dict.fromkeys(k.rpartition(".")[0] for k in ks))

    assert layers(forward_order(sorted(registered)).keys) == layers(keys)  # a name-sorted file: same layer order


def real_layouts_mit():
    from real_layouts import mit_mmseg0

    return mit_mmseg0(0)


def test_options_beside_a_recipe_and_a_network_choice_on_a_plain_file_are_refused(tmp_path):
    from segmerge.errors import CheckpointError, RecipeError

    for i in (1, 2):
        torch.save({"layer.weight": torch.randn(4, 4)}, tmp_path / f"{i}.pth")
    recipe = api.make_recipe([str(tmp_path / "1.pth"), str(tmp_path / "2.pth")])
    with pytest.raises(RecipeError, match="cannot be added to it"):
        api.make_recipe(recipe, anchor=1)
    with pytest.raises(CheckpointError, match="holds one network"):
        open_checkpoint(tmp_path / "1.pth", network="teacher")
    assert open_checkpoint(tmp_path / "1.pth", network="student").metas().keys() == {"layer.weight"}
    plan = api.plan([str(tmp_path / "1.pth"), str(tmp_path / "2.pth")], keep_wrapper=True)
    assert any("no wrapper to keep" in w for w in plan.warnings)
