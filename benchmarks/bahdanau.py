"""bahdanau (d2l §11.4), the book's recipe, with the zoo and with the book's own code (d2l 1.0.3), in the same run.

    ZOO_DATA=../shared/data python benchmarks/bahdanau.py [--epochs 30] [--repeat 1] [--threads 1] [--precision bf16]

The pattern of benchmarks/seq2seq.py, for chapter 11's GRU encoder-decoder with additive attention. The zoo side is
what a user runs, in this process: ``zoo train bahdanau --threads T --seed i`` (`zoo_core.workflows.train`), ``zoo
export bahdanau --onnx`` (``encoder.onnx``, ``decoder_step.onnx``, ``model.onnx``, each with its ONNX Runtime parity),
``zoo predict bahdanau SENTENCE...`` on both runtimes. The reference is ``d2l-reference bahdanau`` (``--reference
CMD``; default ``../shared/tools/d2l-reference``) in its own process with ``OMP_NUM_THREADS=T``, the same thread
count. Repetition i trains both with seed i, the zoo first, alternately: a busy machine slows both alike. Compared:

- training speed: target tokens per second, the non-pad labels of the batches trained (both sides count the same
  2,136 an epoch), over training time only (validation excluded). The target is 3x the reference.
- quality: the validation masked cross-entropy over every non-pad validation token (token-weighted, as the reference
  computes it), at most the reference's; the book's four sentences translated greedily and their BLEU (k=2), at least
  the reference's on each; for the zoo, the corpus BLEU (sacreBLEU, tokenize "none") of the 129 validation sentences,
  greedy and beam 4.
- generation on ONNX Runtime: greedy and beam search (4) on the exported graphs give PyTorch's tokens for every
  validation sentence; `zoo predict` answers the same on both runtimes.

The driver (these options, the alternating runs, the medians and the speed ratio, the result file) is
benchmarks/_translation.py's, shared with seq2seq.py and transformer.py.
"""

from __future__ import annotations

from _translation import recurrent_main

MODEL = "bahdanau"
VAL_LOSS_MARGIN = 1.0  # the zoo's validation CE at most the reference's; BLEU at least the reference's


def main() -> None:
    recurrent_main(MODEL, __doc__, "val_loss_at_most_reference", VAL_LOSS_MARGIN)


if __name__ == "__main__":
    main()
