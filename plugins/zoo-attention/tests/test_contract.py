"""The zoo's model contract (zoo_core.testing) over every model zoo-attention registers."""

from zoo_core.testing import ModelContract


class TestContract(ModelContract):
    plugin = "zoo-attention"
