"""The zoo's model contract (zoo_core.testing) over every model zoo-modern-cnn registers: book and tiny cards, a
training step, the trainer, safetensors, state-dict stability, ONNX export (torch.export) and ONNX Runtime parity."""

from zoo_core.testing import ModelContract


class TestContract(ModelContract):
    plugin = "zoo-modern-cnn"
