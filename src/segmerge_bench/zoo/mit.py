"""The tiny Mix Transformer (MiT) encoder every benchmark model shares, and its names on disk.

SegFormer, DAFormer, HRDA and MIC all put a MiT encoder pre-trained on ImageNet under a
task head; that shared start is what makes their weights averageable. Here the encoder is
``transformers``' ``SegformerModel`` at a size that trains on two CPU cores (four stages,
hidden sizes 16-128, about 0.4M parameters).

Names. ``transformers`` 5 names the encoder's tensors ``stages.N.blocks.M...`` in memory
but still writes the legacy ``encoder.block.N.M...`` names to disk (and 4.x uses those in
memory too). Users' checkpoints carry the on-disk names, so segmerge's own checkpoints do
as well: :func:`encoder_disk_names` maps one to the other, in module (forward) order.
"""

from __future__ import annotations

import torch

from segmerge.errors import SegmergeError

TINY_MIT: dict = {
    "num_channels": 3,
    "num_encoder_blocks": 4,
    "depths": [1, 1, 1, 1],
    "sr_ratios": [8, 4, 2, 1],
    "hidden_sizes": [16, 32, 64, 128],
    "num_attention_heads": [1, 2, 4, 8],
    "mlp_ratios": [4, 4, 4, 4],
    "drop_path_rate": 0.0,
}
"""The encoder's shape: MiT-B0's layout (strides 4-32, spatial-reduction ratios 8-1) at half
its width and one block per stage (424k parameters). With SegFormer's head a training step
(batch 8, 96x192) takes ~0.2 s on two CPU cores; two blocks per stage cost ~2.5x as much."""

DISK_ENCODER_PREFIX = "encoder."
"""Where ``SegformerModel`` writes its tensors on disk (``segformer.encoder.*`` in a full model)."""


def mit_config(num_classes: int = 19, decoder_hidden_size: int = 64, **encoder):
    """A ``SegformerConfig`` for the tiny MiT (``encoder`` overrides entries of :data:`TINY_MIT`)."""
    from transformers import SegformerConfig

    unknown = set(encoder) - set(TINY_MIT)
    if unknown:
        raise SegmergeError(f"mit_config: unknown encoder settings {sorted(unknown)}; known: {sorted(TINY_MIT)}")
    return SegformerConfig(
        **{**TINY_MIT, **encoder},
        decoder_hidden_size=decoder_hidden_size,
        num_labels=num_classes,
        classifier_dropout_prob=0.1,
    )


def encoder_settings(config) -> dict:
    """The entries of a ``SegformerConfig`` that shape the encoder (what a checkpoint must record)."""
    return {key: _plain(getattr(config, key)) for key in TINY_MIT}


def build_encoder(config):
    from transformers import SegformerModel

    return SegformerModel(config)


def encoder_disk_names(encoder: torch.nn.Module) -> dict[str, str]:
    """In-memory state-dict name -> on-disk name (without ``encoder.``), in module order.

    Found by asking ``transformers`` how ``save_pretrained`` would rename the tensors
    (``revert_weight_conversion``) and matching the tensors it returns by identity, so no
    name pattern is hard-coded here. Older ``transformers`` use the on-disk names in memory.
    """
    state = encoder.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x: memory names are disk names
        on_disk = dict(state)
    else:
        on_disk = revert_weight_conversion(encoder, dict(state))
    by_tensor = {id(tensor): name for name, tensor in on_disk.items()}
    names = {}
    for name, tensor in state.items():
        disk = by_tensor.get(id(tensor))
        if disk is None or not disk.startswith(DISK_ENCODER_PREFIX):
            raise SegmergeError(
                f"the installed transformers saves the SegFormer encoder tensor {name!r} in a way segmerge does "
                "not recognise (not a plain rename under 'encoder.'); use a transformers version between 4.40 and 5.x"
            )
        names[name] = disk[len(DISK_ENCODER_PREFIX) :]
    return names


def _plain(value):
    return list(value) if isinstance(value, tuple | list) else value
