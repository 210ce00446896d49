"""Registers chapter 10's models. Imports no torch: builders are named as strings."""

from zoo_core import hookimpl


def _language_models(register):
    pass  # LSTM, GRU and deep-RNN language models (owner: language-model engineer)


def _seq2seq_graphs(tgt_vocab_size: int, num_hiddens: int, num_layers: int) -> tuple:
    """seq2seq's graphs (d2l §10.7): the training forward pass, the encoder, one decoder step (state ``H``)."""
    from zoo_core import GraphSpec

    src, valid = "src: int64[batch, src_seq]", "src_valid_len: int64[batch]"
    context, H = f"context: float32[batch, {num_hiddens}]", f"H: float32[batch, {num_layers}, {num_hiddens}]"
    return (
        GraphSpec("model", (src, "tgt_in: int64[batch, tgt_seq]", valid),
                  (f"logits: float32[batch, tgt_seq, {tgt_vocab_size}]",),
                  summary="teacher-forced forward pass (training), source and target lengths symbolic"),
        GraphSpec("encoder", (src, valid), (context, H), role="encoder",
                  summary="the encoder: context (top layer's final state) and the decoder's initial state"),
        GraphSpec("decoder_step", ("tokens: int64[batch]", context, H),
                  (f"logits: float32[batch, {tgt_vocab_size}]", f"H_next: float32[batch, {num_layers}, "
                   f"{num_hiddens}]"), role="step", state=("H",),
                  summary="one decoder step: the previous token and the context in, next-token logits out"),
    )


def _seq2seq(register):
    """The GRU encoder-decoder for English-French translation (d2l §10.7; owner: seq2seq engineer)."""
    from zoo_core import ModelSpec, Preset

    def preset(model: dict, data: dict, epochs: int, num_params: int, summary: str) -> Preset:
        graphs = _seq2seq_graphs(model["tgt_vocab_size"], model["num_hiddens"], model["num_layers"])
        return Preset(model=model, data=data, train={"max_epochs": epochs, "gradient_clip_val": 1},
                      num_params=num_params, outputs=graphs[0].outputs, graphs=graphs, summary=summary)

    book = {"src_vocab_size": 194, "tgt_vocab_size": 214, "embed_size": 256, "num_hiddens": 256, "num_layers": 2,
            "dropout": 0.2, "lr": 0.005, "tgt_pad": 5}
    tiny = {**book, "src_vocab_size": 26, "tgt_vocab_size": 28, "embed_size": 32, "num_hiddens": 32, "lr": 0.02,
            "tgt_pad": 4}
    graphs = _seq2seq_graphs(214, 256, 2)
    register(ModelSpec(
        name="seq2seq", builder="zoo_modern_rnn.seq2seq:Seq2Seq", chapter=10, section="10.7",
        summary="GRU encoder-decoder for English-French translation: masked loss, greedy and beam search",
        task="translation", dataset="fra-eng", tags=("concise",),
        inputs=graphs[0].inputs, outputs=graphs[0].outputs, graphs=graphs,
        presets={
            "book": preset(book, {"batch_size": 128}, 30, 1_935_062,
                           "fra-eng (512 pairs, 9 steps), embed and hidden 256, 2 GRU layers, dropout 0.2, Adam "
                           "0.005, batch 128, 30 epochs, clip 1 (the book's)"),
            "tiny": preset(tiny, {"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32}, 1, 31_068,
                           "32-wide GRUs on synthetic word-for-word pairs"),
        }))


@hookimpl
def zoo_register_models(register):
    _language_models(register)
    _seq2seq(register)
