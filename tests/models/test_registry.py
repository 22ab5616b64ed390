"""Shipped checkpoints: present, verified by checksum, loaded without pickle, and as good as the manifest says."""

import shutil
from pathlib import Path

import pytest

from models.registry import SHIPPED, SLICE, ChecksumError, UnknownModelError, evaluate, load_model, read_manifest

NAMES = ["made-fmnist", "pixelcnnpp-fmnist", "densenet-fmnist", "rnn-fmnist", "gru-fmnist"]
MANIFEST = read_manifest()
REL_TOL = 1e-3  # slice figures are float32 sums: other CPUs may round the last digits differently


def test_every_family_is_shipped() -> None:
    assert set(NAMES) <= set(MANIFEST)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_loads_in_eval_mode_and_matches_the_manifest_on_a_slice(name: str) -> None:
    model = load_model(name)
    assert not model.training
    figures = evaluate(name, limit=SLICE)
    expected = MANIFEST[name].eval_slice
    assert expected
    for key, value in expected.items():
        assert figures[key] == pytest.approx(value, rel=REL_TOL, abs=1e-6), key


@pytest.mark.parametrize("name", NAMES)
def test_manifest_says_how_the_model_was_made(name: str) -> None:
    entry = MANIFEST[name]
    assert entry.train_command.startswith("parafeed train ")
    assert entry.train_seconds is not None
    assert entry.train_seconds > 0
    assert entry.eval["examples"] == 10000
    assert (SHIPPED / entry.file).stat().st_size < 12 * 2**20  # a few MB each


def test_quality_bars() -> None:
    made = MANIFEST["made-fmnist"].eval
    assert made["nll_nats"] <= 125.0
    assert made["nll_nats"] < made["baseline_independent_bernoulli_nll_nats"]
    assert MANIFEST["densenet-fmnist"].eval["accuracy"] >= 0.92
    for name in ("rnn-fmnist", "gru-fmnist"):
        rnn = MANIFEST[name].eval
        assert rnn["mse"] < rnn["baseline_repeat_previous_mse"]
    assert MANIFEST["pixelcnnpp-fmnist"].eval["bits_per_dim"] < 4.0


def test_a_corrupted_checkpoint_is_refused(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path, dirs_exist_ok=True)
    path = tmp_path / MANIFEST["rnn-fmnist"].file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        load_model("rnn-fmnist", tmp_path)


def test_registry_directory_from_the_setting_and_its_old_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.settings import Settings

    monkeypatch.setenv("PARAFEED_REGISTRY", str(tmp_path))
    assert Settings().registry == str(tmp_path)
    with pytest.raises(UnknownModelError, match="has: none"):
        load_model("made-fmnist", Settings().registry)
    monkeypatch.delenv("PARAFEED_REGISTRY")
    monkeypatch.setenv("PARAFEED_CHECKPOINTS", str(tmp_path))  # the old name: still works, and says so
    with pytest.warns(DeprecationWarning, match="PARAFEED_REGISTRY"):
        assert Settings().registry == str(tmp_path)


def test_unknown_name_lists_what_exists() -> None:
    with pytest.raises(UnknownModelError, match="made-fmnist"):
        load_model("made-mnist")


def test_nothing_is_ever_unpickled() -> None:
    """House rule: weights load from safetensors only. No torch.load, no pickle in the product code."""
    root = Path(__file__).resolve().parents[2]
    for package in ("models", "samplers", "solvers", "app"):
        for source in (root / package).rglob("*.py"):
            text = source.read_text()
            assert "torch.load(" not in text, source
            assert "import pickle" not in text, source
