"""Registers chapter 10's models. Imports no torch: builders are named as strings."""

from zoo_core import hookimpl


def _language_models(register):
    """The LSTM, GRU and deep GRU language models (d2l §10.1-10.3), from scratch and concise.

    `book`: the book's recipe: The Time Machine in characters (vocabulary 28), batch 1024, windows of 32 steps (the
    first 10,000 train, the next 5,000 validate), 32 hidden units, SGD, gradient clipping at norm 1; LSTM and GRU lr 4
    for 50 epochs, the deep GRU (2 layers; the d2l reference's ``deep-gru-lm``) lr 2 for 100 epochs. `tiny`: the same
    28-token vocabulary on synthetic text, 8 hidden units, a few dozen windows.
    """
    from zoo_core import ModelSpec, Preset
    from zoo_rnn.graphs import lm_graphs

    V = 28  # the Time Machine's characters: 26 letters, space, <unk> (the synthetic text keeps them)
    book_data = {"batch_size": 1024, "num_steps": 32, "num_train": 10000, "num_val": 5000}
    tiny_data = {"synthetic": True, "batch_size": 16, "num_steps": 8, "num_train": 64, "num_val": 32}
    scratch_graph = ("one time step (the previous token and the state in, logits and the new state out); no forward "
                     "graph: the from-scratch loop over time steps is Python, which torch.export unrolls at the "
                     "traced length")

    def num_params(cell: str, h: int, num_layers: int, concise: bool, reset_after: bool = False) -> int:
        """Each layer's gates (W_x, W_h, b; nn.GRU/nn.LSTM have two biases, the scratch GRU's reset-after form one
        more b_hn), then W_hq (or nn.Linear's weight) and b_q."""
        gates = 4 if cell == "lstm" else 3
        total = 0
        for k in range(num_layers):
            inputs = V if k == 0 else h
            biases = 2 * gates * h if concise else gates * h + (h if reset_after else 0)
            total += gates * (inputs * h + h * h) + biases
        return total + h * V + V

    def presets(model: dict, cell: str, num_layers: int, concise: bool, epochs: int, summary: str) -> dict:
        def preset(model: dict, data: dict, epochs: int, summary: str) -> Preset:
            h = model["num_hiddens"]
            state = {name: ((num_layers, h) if "num_layers" in model else (h,))
                     for name in (("H", "C") if cell == "lstm" else ("H",))}
            return Preset(model={"vocab_size": V, **model}, data=data,
                          train={"max_epochs": epochs, "gradient_clip_val": 1.0},
                          num_params=num_params(cell, h, num_layers, concise, model.get("reset_after", False)),
                          graphs=lm_graphs(V, state, forward=concise, summary="" if concise else scratch_graph),
                          summary=summary)

        return {"book": preset(model, book_data, epochs, summary),
                "tiny": preset({**model, "num_hiddens": 8}, tiny_data, 2,
                               "synthetic text over the book's 28 characters, 8 hidden units")}

    common = {"chapter": 10, "task": "language-modeling", "dataset": "time-machine",
              "inputs": ["X: int64[batch, seq]"], "outputs": [f"logits: float32[batch, seq, {V}]"]}
    recipe = "The Time Machine (characters), batch 1024, 32 steps, 32 hidden, clip 1"
    gated = {"num_hiddens": 32, "lr": 4.0}
    deep = {"num_hiddens": 32, "num_layers": 2, "lr": 2.0}
    # The book's scratch weights are N(0, 0.01^2): through two GRU layers the top one then sees next to nothing and
    # the gradients reaching the bottom one vanish (validation perplexity 10.6 after the 100 epochs, seed 0). N(0,
    # 0.1^2), the scale of nn.GRU's own initialisation (uniform +-1/sqrt(32), std 0.10), trains like the concise
    # model (6.41). The one-layer scratch models keep the book's 0.01.
    deep_scratch = {**deep, "sigma": 0.1}
    for name, builder, section, cell, layers, model, epochs, summary in (
            ("lstm-lm-scratch", "LSTMLMScratch", "10.1", "lstm", 1, gated, 50,
             "LSTM language model from scratch: input, forget and output gates, memory cell, own loop over time"),
            ("lstm-lm", "LSTMLM", "10.1", "lstm", 1, gated, 50,
             "LSTM language model, concise: nn.LSTM and an nn.Linear output layer"),
            ("gru-lm-scratch", "GRULMScratch", "10.2", "gru", 1, gated, 50,
             "GRU language model from scratch: update and reset gates (the book's form), own loop over time"),
            ("gru-lm", "GRULM", "10.2", "gru", 1, gated, 50,
             "GRU language model, concise: nn.GRU and an nn.Linear output layer"),
            ("deep-rnn-lm-scratch", "DeepRNNLMScratch", "10.3", "gru", 2, deep_scratch, 100,
             "Deep (2-layer) GRU language model from scratch: a stack of scratch GRUs"),
            ("deep-rnn-lm", "DeepRNNLM", "10.3", "gru", 2, deep, 100,
             "Deep (2-layer) GRU language model, concise: nn.GRU(num_layers=2)")):
        concise = not name.endswith("-scratch")
        lr = f"lr {model['lr']:g}, {epochs} epochs"
        register(ModelSpec(
            name=name, builder=f"zoo_modern_rnn.language_models:{builder}", section=section, summary=summary,
            presets=presets(model, cell, layers, concise, epochs,
                            f"{recipe}, {'2 GRU layers, ' if layers == 2 else ''}{lr} (the book's)"
                            + (f"; weights N(0, {model['sigma']:g}^2), not the book's 0.01" if "sigma" in model else "")),
            tags=("concise",) if concise else ("scratch",), **common))


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
