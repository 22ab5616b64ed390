"""Discretized mixture of logistics over 256 levels (Salimans et al., PixelCNN++, ICLR 2017, arXiv 1701.05517).

Per pixel: a mixture of ``nr_mix`` logistic distributions shared by its C sub-pixels; sub-pixel c's mean is
shifted linearly by the sub-pixels before it (R -> G -> B coupling). Values live on the grid {-1 + 2k/255}.
Likelihood: the logistic mass of the bin (edge bins take the tails), summed over the mixture in log space.

Sampling from fixed uniforms (what makes parallel sampling a deterministic system): component by Gumbel-max,
``argmax(logits - log(-log u_mix))``; value by the logistic inverse CDF ``mean + exp(log_scale) * logit(u)``,
clamped to [-1, 1] and rounded to its 8-bit bin, so two evaluations agree exactly or differ by a whole level.

Parameter layout on the channel axis: [logits (M) | means (C*M) | log_scales (C*M) | coeffs (C(C-1)/2*M)].
Shapes: x (B, C, H, W); params (B, P, H, W); uniforms u_mix (B, M, H, W), u_value (B, C, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SCALE_MIN = -7.0  # as in the reference implementation: keeps the bin mass computable
BIN = 1.0 / 255.0  # half a bin width on [-1, 1]


def param_count(channels: int, nr_mix: int) -> int:
    return nr_mix * (1 + 2 * channels + channels * (channels - 1) // 2)


def split_params(
    params: torch.Tensor, channels: int, nr_mix: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> logits (B, M, H, W), means (B, C, M, H, W), log_scales (B, C, M, H, W), coeffs (B, K, M, H, W)."""
    b, _, h, w = params.shape
    m, c = nr_mix, channels
    logits = params[:, :m]
    means = params[:, m : m + c * m].reshape(b, c, m, h, w)
    log_scales = params[:, m + c * m : m + 2 * c * m].reshape(b, c, m, h, w).clamp(min=LOG_SCALE_MIN)
    coeffs = torch.tanh(params[:, m + 2 * c * m :].reshape(b, c * (c - 1) // 2, m, h, w))
    return logits, means, log_scales, coeffs


def coupled_means(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Shift sub-pixel means by the sub-pixels before them: G += a*R, B += b*R + c*G. x: (B, C, H, W)."""
    if means.shape[1] == 1:
        return means
    xs = x[:, :, None]  # (B, C, 1, H, W) broadcast over the mixture
    g = means[:, 1:2] + coeffs[:, 0:1] * xs[:, 0:1]
    b = means[:, 2:3] + coeffs[:, 1:2] * xs[:, 0:1] + coeffs[:, 2:3] * xs[:, 1:2]
    return torch.cat([means[:, 0:1], g, b], dim=1)


def dmol_nll(x: torch.Tensor, params: torch.Tensor, nr_mix: int) -> torch.Tensor:
    """Negative log-likelihood in nats per image, (B,). x: (B, C, H, W) on the 256-level grid in [-1, 1]."""
    channels = x.shape[1]
    logits, means, log_scales, coeffs = split_params(params, channels, nr_mix)
    means = coupled_means(means, coeffs, x)
    centered = x[:, :, None] - means
    inv_scale = torch.exp(-log_scales)
    plus = inv_scale * (centered + BIN)
    minus = inv_scale * (centered - BIN)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the lowest bin takes the left tail
    log_one_minus_cdf_minus = -F.softplus(minus)  # the highest bin takes the right tail
    mid = inv_scale * centered
    log_pdf_mid = mid - log_scales - 2.0 * F.softplus(mid)  # density at the bin centre, for tiny bins
    inner = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)), log_pdf_mid - math.log(127.5))
    xs = x[:, :, None]
    log_probs = torch.where(xs < -0.999, log_cdf_plus, torch.where(xs > 0.999, log_one_minus_cdf_minus, inner))
    log_mix = log_probs.sum(dim=1) + F.log_softmax(logits, dim=1)  # (B, M, H, W)
    return -torch.logsumexp(log_mix, dim=1).flatten(1).sum(dim=1)


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Values in [-1, 1] -> integer levels 0..255 (round to nearest bin)."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5).to(torch.long)


def from_levels(levels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Integer levels 0..255 -> bin centres in [-1, 1]."""
    return levels.to(dtype) / 127.5 - 1.0


def dmol_sample(params: torch.Tensor, u_mix: torch.Tensor, u_value: torch.Tensor, nr_mix: int) -> torch.Tensor:
    """Every pixel's sample given fixed uniforms, as integer levels (B, C, H, W) long.

    A pure function of (params, uniforms): equal inputs give equal levels, bit for bit. Sub-pixels are drawn in
    order R, G, B with each later mean shifted by the *rounded* earlier values.
    """
    return dmol_sample_terms(params, *noise_terms(u_mix, u_value), nr_mix)


def noise_terms(u_mix: torch.Tensor, u_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What sampling does with its uniforms before it sees a parameter: log(-log u_mix) (the Gumbel-max term,
    subtracted) and logit(u_value) (the logistic's inverse CDF)."""
    return torch.log(-torch.log(u_mix)), torch.log(u_value) - torch.log1p(-u_value)


def dmol_sample_terms(params: torch.Tensor, gumbel: torch.Tensor, logistic: torch.Tensor, nr_mix: int
                      ) -> torch.Tensor:  # fmt: skip
    """``dmol_sample`` from its uniforms' ``noise_terms`` (B, M, H, W) and (B, C, H, W)."""
    channels = logistic.shape[1]
    logits, means, log_scales, coeffs = split_params(params, channels, nr_mix)
    choice = torch.argmax(logits - gumbel, dim=1, keepdim=True)  # (B, 1, H, W)
    pick = choice[:, None].expand(-1, channels, -1, -1, -1)  # (B, C, 1, H, W)
    mean = torch.gather(means, 2, pick)[:, :, 0]
    log_scale = torch.gather(log_scales, 2, pick)[:, :, 0]
    coeff = torch.gather(coeffs, 2, choice[:, None].expand(-1, coeffs.shape[1], -1, -1, -1))[:, :, 0]
    raw = mean + torch.exp(log_scale) * logistic
    levels = []
    values: list[torch.Tensor] = []
    for c in range(channels):
        v = raw[:, c]
        if c == 1:
            v = v + coeff[:, 0] * values[0]
        elif c == 2:
            v = v + coeff[:, 1] * values[0] + coeff[:, 2] * values[1]
        level = to_levels(v)
        levels.append(level)
        values.append(from_levels(level, raw.dtype))
    return torch.stack(levels, dim=1)
