"""d2l-zoo, chapter 10: modern recurrent neural networks."""
