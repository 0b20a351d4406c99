"""Shared pytest fixtures.

Tests run under the backend named by ``KERAS_BACKEND`` (the test command runs
the suite once per backend). Tests reading ``../shared`` skip with a reason
when it is absent (a user's clone); CI sets ``VLBEIT_REQUIRE_SHARED=1`` which
turns those skips into failures.
"""

import os
import pathlib

import keras
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("VLBEIT_SHARED_DIR", REPO.parent / "shared"))
REQUIRE_SHARED_ENV = "VLBEIT_REQUIRE_SHARED"


def pytest_addoption(parser):
    parser.addoption(
        "--run-large", action="store_true", default=False,
        help="run tests marked `large` (base/large presets, long runs)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large") or os.environ.get("VLBEIT_RUN_LARGE"):
        return
    skip = pytest.mark.skip(reason="large test: pass --run-large or set VLBEIT_RUN_LARGE=1")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def shared_path(*parts):
    """Path under ../shared, or skip (fail in CI) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} not found (../shared is only present in the project workspace)"
        if os.environ.get(REQUIRE_SHARED_ENV):
            pytest.fail(message + f"; {REQUIRE_SHARED_ENV} is set")
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    """Callable fixture: ``shared("data", "nlvr1")`` -> pathlib.Path."""
    return shared_path


@pytest.fixture(autouse=True)
def _seed_and_reset():
    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def tiny_config():
    """The ``vlbeit_tiny`` backbone config (2 layers, d=32)."""
    from vlbeit_keras.models.presets import BACKBONE_PRESETS

    return dict(BACKBONE_PRESETS["vlbeit_tiny"]["config"])


@pytest.fixture
def rng():
    return np.random.default_rng(0)
