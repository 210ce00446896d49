"""d2l-zoo, chapter 4: softmax regression."""
