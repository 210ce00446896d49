"""The zoo's model contract (zoo_core.testing) over every model zoo-rnn registers."""

from zoo_core.testing import ModelContract


class TestContract(ModelContract):
    plugin = "zoo-rnn"
