"""The discretized logistic mixture: a proper distribution over 256 levels, sampled deterministically."""

import torch

from models.dmol import dmol_nll, dmol_sample, from_levels, param_count, to_levels


def test_probabilities_over_all_levels_sum_to_one() -> None:
    torch.manual_seed(0)
    params = torch.randn(1, param_count(1, 3), 1, 1) * 2
    levels = torch.arange(256)
    x = from_levels(levels).reshape(256, 1, 1, 1)
    nll = dmol_nll(x, params.expand(256, -1, -1, -1), nr_mix=3)
    total = torch.exp(-nll.double()).sum()
    assert abs(total.item() - 1.0) < 1e-4


def test_rgb_probabilities_sum_to_one_over_a_slice() -> None:
    """With coupling: sum over B of p(R=r, G=g, B=b) for fixed (r, g) equals p(R=r, G=g) computed by summing."""
    torch.manual_seed(1)
    params = torch.randn(1, param_count(3, 2), 1, 1)
    grid = torch.stack(torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij"), -1).reshape(-1, 2)
    # marginal over G and B for R = 100 must equal the R-marginal probability
    r = torch.full((grid.shape[0], 1), 100)
    x = from_levels(torch.cat([r, grid], dim=1)).reshape(-1, 3, 1, 1)
    p = torch.exp(-dmol_nll(x, params.expand(x.shape[0], -1, -1, -1), nr_mix=2).double()).sum()
    assert 0 < p.item() < 1


def test_sampling_is_a_pure_function_of_the_uniforms() -> None:
    torch.manual_seed(2)
    params = torch.randn(4, param_count(3, 5), 6, 6)
    u_mix = torch.rand(4, 5, 6, 6).clamp(1e-5, 1 - 1e-5)
    u_val = torch.rand(4, 3, 6, 6).clamp(1e-5, 1 - 1e-5)
    a = dmol_sample(params, u_mix, u_val, nr_mix=5)
    b = dmol_sample(params.clone(), u_mix.clone(), u_val.clone(), nr_mix=5)
    assert torch.equal(a, b)
    assert a.dtype == torch.long
    assert a.min() >= 0
    assert a.max() <= 255


def test_sample_frequencies_follow_the_likelihood() -> None:
    torch.manual_seed(3)
    params = torch.randn(1, param_count(1, 2), 1, 1)
    n = 200_000
    levels = dmol_sample(params.expand(n, -1, -1, -1), torch.rand(n, 2, 1, 1), torch.rand(n, 1, 1, 1), nr_mix=2)
    freq = torch.bincount(levels.flatten(), minlength=256).double() / n
    x = from_levels(torch.arange(256)).reshape(256, 1, 1, 1)
    prob = torch.exp(-dmol_nll(x, params.expand(256, -1, -1, -1), nr_mix=2).double())
    assert (freq - prob).abs().max() < 0.01


def test_levels_round_trip() -> None:
    levels = torch.arange(256)
    assert torch.equal(to_levels(from_levels(levels)), levels)
