"""seq2seq (d2l §10.7), the book's recipe, with the zoo and with the book's own code (d2l 1.0.3), in the same run.

    ZOO_DATA=../shared/data python benchmarks/seq2seq.py [--epochs 30] [--repeat 1] [--threads 1] [--precision bf16]
        [--rng book]

The zoo side is what a user runs, in this process: ``zoo train seq2seq --threads T --seed i`` (`zoo_core.workflows.train`),
``zoo export seq2seq --onnx`` (`zoo_core.workflows.export`: ``encoder.onnx``, ``decoder_step.onnx``, ``model.onnx``, each with
its ONNX Runtime parity), ``zoo predict seq2seq SENTENCE...`` (`zoo_core.predict`) on both runtimes. The reference is
the d2l-reference tool (``--reference CMD``; default ``../shared/tools/d2l-reference``) in its own process with
``OMP_NUM_THREADS=T``, the same thread count (``--reference-threads default`` leaves torch's own choice, 2 here).
Repetition i trains both with seed i, the zoo first: a busy machine slows both alike. Compared:

- training speed: target tokens per second, the non-pad labels of the batches trained (the positions the masked loss
  averages over; both sides count the same 2,136 an epoch), over training time only (validation excluded; the zoo's
  data is in memory before the clock starts; the reference's DataLoader runs inside its epochs, as the book's does).
  The target is 3x the reference.
- quality: the validation masked cross-entropy over every non-pad validation token (token-weighted, as the reference
  computes it); the book's four sentences translated greedily and their BLEU (k=2); and, for the zoo, the corpus
  BLEU (sacreBLEU, tokenize "none": the book's tokens) of the 129 validation sentences, greedy and beam 4.
- generation on ONNX Runtime: greedy and beam search (4) on the exported graphs give PyTorch's tokens for every
  validation sentence; `zoo predict` answers the same on both runtimes.

With ``--rng book`` the zoo trains with ``zoo train --rng book``, which replays the reference's random stream at the
same seed (initial weights, shuffles, dropout masks: `zoo_core.book_rng`): each pair of runs then differs only by float
rounding, and "he's calm .", whose translation is a matter of the seed on both sides, compares seed for seed.

The driver (these options, the alternating runs, the medians and the speed ratio, the result file) is
benchmarks/_translation.py's, shared with bahdanau.py and transformer.py.
"""

from __future__ import annotations

from _translation import recurrent_main

MODEL = "seq2seq"
VAL_LOSS_MARGIN = 1.02  # the zoo's validation CE at most the reference's + 2%; BLEU at least the reference's


def main() -> None:
    recurrent_main(MODEL, __doc__, "val_loss_within_2_percent", VAL_LOSS_MARGIN)


if __name__ == "__main__":
    main()
