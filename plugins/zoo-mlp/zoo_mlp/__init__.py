"""d2l-zoo, chapter 5: multilayer perceptrons (from scratch and concise), dropout, and Kaggle house prices."""

from zoo_mlp.mlp import MLP, DropoutMLP, DropoutMLPScratch, MLPScratch, dropout_layer, relu

__all__ = ["MLP", "DropoutMLP", "DropoutMLPScratch", "MLPScratch", "dropout_layer", "relu"]
