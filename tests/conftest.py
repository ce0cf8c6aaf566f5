"""Shared fixtures: small datasets that train in seconds, and an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autodrs.data.dataset import Dataset, load_dataset
from autodrs.train.trainer import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["AUTODRS_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_synthetic() -> Dataset:
    """4,000 planted rows: enough to train, small enough for every test."""
    return load_dataset("synthetic?rows=4000&seed=1", seed=0)


@pytest.fixture(scope="session")
def synthetic_20k() -> Dataset:
    """20,000 planted rows, for tests that check a method recovers the planted truth."""
    return load_dataset("synthetic?rows=20000&seed=1", seed=0)


@pytest.fixture(scope="session")
def movielens() -> Dataset:
    return load_dataset("movielens-100k", seed=2026)


@pytest.fixture(scope="session")
def saved_model(tiny_synthetic: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DeepFM trained for one epoch on ``tiny_synthetic`` and saved as a model folder
    (shared: copy it before changing its files)."""
    from autodrs.experiment import fit_spec
    from autodrs.models.backbones import backbone_spec
    from autodrs.runfolder import save_model

    config = TrainConfig(epochs=1, batch_size=128, lr=1e-2, progress=False, threads=1, seed=0)
    outcome = fit_spec(tiny_synthetic, backbone_spec("deepfm", 8), config)
    folder = tmp_path_factory.mktemp("saved_model")
    save_model(folder, outcome.model, tiny_synthetic.schema)
    return folder


@pytest.fixture()
def fast_config() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=512, patience=1, progress=False, threads=1, seed=0)


@pytest.fixture()
def tmp_run(tmp_path: Path) -> Path:
    return tmp_path / "run"
