"""d2l-zoo, chapter 11: attention mechanisms and Transformers."""
