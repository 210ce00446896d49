"""d2l-zoo, chapter 9: recurrent neural networks."""
