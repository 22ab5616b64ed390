"""DenseNet blocks as triangular systems: layer-batched evaluation equals one-layer-at-a-time, bit for bit."""

import torch

from models.densenet import DenseBlock, DenseNet, DenseNetConfig

TINY = DenseNetConfig(growth=4, block_layers=(3, 4), bottleneck=2)


def trained_like(model: DenseNet) -> DenseNet:
    """Random BN statistics, so that folded BN is not the identity."""
    torch.manual_seed(0)
    for block in model.blocks:
        for name in ("bn1_mean", "bn2_mean"):
            getattr(block, name).normal_()
        for name in ("bn1_var", "bn2_var"):
            getattr(block, name).uniform_(0.5, 2.0)
    return model.eval()


def test_layer_outputs_do_not_depend_on_which_layers_or_images_share_the_call() -> None:
    model = trained_like(DenseNet(TINY))
    block: DenseBlock = model.blocks[1]
    features = torch.randn(5, block.width, 14, 14)
    together = block.evaluate_layers(features, 0, block.layers)
    for layer in range(block.layers):
        alone = block.evaluate_layers(features, layer, layer + 1)[:, 0]
        assert torch.equal(alone, together[:, layer])
    for i in range(5):
        assert torch.equal(block.evaluate_layers(features[i : i + 1], 0, block.layers)[0], together[i])


def test_layer_l_ignores_the_channels_of_layers_l_and_later() -> None:
    model = trained_like(DenseNet(TINY))
    block: DenseBlock = model.blocks[0]
    features = torch.randn(2, block.width, 28, 28)
    base = block.evaluate_layers(features, 0, block.layers)
    for layer in range(block.layers):
        scrambled = features.clone()
        scrambled[:, block.channels_of(layer).start :] = torch.randn_like(
            scrambled[:, block.channels_of(layer).start :]
        )
        out = block.evaluate_layers(scrambled, 0, block.layers)
        assert torch.equal(out[:, : layer + 1], base[:, : layer + 1])


def test_inference_path_matches_the_training_path_numerically() -> None:
    """Same function, different kernels: equal up to float32 rounding."""
    model = trained_like(DenseNet(TINY))
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        inference = model(x)
        for block in model.blocks:  # the training path with the running statistics
            block.eval = None  # type: ignore[assignment]
        reference = torch.stack([_train_path_eval_stats(model, x[i : i + 1])[0] for i in range(6)])
    torch.testing.assert_close(inference, reference, rtol=1e-4, atol=1e-4)


def _train_path_eval_stats(model: DenseNet, x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    h = model.stem(x)
    for block, transition in model.stages():
        feats = [h]
        for j in range(block.layers):
            inp = torch.cat(feats, 1)
            c = inp.shape[1]
            z = F.batch_norm(inp, block.bn1_mean[j, :c], block.bn1_var[j, :c], block.bn1_weight[j, :c],
                             block.bn1_bias[j, :c], False, 0.0, block.eps)  # fmt: skip
            z = F.conv2d(F.relu(z), block.conv1[j, :, :c, None, None])
            z = F.batch_norm(z, block.bn2_mean[j], block.bn2_var[j], block.bn2_weight[j], block.bn2_bias[j],
                             False, 0.0, block.eps)  # fmt: skip
            feats.append(F.conv2d(F.relu(z), block.conv2[j], padding=1))
        h = torch.cat(feats, 1)
        if transition is not None:
            h = transition(h)
    return model.head(h)


def test_eval_forward_is_batch_invariant() -> None:
    model = trained_like(DenseNet(TINY))
    x = torch.randn(11, 1, 28, 28)
    with torch.inference_mode():
        full = model(x)
        for i in [0, 5, 10]:
            assert torch.equal(model(x[i : i + 1])[0], full[i])
