"""Loading models to evaluate (HF folders, user factories) and running inference on them."""

from __future__ import annotations

import os

import pytest
import torch

from segmerge.errors import SegmergeError
from segmerge.evaluation.prediction import InferenceConfig, ensemble_probabilities, predict, window_origins
from segmerge.segmenters import load_segmenter
from segmerge.segmenters.base import Segmenter, check_classes

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def predict_probabilities(segmenter, images, config):
    return torch.cat([batch.probabilities[0] for batch in predict([segmenter], images, config)])


FACTORY = """
import torch

class PixelNet(torch.nn.Module):
    num_classes = 5

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 1)

    def forward(self, x):
        return {"logits": self.conv(x)}


def build(checkpoint):
    net = PixelNet()
    net.load_state_dict(torch.load(checkpoint, weights_only=True))
    return net
"""


@pytest.fixture
def factory(tmp_path):
    (tmp_path / "my_factory.py").write_text(FACTORY)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1)
    torch.save({"conv.weight": conv.weight.data, "conv.bias": conv.bias.data}, tmp_path / "net.pth")
    return tmp_path


def test_user_factory_builds_from_a_checkpoint(factory):
    s = load_segmenter(str(factory / "net.pth"), f"{factory / 'my_factory.py'}:build")
    assert s.num_classes == 5 and s.num_parameters == 20
    images = torch.randint(0, 255, (2, 16, 24, 3), dtype=torch.uint8)
    probs = predict_probabilities(s, images, InferenceConfig())
    assert probs.shape == (2, 5, 16, 24)
    assert torch.allclose(probs.sum(1), torch.ones(2, 16, 24), atol=1e-5)


def test_bad_factory_specs_are_explained(factory):
    with pytest.raises(SegmergeError, match="FILE.py:function"):
        load_segmenter(str(factory / "net.pth"), "nofunction")
    with pytest.raises(SegmergeError, match="has no function 'make'"):
        load_segmenter(str(factory / "net.pth"), f"{factory / 'my_factory.py'}:make")
    with pytest.raises(SegmergeError, match="cannot import"):
        load_segmenter(str(factory / "net.pth"), "not_a_module_xyz:build")


def test_sliding_window_equals_whole_image_for_a_pointwise_model(factory):
    s = load_segmenter(str(factory / "net.pth"), f"{factory / 'my_factory.py'}:build")
    images = torch.randint(0, 255, (1, 37, 53, 3), dtype=torch.uint8)
    whole = predict_probabilities(s, images, InferenceConfig("whole"))
    slide = predict_probabilities(s, images, InferenceConfig("slide", crop=(16, 20), stride=(10, 13), batch_size=3))
    assert torch.allclose(whole, slide, atol=1e-5)


def test_windows_cover_the_image_and_end_flush():
    assert window_origins(100, 40, 30) == [0, 30, 60]
    assert window_origins(30, 40, 30) == [0]
    starts = window_origins(1024, 512, 341)
    assert starts[0] == 0 and starts[-1] == 512


def test_ensemble_is_the_mean_of_probabilities():
    a, b = torch.rand(1, 3, 4, 4).softmax(1), torch.rand(1, 3, 4, 4).softmax(1)
    assert torch.allclose(ensemble_probabilities([a, b]), (a + b) / 2)


def test_hf_segformer_folder(tmp_path):
    from segmerge_bench.zoo.toy_checkpoints import tiny_segformer

    tiny_segformer(seed=0).save_pretrained(tmp_path / "seg")
    s = load_segmenter(str(tmp_path / "seg"))
    assert s.num_classes == 19 and s.scores_are_logits
    probs = predict_probabilities(s, torch.randint(0, 255, (1, 64, 96, 3), dtype=torch.uint8), InferenceConfig())
    assert probs.shape == (1, 19, 64, 96)
    with pytest.raises(SegmergeError, match="predicts 19 classes but the protocol has 16"):
        check_classes(s, 16)


def test_hf_mask2former_folder_semantic_and_panoptic(tmp_path):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = Mask2FormerConfig(
        backbone_config=backbone, num_labels=19, hidden_dim=32, mask_feature_size=32, feature_size=32,
        num_queries=10, encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64,
        num_attention_heads=2, use_pretrained_backbone=False,
    )  # fmt: skip
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path / "m2f")
    s = load_segmenter(str(tmp_path / "m2f"))
    assert s.num_classes == 19 and not s.scores_are_logits
    images = torch.randint(0, 255, (1, 64, 128, 3), dtype=torch.uint8)
    probs = predict_probabilities(s, images, InferenceConfig())
    assert probs.shape == (1, 19, 64, 128)
    assert torch.allclose(probs.sum(1), torch.ones(1, 64, 128), atol=1e-4)
    ids, segments = s.panoptic(s.normalise(images), (64, 128), thing_ids={11, 13})
    assert ids.shape == (64, 128)
    assert all(seg["category_id"] in range(19) for seg in segments)
    # The prediction path gives the same panoptic segmentation from the forward pass it scores with.
    [batch] = predict([s], images, InferenceConfig(), keep_outputs=True)
    [(batch_ids, batch_segments)] = batch.panoptic(0, {11, 13})
    assert (batch_ids == ids.numpy()).all() and batch_segments == segments
    with pytest.raises(SegmergeError, match="cannot group another model's classes"):
        batch.panoptic(0, {11, 13}, classes=probs.argmax(1))


class CountingNet(torch.nn.Module):
    """A pointwise 4-class network that counts the images it has run on."""

    num_classes = 4

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return self.conv(x)


def test_predict_runs_each_network_once_per_image_and_gives_every_consumer_its_part():
    torch.manual_seed(0)
    nets = [CountingNet(), CountingNet()]
    segmenters = [Segmenter(f"m{i}", net, 4, lambda logits: logits) for i, net in enumerate(nets)]
    images = torch.randint(0, 255, (5, 8, 12, 3), dtype=torch.uint8)
    batches = list(predict(segmenters, images, InferenceConfig(batch_size=2), keep_outputs=True))
    assert [(b.indices.start, b.indices.stop) for b in batches] == [(0, 2), (2, 4), (4, 5)]
    assert [net.images for net in nets] == [5, 5]
    for batch in batches:
        own = [s.scores(s.normalise(images[batch.indices])).softmax(1) for s in segmenters]
        for k in range(2):
            assert torch.allclose(batch.probabilities[k], own[k], atol=1e-6)
            assert torch.equal(batch.outputs[k].softmax(1), own[k])
        assert torch.allclose(batch.ensemble(), (own[0] + own[1]) / 2, atol=1e-6)
    with pytest.raises(SegmergeError, match="has no panoptic output"):
        batches[0].panoptic(0, {1})


def test_predict_resizes_to_the_size_asked_and_refuses_panoptic_sliding_windows():
    segmenter = Segmenter("m", CountingNet(), 4, lambda logits: logits)
    images = torch.randint(0, 255, (2, 8, 12, 3), dtype=torch.uint8)
    [batch] = predict([segmenter], images, InferenceConfig(), size=(4, 6))
    assert batch.probabilities[0].shape == (2, 4, 4, 6) and batch.outputs == [None]
    with pytest.raises(SegmergeError, match="--mode whole"):
        next(predict([segmenter], images, InferenceConfig("slide", crop=(4, 4), stride=(4, 4)), keep_outputs=True))


def test_unknown_hf_architecture_is_refused(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    with pytest.raises(SegmergeError, match="FILE.py:function"):
        load_segmenter(str(tmp_path / "bert"))


def test_segmenter_normalises_like_the_processor():
    s = Segmenter("x", torch.nn.Identity(), 3, lambda x: x)
    img = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    out = s.normalise(img)
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor(s.mean)) / torch.tensor(s.std))
