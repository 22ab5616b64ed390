"""MADE caches its masked weights when no gradient is recorded; the cache never serves stale or different bits."""

from __future__ import annotations

import torch

from models.made import MADE, MADEConfig


def small() -> MADE:
    torch.manual_seed(0)
    model = MADE(MADEConfig(input_size=16, hidden_sizes=(32,), image_shape=(1, 4, 4))).eval()
    with torch.no_grad():
        model.direct.weight.normal_()  # type: ignore[union-attr]
    return model


def test_cached_forward_equals_an_uncached_one_bit_for_bit() -> None:
    model, x = small(), torch.rand(8, 16).round()
    with torch.enable_grad():
        fresh = model(x).detach()
    with torch.inference_mode():
        assert torch.equal(model(x), fresh)
        assert torch.equal(model(x), fresh)  # second call: from the cache


def test_the_cache_follows_in_place_updates_and_loaded_weights() -> None:
    model, x = small(), torch.rand(8, 16).round()
    with torch.no_grad():
        before = model(x)
        model.layers[0].weight.mul_(2)
        after = model(x)
    assert not torch.equal(before, after)
    other = small()
    with torch.no_grad():
        other.direct.weight.add_(1.0)  # type: ignore[union-attr]
        model.load_state_dict(other.state_dict())
        assert torch.equal(model(x), other(x))
        assert torch.equal(model.direct_weight(), other.direct_weight())


def test_training_bypasses_the_cache_so_gradients_reach_the_weights() -> None:
    model = small().train()
    with torch.no_grad():
        model(torch.zeros(2, 16))  # would fill a cache if no_grad results were reused under autograd
    model.nll(torch.rand(4, 16).round()).sum().backward()
    grad = model.layers[0].weight.grad
    assert grad is not None
    assert grad.abs().sum() > 0
    assert model.direct.weight.grad is not None  # type: ignore[union-attr]
