"""The invariant every parallel sampler relies on: output d depends only on inputs before d (raster order)."""

import pytest
import torch

from models.made import MADE, MADEConfig
from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig


def dependency_matrix(fn, x: torch.Tensor, outputs: int) -> torch.Tensor:
    """D[o, i] = True where output o has a nonzero gradient with respect to input i (one backward per output)."""
    x = x.clone().requires_grad_(True)
    out = fn(x)
    rows = []
    flat = out.reshape(out.shape[0], -1)
    for o in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[0, o], x, retain_graph=True)
        rows.append(grad[0].reshape(-1) != 0)
    return torch.stack(rows)


@pytest.mark.parametrize("config", [MADEConfig(input_size=20, hidden_sizes=(32, 32)), MADEConfig(input_size=50)])
def test_made_output_d_sees_only_inputs_before_d(config: MADEConfig) -> None:
    torch.manual_seed(0)
    made = MADE(config)
    x = torch.bernoulli(torch.full((1, config.input_size), 0.5))
    deps = dependency_matrix(made, x, config.input_size)
    assert not torch.triu(deps).any()  # output d never sees input >= d
    assert deps[-1, :-1].sum() > 0  # and the structure is not trivially empty


def test_shipped_made_size_has_the_property() -> None:
    made = MADE()
    x = torch.bernoulli(torch.full((1, 784), 0.5))
    x.requires_grad_(True)
    logits = made(x)
    for d in [0, 1, 27, 28, 400, 783]:
        (grad,) = torch.autograd.grad(logits[0, d], x, retain_graph=True)
        assert not grad[0, d:].any()


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnnpp_pixel_params_see_only_earlier_pixels_all_channels(channels: int) -> None:
    torch.manual_seed(0)
    size = 8
    model = PixelCNNpp(PixelCNNppConfig(channels=channels, image_size=size, nr_resnet=1, nr_filters=8, nr_mix=2))
    x = torch.rand(1, channels, size, size) * 2 - 1

    def params_per_pixel(inp: torch.Tensor) -> torch.Tensor:
        p = model(inp)  # (1, P, H, W)
        return p.sum(dim=1).reshape(1, -1)  # one scalar per pixel: any dependence shows in the sum's gradient

    deps = dependency_matrix(params_per_pixel, x, size * size)  # (pixels, C*H*W)
    per_pixel = deps.reshape(size * size, channels, size * size).any(dim=1)  # input pixel seen (any channel)
    assert not torch.triu(per_pixel).any()  # pixel p never sees pixel >= p, in any channel
    last = size * size - 1
    assert per_pixel[last, last - 1]  # the last pixel sees its left neighbour
    assert per_pixel[last, last - size]  # and the pixel above it
    assert per_pixel[last, :size].all()  # and the whole first row
