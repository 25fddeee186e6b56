"""AdaBN: re-estimate BatchNorm statistics on target images (Li et al., 2016).

A merged network's BatchNorm layers carry statistics blended from source-domain
statistics; measuring them again on target images adapts the network to the target at no
inference cost. Labels are not involved. Networks without BatchNorm are left unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from segmerge.segmenters import Segmenter
from segmerge.tuning.network import iter_batches

BN_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]


@torch.no_grad()
def reestimate_batch_norm(segmenter: Segmenter, images: torch.Tensor, batch_size: int = 8, device: str = "cpu") -> int:
    """Replace every BatchNorm layer's running mean/variance by the cumulative average over
    ``images`` (uint8 [N,H,W,3]); returns how many layers changed (0: nothing to do).

    Only the BatchNorm layers switch to training mode, so dropout stays off; the layers'
    momentum is restored afterwards.
    """
    norms = batch_norms(segmenter.module)
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = segmenter.module.training
    segmenter.module.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
        m.train()
    try:
        for part in iter_batches(len(images), batch_size):
            segmenter.scores(segmenter.normalise(images[part].to(device)))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
            m.eval()
        segmenter.module.train(was_training)
    return len(norms)
