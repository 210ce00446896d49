"""Every test of this plugin runs on one intra-op thread (zoo_core.testing's `single_thread`: tiny tensors)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield
