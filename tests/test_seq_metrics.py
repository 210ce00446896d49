"""Sequence metrics: masked cross-entropy against a hand computation, the book's BLEU on its examples and edge
cases, corpus BLEU through sacreBLEU."""

from __future__ import annotations

import math

import pytest
import torch

from zoo_core.seq_metrics import bleu, corpus_bleu, masked_cross_entropy

PAD = 0


def test_masked_cross_entropy_matches_a_hand_computation():
    logits = torch.tensor([[[2.0, 0.5, -1.0], [0.0, 1.0, 3.0], [9.0, 9.0, 9.0]],
                           [[1.0, 1.0, 1.0], [5.0, -5.0, 0.0], [0.3, 0.2, 0.1]]])
    labels = torch.tensor([[1, 2, PAD], [2, PAD, PAD]])

    def ce(row: list[float], label: int) -> float:  # -log softmax(row)[label]
        return math.log(sum(math.exp(x) for x in row)) - row[label]

    expected = (ce([2.0, 0.5, -1.0], 1) + ce([0.0, 1.0, 3.0], 2) + ce([1.0, 1.0, 1.0], 2)) / 3
    loss = masked_cross_entropy(logits, labels, PAD)
    assert loss.shape == () and loss.item() == pytest.approx(expected, rel=1e-6)
    # the padded positions' logits do not matter at all
    changed = logits.clone()
    changed[0, 2] = torch.tensor([-50.0, 80.0, 3.0])
    changed[1, 1:] = 123.0
    assert masked_cross_entropy(changed, labels, PAD).item() == pytest.approx(expected, rel=1e-6)


def test_masked_cross_entropy_all_padding_is_zero_without_nan():
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = masked_cross_entropy(logits, torch.full((2, 4), PAD), PAD)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()
    assert masked_cross_entropy(torch.randn(0, 4, 5), torch.zeros(0, 4, dtype=torch.int64), PAD).item() == 0.0


def test_masked_cross_entropy_without_padding_is_plain_cross_entropy():
    logits, labels = torch.randn(3, 5, 7), torch.randint(1, 7, (3, 5))
    plain = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1))
    assert masked_cross_entropy(logits, labels, PAD).item() == pytest.approx(plain.item(), rel=1e-6)


def test_bleu_on_the_books_examples():
    # d2l §10.7.6's four sentences: three exact translations and "il est bon ." for "il est calme ."
    assert bleu("va !", "va !", k=2) == 1.0
    assert bleu("j'ai perdu .", "j'ai perdu .", k=2) == 1.0
    assert bleu("je suis chez moi .", "je suis chez moi .", k=2) == 1.0
    # brevity 1 (4 tokens each), p1 = 3/4, p2 = 1/3 ("il est"): (3/4)^0.5 * (1/3)^0.25 = 0.658
    score = bleu("il est bon .", "il est calme .", k=2)
    assert score == pytest.approx((3 / 4) ** 0.5 * (1 / 3) ** 0.25) and round(score, 3) == 0.658
    assert bleu(["il", "est", "<unk>", "."], ["il", "est", "calme", "."], k=2) == score  # token lists too


def test_bleu_brevity_penalty_and_clipping():
    # shorter prediction: exp(1 - 4/2) with both unigrams and the bigram matching
    assert bleu("je suis", "je suis chez moi", k=2) == pytest.approx(math.exp(1 - 4 / 2))
    # a longer prediction has no brevity penalty; repeated n-grams only match as often as the reference has them
    assert bleu("la la la la", "la chat", k=1) == pytest.approx((1 / 4) ** 0.5)
    assert bleu("a b c d", "a b c d", k=4) == 1.0


def test_bleu_edge_cases():
    assert bleu("", "il est calme .", k=2) == 0.0  # empty prediction: defined, 0
    assert bleu([], [], k=2) == 0.0
    assert bleu("il", "il", k=4) == 1.0  # shorter than k: n-grams up to its own length, as the book's loop
    assert bleu("il", "il est calme .", k=4) == pytest.approx(math.exp(1 - 4))
    assert bleu("il est", "", k=2) == 0.0  # empty reference: nothing matches
    assert bleu("chat noir", "il est calme .", k=2) == 0.0
    assert 0.0 <= bleu("a b a b", "b a b a", k=3) <= 1.0


def test_corpus_bleu_sanity():
    refs = ["il est calme .", "je suis chez moi .", "j'ai perdu ."]
    assert corpus_bleu(refs, refs) == pytest.approx(100.0)
    worse = corpus_bleu(["il est bon .", "je suis chez moi .", "j'ai perdu ."], refs)
    assert 0.0 < worse < 100.0
    assert corpus_bleu(["chat", "chien", "oiseau"], refs) < worse
    assert corpus_bleu([], []) == 0.0
    # tokenize="none" scores the book's tokens as they are; "13a" retokenises (here: the same tokens)
    assert corpus_bleu(refs, refs, tokenize="13a") == pytest.approx(100.0)
    with pytest.raises(ValueError):
        corpus_bleu(["a"], ["a", "b"])


def test_corpus_bleu_is_sacrebleu_with_no_tokenisation():
    import sacrebleu

    preds, refs = ["il est <unk> .", "va !"], ["il est calme .", "va !"]
    assert corpus_bleu(preds, refs) == sacrebleu.corpus_bleu(preds, [refs], tokenize="none").score


def test_lazy_exports():
    import zoo_core

    assert zoo_core.bleu is bleu and zoo_core.masked_cross_entropy is masked_cross_entropy
    assert zoo_core.corpus_bleu is corpus_bleu
