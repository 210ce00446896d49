"""Sequence metrics: the masked cross-entropy of translation (d2l §10.7.4), the book's BLEU (§10.7.6) and the
standard corpus BLEU (sacreBLEU).

Perplexity is not here: it is ``exp`` of the token-weighted mean cross-entropy over a whole epoch (a model's
``epoch_metrics``), never a mean of per-batch perplexities.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(logits: Tensor, labels: Tensor, pad: int) -> Tensor:
    """Mean cross-entropy over the label tokens that are not padding (the book's ``Seq2Seq.loss``).

    Args:
        logits: ``(batch, steps, vocab)`` unnormalised scores.
        labels: ``(batch, steps)`` int64 target indices.
        pad: the ``<pad>`` index; those positions count for nothing.

    Returns:
        A 0-dim tensor: ``sum(CE * mask) / max(sum(mask), 1)``. A batch of only padding gives 0 (not NaN) and no
        gradient, so a trailing all-pad batch cannot poison an epoch. No host sync (the count stays a tensor).
    """
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    mask = (labels.reshape(-1) != pad).to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1)


def _tokens(seq: str | Sequence[str]) -> list[str]:
    return seq.split() if isinstance(seq, str) else list(seq)


def bleu(pred_tokens: str | Sequence[str], label_tokens: str | Sequence[str], k: int = 2) -> float:
    """The book's BLEU of one prediction against one reference (d2l §10.7.6, eq. 10.7.2), in [0, 1]:

    ``exp(min(0, 1 - len_label / len_pred)) * prod_{n=1}^{min(k, len_pred)} p_n ** (0.5 ** n)``,

    where ``p_n`` is the clipped n-gram precision (each reference n-gram matches at most as often as it occurs).

    Args:
        pred_tokens, label_tokens: token lists, or strings split on whitespace (the book splits on ``' '``; the same
            for its space-separated sentences).
        k: the longest n-grams counted (the book: 2).

    Edge cases (the book's code divides by zero on the first): an empty prediction scores 0.0; a prediction
    shorter than `k` counts n-grams up to its own length only (as the book's loop does), so ``bleu(['va'], ['va'],
    2) == 1``; a perfect prediction scores 1.0; an empty reference scores 0.0 (no n-gram can match).
    """
    pred, label = _tokens(pred_tokens), _tokens(label_tokens)
    len_pred, len_label = len(pred), len(label)
    if len_pred == 0:
        return 0.0
    score = math.exp(min(0.0, 1 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        label_ngrams = collections.Counter(tuple(label[i:i + n]) for i in range(len_label - n + 1))
        pred_ngrams = collections.Counter(tuple(pred[i:i + n]) for i in range(len_pred - n + 1))
        matches = sum(min(c, label_ngrams[g]) for g, c in pred_ngrams.items())  # the book's clipped count
        score *= (matches / (len_pred - n + 1)) ** (0.5 ** n)
    return score


def corpus_bleu(preds: Sequence[str], refs: Sequence[str], tokenize: str = "none") -> float:
    """The standard corpus BLEU (Papineni et al.; sacreBLEU's defaults: 4-grams, ``exp`` smoothing), 0-100, of
    predicted sentences against one reference each.

    Tokenisation: ``"none"`` by default, because the zoo's sentences are already tokenised by the book's pipeline
    (lower-case, a space before each ``, . ! ?``): the score counts exactly the tokens the model emitted, and
    ``<unk>`` stays one token. Pass ``tokenize="13a"`` (sacreBLEU's standard, WMT's) for raw, detokenised text.
    Figures computed with "none" on book-tokenised text are close to, but not the same as, "13a" on raw text.
    """
    if len(preds) != len(refs):
        raise ValueError(f"corpus_bleu: {len(preds)} predictions but {len(refs)} references")
    if not preds:
        return 0.0
    import sacrebleu  # lazily: only evaluation needs it

    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)], tokenize=tokenize).score)
