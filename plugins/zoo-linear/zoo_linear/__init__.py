"""d2l-zoo, chapter 3: linear regression and weight decay."""
