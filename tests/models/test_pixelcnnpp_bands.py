"""Banded PixelCNN++: the same function as the whole-image forward, and bitwise stable under any split."""

import pytest
import torch

from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig
from models.pixelcnnpp_bands import BandedPixelCNNpp


@pytest.fixture(scope="module", params=[1, 3])
def banded(request: pytest.FixtureRequest) -> BandedPixelCNNpp:
    torch.manual_seed(request.param)
    config = PixelCNNppConfig(channels=request.param, image_size=16, nr_resnet=2, nr_filters=16, nr_mix=3)
    return BandedPixelCNNpp(PixelCNNpp(config).eval())


def images(n: int, channels: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def full(banded: BandedPixelCNNpp, x: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    return banded(x, banded.new_cache(n), torch.arange(n), 0, banded.bands)


def test_banded_pass_equals_the_forward_to_float32_rounding(banded: BandedPixelCNNpp) -> None:
    x = images(5, banded.model.config.channels)
    with torch.inference_mode():
        torch.testing.assert_close(full(banded, x), banded.model(x), rtol=1e-5, atol=1e-5)


def test_split_calls_reusing_the_cache_give_the_same_bits(banded: BandedPixelCNNpp) -> None:
    x = images(6, banded.model.config.channels, seed=1)
    with torch.inference_mode():
        reference = full(banded, x)
        for split in range(1, banded.bands):
            cache, slots = banded.new_cache(6), torch.arange(6)
            top = banded(x, cache, slots, 0, split)
            bottom = banded(x, cache, slots, split, banded.bands)
            rows = split * 4
            assert torch.equal(top[:, :, :rows], reference[:, :, :rows])
            assert torch.equal(bottom[:, :, rows:], reference[:, :, rows:])


def test_any_subset_order_and_slot_gives_the_same_bits(banded: BandedPixelCNNpp) -> None:
    x = images(17, banded.model.config.channels, seed=2)
    with torch.inference_mode():
        reference = full(banded, x)
        for picked in ([0], [16, 3], list(range(9)), [5, 1, 12, 7, 2, 9, 11, 0, 4, 15, 3]):
            cache = banded.new_cache(40)
            slots = torch.tensor(picked) + 20
            out = banded(x[picked], cache, slots, 0, banded.bands)
            assert torch.equal(out, reference[picked])


def test_rows_below_the_computed_bands_are_left_out(banded: BandedPixelCNNpp) -> None:
    x = images(2, banded.model.config.channels, seed=3)
    with torch.inference_mode():
        out = banded(x, banded.new_cache(2), torch.arange(2), 0, 2)
    assert not out[:, :, 8:].any()
