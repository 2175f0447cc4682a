"""HFSL split selection (the HFSL paper, sec. 3.2 and 4.3).

1. Candidates [paper; the aggregation is inferred]: Grad-CAM (eq. 4-5) at every block's
   output, for samples of every class: alpha_c = spatial mean of d y_o / d F_c, map =
   ReLU(sum_c alpha_c F_c). A block's importance is the map's mean, averaged over the
   samples of a class and then over classes: the CUI curve. Its local maxima are the
   candidate cuts (the action space). The paper's equations 4-8 did not survive in our
   copy of its text; 4-5 are standard Grad-CAM, and how the curve is "fitted" is not said.
2. A Q-learning agent [paper: state, eq. 7, eq. 8 and the greedy rule; ours: the reward's
   form, the state bins]. State: (a_l, a_m, b_l, b_m) with a = remaining computational
   power (GFLOPS) of the low and medium devices, b = the computation of W_l and W_m; b
   follows from the action, so the Q-table is indexed by binned (a_l, a_m). Time (eq. 7) =
   W_l's inference on the low device + W_m's on the medium device + the cut tensor's
   transmission at V bytes/s. Reward (eq. 6, whose form is lost) [ours]:
       r = -(k1 * time / max time + k2 * |b_l share - a_l share| + k3 * bytes / max bytes)
   i.e. faster, better matched to the devices' powers, less data. Update (eq. 8):
       Q(s,a) += beta * (r + gamma * max_a' Q(s',a') - Q(s,a)),
   actions chosen greedily; rewards are negative and Q starts at 0, so untried actions look
   best and every one gets tried. States are drawn as in sec. 4.3: exponential
   distributions clipped to the tiers' ranges (low 0-1, medium 0-10 GFLOPS). The paper
   gives no values for beta and gamma. Ours: the rate decays from 1 to beta as 1/visits,
   and gamma is 0.5. The next state comes from the devices, not from the action, so the
   discounted term adds the same expectation to every action and only noise to their
   difference: with gamma 0.9 and a constant rate, 2 of 6 seeds picked the worse cut in
   states where the rewards differ by 20%; with these, 6 of 6 pick the better one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.cost import profile_model


@dataclass(frozen=True)
class Candidate:
    cut: int  # blocks in W_l
    name: str  # the block after which the model is cut
    importance: float  # the CUI curve's value there (normalized to the curve's maximum)
    low_gflop: float  # forward GFLOP per sample of W_l
    medium_gflop: float  # ... of W_m
    out_bytes: int  # the cut tensor per sample, float32


def block_importance(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Grad-CAM importance of each block's output (NaN for blocks without a spatial map),
    averaged over the samples of each class, then over the classes."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, out):  # returns None: the output itself is left alone
        if out.requires_grad:
            out.retain_grad()
        outputs.append(out)

    hooks = [b.register_forward_hook(keep) for b in model]
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
        model.zero_grad(set_to_none=True)
        logits.gather(1, y[:, None]).sum().backward()  # y_o: the score of each sample's true class
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    curve = []
    for out in outputs:
        if out.dim() != 4 or out.grad is None:
            curve.append(float("nan"))
            continue
        alpha = out.grad.mean(dim=(2, 3), keepdim=True)  # eq. 4
        cam = F.relu((alpha * out).sum(dim=1)).mean(dim=(1, 2)).detach()  # eq. 5, then its mean per sample
        per_class = [cam[y == c].mean() for c in torch.unique(y)]
        curve.append(float(torch.stack(per_class).mean()))
    return curve


def local_maxima(curve: list[float]) -> list[int]:
    """1-based cuts where the curve has a local maximum (the last block, the classifier, is
    never a cut). A curve without one yields its global maximum."""
    v = [c if c == c else -np.inf for c in curve[:-1]]
    peaks = [
        i + 1
        for i in range(len(v))
        if v[i] > -np.inf and (i == 0 or v[i] > v[i - 1]) and (i == len(v) - 1 or v[i] >= v[i + 1])
    ]
    return peaks or [int(np.argmax(v)) + 1]


def candidate_costs(
    model: nn.Sequential, input_shape, cuts: list[int], importance: list[float] | None = None
) -> list[Candidate]:
    """Each cut's computation on either side and its tensor, from the model's profile."""
    prof = profile_model(model, tuple(input_shape))
    total = sum(r.flops for r in prof)
    out = []
    for cut in cuts:
        low = sum(r.flops for r in prof[:cut])
        out.append(
            Candidate(
                cut,
                prof[cut - 1].name,
                importance[cut - 1] if importance else float("nan"),
                low / 1e9,
                (total - low) / 1e9,
                prof[cut - 1].out_bytes,
            )
        )
    return out


def candidates(
    model: nn.Sequential, input_shape, x: torch.Tensor, y: torch.Tensor
) -> tuple[list[float], list[Candidate]]:
    curve = block_importance(model, x, y)
    top = max(c for c in curve if c == c) or 1.0
    curve = [c / top for c in curve]
    return curve, candidate_costs(model, input_shape, local_maxima(curve), curve)


@dataclass
class QAgent:
    cands: list[Candidate]
    rate_bytes_s: float = 6.25e6  # eq. 7's V: the paper's 50 Mbit/s Ethernet
    k: tuple[float, float, float] = (1.0, 0.5, 0.5)
    beta: float = 0.01  # eq. 8's learning rate, reached as 1/n(s, a) decays to it
    gamma: float = 0.5  # eq. 8's discount (value ours: see the module's note)
    low_range: tuple[float, float] = (0.0, 1.0)  # GFLOPS, the low tier
    medium_range: tuple[float, float] = (0.0, 10.0)
    bins: int = 10
    seed: int = 0
    q: np.ndarray = field(init=False)

    def __post_init__(self):
        self.q = np.zeros((self.bins, self.bins, len(self.cands)))
        self.visits = np.zeros_like(self.q)

    def _bin(self, v: float, lo_hi: tuple[float, float]) -> int:
        lo, hi = lo_hi
        return min(self.bins - 1, max(0, int((v - lo) / (hi - lo) * self.bins)))

    def state(self, a_low: float, a_medium: float) -> tuple[int, int]:
        return self._bin(a_low, self.low_range), self._bin(a_medium, self.medium_range)

    def times(self, a_low: float, a_medium: float) -> np.ndarray:
        """Eq. 7 for every candidate: inference on both devices plus transmission (s/sample)."""
        return np.array(
            [c.low_gflop / a_low + c.medium_gflop / a_medium + c.out_bytes / self.rate_bytes_s for c in self.cands]
        )

    def rewards(self, a_low: float, a_medium: float) -> np.ndarray:
        t = self.times(a_low, a_medium)
        share = np.array([c.low_gflop / max(c.low_gflop + c.medium_gflop, 1e-12) for c in self.cands])
        data = np.array([c.out_bytes for c in self.cands], dtype=float)
        k1, k2, k3 = self.k
        return -(k1 * t / t.max() + k2 * np.abs(share - a_low / (a_low + a_medium)) + k3 * data / data.max())

    def _draw(self, rng: np.random.Generator) -> tuple[float, float]:
        """Remaining power, exponentially distributed and clipped to each tier's range (sec. 4.3)."""

        def one(lo_hi):
            lo, hi = lo_hi
            return float(np.clip(rng.exponential((hi - lo) / 3), lo + (hi - lo) * 0.01, hi))

        return one(self.low_range), one(self.medium_range)

    def train(self, steps: int = 5000) -> "QAgent":
        rng = np.random.default_rng(self.seed)
        a = self._draw(rng)
        for _ in range(steps):
            s = self.state(*a)
            action = int(np.argmax(self.q[s]))  # greedy (ties: the shallowest cut)
            r = self.rewards(*a)[action]
            a = self._draw(rng)
            s2 = self.state(*a)
            self.visits[s][action] += 1
            # states come from the devices, not from the action: targets are noisy, so the
            # rate starts as a running mean and settles at beta [ours]
            lr = max(self.beta, 1.0 / self.visits[s][action])
            self.q[s][action] += lr * (r + self.gamma * self.q[s2].max() - self.q[s][action])  # eq. 8
        return self

    def choose(self, a_low: float, a_medium: float) -> Candidate:
        return self.cands[int(np.argmax(self.q[self.state(a_low, a_medium)]))]

    def bin_centre(self, i: int, lo_hi: tuple[float, float]) -> float:
        lo, hi = lo_hi
        return lo + (i + 0.5) * (hi - lo) / self.bins
