"""The dependency noise model's search as its authors published it (densechen/zss, Pseudocode.md), for one
video, ported so that the random draws come in as arguments and every line-stage trial is recorded.

What the port keeps exactly: torch's default float32; the statistic ``torch.kl_div(noise, previous,
log_target=True)`` averaged over all but the batch dim; the random stage keeps a candidate only when its
error is strictly smaller (the bound starts at +inf); the line stage starts at alpha = step = 0.1 (float32
tensors), accepts a trial whose error is ``<=`` the bound (then alpha += step and the bound becomes its
error), otherwise alpha -= 0.8·step and step *= 0.2; the frame returned is composed at the alpha after the
last update, which was never evaluated. Batch 1 only: the published code multiplies a [B] alpha into a
[B, C, H, W] tensor, which broadcasts only when B = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PaperSearch:
    """One frame of the published search: its choice, its trials, and what it returns."""

    index: int  # candidate kept by the random stage
    trials: list = field(default_factory=list)  # (alpha, error, bound before, accepted) per line step
    returned_alpha: float = 0.0  # the alpha after the last update (the published return value)
    frame: torch.Tensor | None = None  # compose(returned_alpha): what the published code returns

    @property
    def best_alpha(self) -> float:
        """The last accepted trial's alpha (0.0, the raw candidate, when none was accepted)."""
        accepted = [alpha for alpha, _, _, ok in self.trials if ok]
        return accepted[-1] if accepted else 0.0


def paper_search(previous: torch.Tensor, candidates: torch.Tensor, noise_lambda: float,
                 line_steps: int) -> PaperSearch:
    """previous [1, C, H, W] float32; candidates [R, 1, C, H, W] float32 (the R draws of the random stage)."""
    dims = list(range(1, previous.dim()))

    def error(noise):
        return (torch.kl_div(noise, previous, log_target=True).mean(dim=dims) - noise_lambda).abs()

    def compose(alpha, noise):
        return torch.sqrt(alpha) * previous + torch.sqrt(1 - alpha) * noise

    bound = torch.tensor([torch.inf])
    chosen, index = candidates[0], 0
    for r, noise in enumerate(candidates):
        err = error(noise)
        if bool(err < bound):
            chosen, index, bound = noise, r, err

    result = PaperSearch(index=index)
    alpha = torch.tensor([0.1])
    step = torch.tensor([0.1])
    for _ in range(line_steps):
        err = error(compose(alpha, chosen))
        accepted = bool(err <= bound)
        result.trials.append((alpha.item(), err.item(), bound.item(), accepted))
        if accepted:
            alpha = alpha + step
            bound = err
        else:
            alpha = alpha - 0.8 * step
            step = step * 0.2
    result.returned_alpha = alpha.item()
    result.frame = compose(alpha, chosen)
    return result
