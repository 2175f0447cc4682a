"""The compression-decompression module of compression-aware split learning
(Mudvari et al., section 3.1), and its pruning loss (equations 1 and 2).

Two variants, named in the spec (compression.module):

- encoder_decoder, the paper's module (sec. 3.1) as both public implementations build it
  (VCCprune models/compressorVGG.py): source side a convolution with kernel 2+r, stride r,
  padding r, batch norm and a sigmoid, then a learnable filter f = sigmoid(f_hat), one value
  per channel, multiplied into the channels; server side a transposed convolution of the same
  geometry, batch norm and ReLU. With r = 1 (VCCprune's default) the feature maps keep their
  size, so the bytes on the wire are those of the bare mask.
- bare_mask [ours, kept for ablation]: the filter alone, no convolutions.

Only the B channels with the largest f cross the wire, with their indices; the server puts
them back in place (zeros elsewhere) before decoding.

Everything here trains: f_hat, the encoder and the decoder are parameters that the
optimizers hold, and f is never detached from the graph (known public code for this paper
detaches it, so its filter never learns).
"""

from __future__ import annotations

import torch
from torch import nn


class Compressor(nn.Module):
    def __init__(self, channels: int, resolution: int | None = None, module: str | None = None):
        super().__init__()
        self.channels = channels
        module = module or ("encoder_decoder" if resolution else "bare_mask")
        self.module = module
        self.resolution = (resolution or 1) if module == "encoder_decoder" else None
        if self.resolution:
            r = self.resolution
            # BN settings as VCCprune's encodingUnit (momentum 0.03, eps 1e-4)
            self.encoder: nn.Module = nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size=2 + r, stride=r, padding=r),
                nn.BatchNorm2d(channels, momentum=0.03, eps=1e-4),
                nn.Sigmoid(),
            )
        else:
            self.encoder = nn.Identity()
        # f_hat starts at 0 (f = 0.5 everywhere): no channel is preferred before training [ours;
        # VCCprune draws 15 x U(0, 1)].
        self.filter_logits = nn.Parameter(torch.zeros(channels))

    @property
    def filter(self) -> torch.Tensor:
        return torch.sigmoid(self.filter_logits)

    def forward(self, ln: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(l_c, f): the filtered feature maps and the filter, both in the graph."""
        f = self.filter
        return self.encoder(ln) * f.view(1, -1, *([1] * (ln.dim() - 2))), f

    def keep(self, f: torch.Tensor, budget: int) -> torch.Tensor:
        """Indices (ascending) of the `budget` channels with the largest filter values."""
        budget = min(budget, self.channels)
        return torch.topk(f.detach(), budget).indices.sort().values

    def reset(self, generator: torch.Generator | None = None) -> int:
        """resetprune (algorithm 3): re-randomize the filter entries above 1, so that the
        channels a larger budget kept can be driven towards 0 under a smaller one."""
        with torch.no_grad():
            high = self.filter_logits > 1
            n = int(high.sum())
            if n:
                self.filter_logits[high] = torch.rand(n, generator=generator) * 2 - 1
        return n


class Decompressor(nn.Module):
    def __init__(self, channels: int, resolution: int | None = None, module: str | None = None):
        super().__init__()
        self.channels = channels
        module = module or ("encoder_decoder" if resolution else "bare_mask")
        if module == "encoder_decoder":
            r = resolution or 1
            self.decoder: nn.Module | None = nn.ConvTranspose2d(
                channels, channels, kernel_size=2 + r, stride=r, padding=r
            )
            self.post: nn.Module = nn.Sequential(nn.BatchNorm2d(channels, momentum=0.03, eps=1e-4), nn.ReLU())
        else:
            self.decoder, self.post = None, nn.Identity()

    def forward(self, kept: torch.Tensor, indices: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """l_d from the received channels `kept` (N, B, h, w) at `indices` (B,)."""
        full = kept.new_zeros(kept.shape[0], self.channels, *kept.shape[2:])
        full = full.index_copy(1, indices.long(), kept)
        if self.decoder is None:
            return full
        return self.post(self.decoder(full, output_size=list(out_hw) if out_hw else None))


def prune_loss(f: torch.Tensor, budget: float, delta: float, lam: float, squared: bool = False) -> torch.Tensor:
    """Equation (1): exp(delta (sum f - B)) + lambda exp(-delta (sum f - B)); with `squared`,
    over sum f^2 as VCCprune's deprune.py computes it."""
    excess = (f * f if squared else f).sum() - budget
    return torch.exp(delta * excess) + lam * torch.exp(-delta * excess)


def encoded_hw(h: int, w: int, resolution: int | None) -> tuple[int, int]:
    """Feature-map size after the resolution encoder (kernel 2+r, stride r, padding r; r = 1
    keeps the size)."""
    if not resolution:
        return h, w
    r = resolution
    return (h + 2 * r - (2 + r)) // r + 1, (w + 2 * r - (2 + r)) // r + 1
