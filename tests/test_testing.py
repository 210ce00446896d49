"""zoo_core.testing's helpers that have logic of their own (beyond calling the code they check)."""

from __future__ import annotations

import pytest
import torch

from zoo_core.testing import padded_labels


@pytest.mark.parametrize("pad", [4, 27])
def test_padded_labels_pad_each_row_after_a_random_length(pad):
    """Each row: 1 to num_steps labels that are not <pad>, then <pad> only; the lengths vary; every label is in the
    vocabulary, <pad> the last index included (where pad + 1 is not an index)."""
    torch.manual_seed(0)
    labels = padded_labels(64, 9, vocab_size=28, pad=pad)
    assert labels.shape == (64, 9) and labels.dtype == torch.int64
    lengths = (labels != pad).sum(1)
    assert torch.equal(labels == pad, torch.arange(9)[None, :] >= lengths[:, None])
    assert lengths.min() >= 1 and len(set(lengths.tolist())) > 1
    assert labels.min() >= 0 and labels.max() < 28
