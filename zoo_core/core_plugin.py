"""The built-in plugin: the core's datasets, registered through the same hook third-party plugins use."""

from zoo_core.hookspecs import hookimpl
from zoo_core.registry import DataSpec


@hookimpl
def zoo_register_datasets(register):
    register(DataSpec("synthetic-regression", "zoo_core.data.synthetic:SyntheticRegression",
                      "y = Xw + b + noise with w = [2, -3.4], b = 4.2 (d2l 3.3)"))
    register(DataSpec("weight-decay-data", "zoo_core.data.synthetic:WeightDecayData",
                      "200-input linear data with 20 training examples, for weight decay (d2l 3.7)"))
    register(DataSpec("fashion-mnist", "zoo_core.data.fashion_mnist:FashionMNIST",
                      "Fashion-MNIST, 60k/10k 28x28 grey images, 10 classes (d2l 4.2)",
                      source="https://github.com/zalandoresearch/fashion-mnist (via torchvision)"))
    register(DataSpec("time-machine", "zoo_core.data.time_machine:TimeMachine",
                      "The Time Machine (H. G. Wells) as character or word windows; vocab 28, 173,428 tokens (d2l 9.2)",
                      source="https://www.gutenberg.org/ebooks/35 (the book's copy, d2l-data timemachine.txt)"))
    register(DataSpec("fra-eng", "zoo_core.data.fra_eng:FraEng",
                      "English-French sentence pairs, 9 steps, 512 train / 129 val, vocab 194 / 214 (d2l 10.5)",
                      source="https://www.manythings.org/anki/ (Tatoeba, CC-BY 2.0; the book's fra-eng.zip)"))
