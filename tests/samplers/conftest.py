"""A temporary registry of tiny, randomly initialised models: fast, and through the same engine as shipped ones."""

from pathlib import Path

import pytest
import torch

from models.checkpoint import config_to_dict, save_model, sha256
from models.densenet import DenseNet, DenseNetConfig
from models.made import MADE, MADEConfig
from models.pixelcnnpp import PixelCNNpp, PixelCNNppConfig
from models.registry import Entry, write_manifest
from models.rnn import RecurrentRegressor, RNNConfig

TINY = {
    "made-tiny": ("made", MADE, MADEConfig(input_size=64, hidden_sizes=(48, 48), image_shape=(1, 8, 8))),
    "pixelcnnpp-tiny": (
        "pixelcnnpp",
        PixelCNNpp,
        PixelCNNppConfig(channels=1, image_size=8, nr_resnet=1, nr_filters=8, nr_mix=3),
    ),
    "pixelcnnpp-rgb-tiny": (
        "pixelcnnpp",
        PixelCNNpp,
        PixelCNNppConfig(channels=3, image_size=8, nr_resnet=1, nr_filters=8, nr_mix=2),
    ),
    "densenet-tiny": ("densenet", DenseNet, DenseNetConfig(growth=4, block_layers=(2, 3, 2), bottleneck=2)),
    "rnn-tiny": ("rnn", RecurrentRegressor, RNNConfig(hidden_size=8, image_size=5)),
    "gru-tiny": ("gru", RecurrentRegressor, RNNConfig(cell="gru", hidden_size=6, image_size=6)),
}


def build_registry(directory: Path) -> Path:
    torch.manual_seed(0)
    entries = {}
    for name, (kind, cls, config) in TINY.items():
        model = cls(config)
        if kind == "made":  # sharpen the random logits so that samples depend on their past
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(3.0)
                model.direct.weight.normal_(0.0, 1.5)  # strong neighbour coupling, as trained models have
        path = directory / f"{name}.safetensors"
        save_model(model, kind, config, path)
        entries[name] = Entry(name, kind, path.name, sha256(path), config_to_dict(config), description=f"tiny {kind}")
    write_manifest(entries, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_registry(tmp_path_factory.mktemp("registry"))
