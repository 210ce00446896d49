"""Registers chapter 7's models and the edge-detector's one-image dataset. Imports no torch: builders are strings."""

from zoo_core import DataSpec, ModelSpec, Preset, hookimpl

# the synthetic stand-in of Fashion-MNIST's shapes that every tiny preset of the zoo uses
TINY_FASHION_MNIST = {"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32}


@hookimpl
def zoo_register_datasets(register):
    register(DataSpec("edge-image", "zoo_cnn.edge:EdgeImage",
                      "one 6x8 image with a black band and its vertical edges, for learning a kernel (d2l 7.2.3)"))


@hookimpl
def zoo_register_models(register):
    edge_model = {"kernel_size": [1, 2], "lr": 0.03}
    register(ModelSpec(
        name="edge-detector", builder="zoo_cnn.edge:EdgeDetector", chapter=7, section="7.2",
        summary="Learns the vertical-edge kernel [1, -1] from one image: a 1x2 convolution, summed squared error",
        task="regression", dataset="edge-image",
        presets={
            "book": Preset(model=edge_model, data={"batch_size": 1}, train={"max_epochs": 10}, num_params=2,
                           summary="the edge image, 10 steps of SGD at lr 3e-2"),
            "tiny": Preset(model=edge_model, data={"batch_size": 1}, train={"max_epochs": 2}, num_params=2,
                           summary="the edge image, 2 steps"),
        },
        inputs=["X: float32[batch, 1, 6, 8]"], outputs=["Y: float32[batch, 1, 6, 7]"], tags=("concise",)))
    register(ModelSpec(
        name="lenet", builder="zoo_cnn.lenet:LeNet", chapter=7, section="7.6",
        summary="LeNet-5: two sigmoid conv + avg-pool blocks, three dense layers, Xavier init",
        task="classification", dataset="fashion-mnist",
        presets={
            "book": Preset(model={"num_classes": 10, "lr": 0.1}, data={"batch_size": 128}, train={"max_epochs": 10},
                           num_params=61_706, summary="Fashion-MNIST, batch 128, lr 0.1, 10 epochs"),
            "tiny": Preset(model={"num_classes": 10, "lr": 0.1, "channels": [2, 4], "hidden": [16, 8]},
                           data=TINY_FASHION_MNIST, train={"max_epochs": 1}, num_params=2_098,
                           summary="2 and 4 channels, 16 and 8 hidden units, synthetic stand-in of Fashion-MNIST"),
        },
        inputs=["X: float32[batch, 1, 28, 28]"], outputs=["logits: float32[batch, 10]"], tags=("concise",)))
