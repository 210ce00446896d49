"""Registers chapter 11's models and the Nadaraya-Watson data. Imports no torch: builders are named as strings.

One function per model family; each family's engineer owns its function.
"""

from zoo_core import hookimpl


def _nadaraya_watson(register):
    """Nadaraya-Watson attention pooling (d2l §11.2), fixed kernels (1.0 edition) or a learned Gaussian width (the
    previous edition's parametric pooling, d2l 0.17 §10.2.4). `tiny` is the trainable one: the contract's one-step
    test needs something to learn (the fixed kernels are tested in test_nadaraya_watson.py)."""
    from zoo_core import ModelSpec, Preset

    data = {"num_train": 40, "noise": 1.0, "batch_size": 40}
    tiny_data = {"num_train": 16, "noise": 1.0, "batch_size": 16}
    register(ModelSpec(
        name="nadaraya-watson", builder="zoo_attention.nadaraya_watson:NadarayaWatson", chapter=11, section="11.2",
        summary="Nadaraya-Watson kernel regression as attention pooling: gaussian, boxcar, constant or epanechikov "
                "kernel (--set kernel=...), or a learned gaussian width (--preset trainable)",
        task="regression", dataset="nadaraya-watson-data",
        inputs=["x: float32[batch]"], outputs=["y_hat: float32[batch]"], tags=("attention", "nonparametric"),
        presets={
            "book": Preset(model={"kernel": "gaussian"}, data=data, train={"max_epochs": 1}, num_params=1,
                           summary="gaussian kernel exp(-2 d^2) over 40 noisy samples; nothing to learn: one epoch "
                                   "measures the leave-one-out training loss and the validation loss"),
            "trainable": Preset(model={"trainable": True, "lr": 2.0}, data=data, train={"max_epochs": 10},
                                num_params=1,
                                summary="learned gaussian width w ~ U(0, 1) (d2l 0.17 10.2.4), leave-one-out, "
                                        "full-batch SGD lr 2 on the mean squared error, 10 epochs"),
            "tiny": Preset(model={"trainable": True, "lr": 1.0, "num_train": 16}, data=tiny_data,
                           train={"max_epochs": 2}, num_params=1),
        }))


def _bahdanau(register):
    """The RNN encoder-decoder with Bahdanau (additive) attention (d2l §11.4; owner: Bahdanau engineer).

    `book`: chapter 10's seq2seq recipe (fra-eng, embed and hidden 256, 2 GRU layers, dropout 0.2, Adam 0.005, batch
    128, 30 epochs, clip 1, masked loss). `tiny`: 32-wide, on synthetic word-for-word pairs (the contract suite).
    Graphs: the teacher-forced forward (target length fixed at 9: its Python loop over steps is unrolled), the
    encoder, and one decoder step that also returns its attention weights.
    """
    from zoo_core import GraphSpec, ModelSpec, Preset

    def graphs(tgt_vocab: int, num_hiddens: int, num_layers: int) -> tuple:
        src, valid = "src: int64[batch, src_seq]", "src_valid_len: int64[batch]"
        enc = f"enc_outputs: float32[batch, src_seq, {num_hiddens}]"
        keys = f"keys: float32[batch, src_seq, {num_hiddens}]"
        H, lens = f"H: float32[batch, {num_layers}, {num_hiddens}]", "enc_valid_len: int64[batch]"
        return (
            GraphSpec("model", (src, "tgt_in: int64[batch, 9]", valid), (f"logits: float32[batch, 9, {tgt_vocab}]",),
                      summary="teacher-forced forward pass (training); the decoder's Python loop over target steps "
                              "is unrolled, so the target length is fixed at the book's 9 steps"),
            GraphSpec("encoder", (src, valid), (enc, keys, H, lens), role="encoder",
                      summary="the encoder: its top layer's outputs (attention values), their projection W_k "
                              "(attention keys, once per sentence), the decoder's initial state, the source lengths"),
            GraphSpec("decoder_step", ("tokens: int64[batch]", enc, keys, lens, H),
                      (f"logits: float32[batch, {tgt_vocab}]", f"H_next: float32[batch, {num_layers}, {num_hiddens}]",
                       "attention: float32[batch, src_seq]"), role="step", state=("H",),
                      summary="one decoder step: additive attention over the source (its weights returned), then "
                              "the GRU; the previous token in, next-token logits out"),
        )

    def preset(model: dict, data: dict, epochs: int, num_params: int, summary: str) -> Preset:
        g = graphs(model["tgt_vocab_size"], model["num_hiddens"], model["num_layers"])
        return Preset(model=model, data=data, train={"max_epochs": epochs, "gradient_clip_val": 1},
                      num_params=num_params, outputs=g[0].outputs, graphs=g, summary=summary)

    book = {"src_vocab_size": 194, "tgt_vocab_size": 214, "embed_size": 256, "num_hiddens": 256, "num_layers": 2,
            "dropout": 0.2, "lr": 0.005, "tgt_pad": 5}
    tiny = {**book, "src_vocab_size": 26, "tgt_vocab_size": 28, "embed_size": 32, "num_hiddens": 32, "lr": 0.02,
            "tgt_pad": 4}
    book_graphs = graphs(214, 256, 2)
    register(ModelSpec(
        name="bahdanau", builder="zoo_attention.bahdanau:Bahdanau", chapter=11, section="11.4",
        summary="GRU encoder-decoder with Bahdanau (additive) attention for English-French translation: masked loss, "
                "greedy and beam search, attention weights at every step",
        task="translation", dataset="fra-eng", tags=("attention", "concise"),
        inputs=book_graphs[0].inputs, outputs=book_graphs[0].outputs, graphs=book_graphs,
        presets={
            "book": preset(book, {"batch_size": 128}, 30, 2_066_390,
                           "fra-eng (512 pairs, 9 steps), embed and hidden 256, 2 GRU layers, additive attention, "
                           "dropout 0.2, Adam 0.005, batch 128, 30 epochs, clip 1 (the book's)"),
            "tiny": preset(tiny, {"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32}, 1, 33_148,
                           "32-wide GRUs and attention on synthetic word-for-word pairs"),
        }))


def _transformer(register):
    """The Transformer encoder-decoder for English-French translation (d2l §11.7; owner: Transformer engineer)."""
    from zoo_core import GraphSpec, ModelSpec, Preset

    def graphs(tgt_vocab_size: int, num_hiddens: int, num_heads: int, num_blks: int) -> tuple:
        """The training forward pass, the encoder (cross-attention keys and values, the source mask), one decoder
        step with each block's self-attention keys and values as state (a cache of ``past`` positions)."""
        d = num_hiddens // num_heads
        src, valid = "src: int64[batch, src_seq]", "src_valid_len: int64[batch]"
        memory = [f"cross_{n}: float32[batch, {num_blks}, {num_heads}, src_seq, {d}]" for n in ("K", "V")]
        bias = "cross_bias: float32[batch, 1, 1, src_seq]"
        cache = [f"{n}: float32[batch, {num_blks}, {num_heads}, past, {d}]" for n in ("K", "V")]
        grown = [f"{n}_next: float32[batch, {num_blks}, {num_heads}, past_next, {d}]" for n in ("K", "V")]
        return (
            GraphSpec("model", (src, "tgt_in: int64[batch, tgt_seq]", valid),
                      (f"logits: float32[batch, tgt_seq, {tgt_vocab_size}]",),
                      summary="teacher-forced forward pass (causal self-attention), source and target lengths "
                              "symbolic"),
            GraphSpec("encoder", (src, valid), (*memory, bias), role="encoder",
                      summary="the encoder: each decoder block's cross-attention keys and values, and the source's "
                              "padding mask (additive bias)"),
            GraphSpec("decoder_step", ("tokens: int64[batch]", *memory, bias, *cache),
                      (f"logits: float32[batch, {tgt_vocab_size}]", *grown), role="step", state=("K", "V"),
                      summary="one decoder step with a key/value cache of every block's self-attention (past "
                              "positions; empty at the start): the token at position past, logits and the grown "
                              "cache out"),
        )

    def preset(model: dict, data: dict, epochs: int, num_params: int, summary: str) -> Preset:
        g = graphs(model["tgt_vocab_size"], model["num_hiddens"], model["num_heads"], model["num_blks"])
        return Preset(model=model, data=data, train={"max_epochs": epochs, "gradient_clip_val": 1},
                      num_params=num_params, outputs=g[0].outputs, graphs=g, summary=summary)

    book = {"src_vocab_size": 194, "tgt_vocab_size": 214, "num_hiddens": 256, "ffn_num_hiddens": 64, "num_heads": 4,
            "num_blks": 2, "dropout": 0.2, "lr": 0.001, "tgt_pad": 5}
    tiny = {**book, "src_vocab_size": 26, "tgt_vocab_size": 28, "num_hiddens": 32, "ffn_num_hiddens": 16,
            "num_heads": 2, "lr": 0.01, "tgt_pad": 4}
    spec_graphs = graphs(214, 256, 4, 2)
    register(ModelSpec(
        name="transformer", builder="zoo_attention.transformer:Transformer", chapter=11, section="11.7",
        summary="Transformer encoder-decoder for English-French translation (post-norm): causal validation, "
                "KV-cached greedy and beam search",
        task="translation", dataset="fra-eng", tags=("concise",),
        inputs=spec_graphs[0].inputs, outputs=spec_graphs[0].outputs, graphs=spec_graphs,
        presets={
            "book": preset(book, {"batch_size": 128}, 30, 1_869_782,
                           "fra-eng (512 pairs, 9 steps), 256 hidden, FFN 64, 4 heads, 2 blocks, dropout 0.2, Adam "
                           "0.001, batch 128, 30 epochs, clip 1 (the book's)"),
            "tiny": preset(tiny, {"synthetic": True, "num_train": 256, "num_val": 64, "batch_size": 32}, 1, 32_156,
                           "32 hidden, 2 heads, 2 blocks on synthetic word-for-word pairs"),
        }))


def _vit(register):
    """The Vision Transformer (d2l §11.8; owner: ViT engineer). `book`: the book's recipe (its `d2l.Classifier`
    trains with minibatch SGD); `tiny`: the same architecture, narrow, on 16 px synthetic images."""
    from zoo_core import ModelSpec, Preset

    def image(size: int) -> list[str]:
        return [f"X: float32[batch, 1, {size}, {size}]"]

    tiny = {"img_size": 16, "patch_size": 4, "num_hiddens": 16, "mlp_num_hiddens": 32, "num_heads": 2, "num_blks": 2}
    register(ModelSpec(
        name="vit", builder="zoo_attention.vit:ViT", chapter=11, section="11.8",
        summary="Vision Transformer: 16 px patches of a 96 px image as 36 tokens plus <cls>, 2 pre-norm encoder "
                "blocks (512 hidden, 8 heads, MLP 2048), class from the <cls> token",
        task="classification", dataset="fashion-mnist", tags=("concise", "attention"),
        inputs=image(96), outputs=["logits: float32[batch, 10]"],
        presets={
            "book": Preset(model={"lr": 0.1}, data={"batch_size": 128, "resize": 96}, train={"max_epochs": 10},
                           num_params=6_457_866, inputs=image(96),
                           summary="Fashion-MNIST at 96 px, patch 16, 512 hidden, MLP 2048, 8 heads, 2 blocks, "
                                   "dropout 0.1 (embedding and blocks), SGD lr 0.1, batch 128, 10 epochs (the book's)"),
            "tiny": Preset(model={"lr": 0.1, **tiny}, data={"synthetic": True, "num_train": 64, "num_val": 32,
                                                           "batch_size": 16, "resize": 16},
                           train={"max_epochs": 1}, num_params=5_082, inputs=image(16),
                           summary="16 px synthetic stand-in of Fashion-MNIST, patch 4, 16 hidden, 2 heads, 2 blocks"),
        }))


def _pretraining(register):
    """GPT-mini (decoder-only, causal LM) and BERT-mini (encoder-only, masked LM) on The Time Machine (d2l §11.9;
    owner: pretraining engineer). `zoo_attention.pretraining` says how they train.

    `book`: chapter 9's windows of the book's characters (batch 1024, 32 steps, the first 10,000 windows train, the
    next 5,000 validate), 2 post-norm blocks, 64 hidden, FFN 128, 4 heads, dropout 0.1, Adam; gpt-mini's 50 epochs
    are gru-lm's training tokens (16M). `tiny`: 16 hidden on the synthetic text (the contract suite).
    BERT-mini's task, ``masked-language-modeling``, is not one `zoo predict` handles: its Python API fills ``_``
    characters (`BERTMini.fill`); train, export, verify and info work as for any model.
    """
    from zoo_attention.pretraining_graphs import bert_graphs, gpt_graphs
    from zoo_core import ModelSpec, Preset

    V = 28  # the Time Machine's characters: 26 letters, space, <unk>
    book_data = {"batch_size": 1024, "num_steps": 32, "num_train": 10000, "num_val": 5000}
    tiny_data = {"synthetic": True, "batch_size": 16, "num_steps": 8, "num_train": 64, "num_val": 32}
    book = {"vocab_size": V, "num_hiddens": 64, "ffn_num_hiddens": 128, "num_heads": 4, "num_blks": 2,
            "dropout": 0.1, "lr": 0.003, "max_len": 512}
    tiny = {**book, "num_hiddens": 16, "ffn_num_hiddens": 32, "num_heads": 2, "lr": 0.01, "max_len": 64}
    recipe = ("The Time Machine (characters), batch 1024, 32 steps, 2 post-norm blocks, 64 hidden, FFN 128, 4 heads, "
              "dropout 0.1, sinusoidal positions (512; embeddings not scaled by sqrt(h)), Adam {lr:g}, {epochs} "
              "epochs, clip 1")

    def gpt_preset(model: dict, data: dict, epochs: int, num_params: int, summary: str) -> Preset:
        graphs = gpt_graphs(V, model["num_blks"], model["num_heads"], model["num_hiddens"])
        return Preset(model=model, data=data, train={"max_epochs": epochs, "gradient_clip_val": 1.0},
                      num_params=num_params, graphs=graphs, outputs=graphs[0].outputs, summary=summary)

    def bert_preset(model: dict, data: dict, epochs: int, num_params: int, summary: str) -> Preset:
        graphs = bert_graphs(V)
        return Preset(model=model, data=data, train={"max_epochs": epochs, "gradient_clip_val": 1.0},
                      num_params=num_params, graphs=graphs, outputs=graphs[0].outputs, summary=summary)

    gpt_book_graphs = gpt_graphs(V, 2, 4, 64)
    register(ModelSpec(
        name="gpt-mini", builder="zoo_attention.pretraining:GPTMini", chapter=11, section="11.9",
        summary="decoder-only causal Transformer language model (GPT) on The Time Machine's characters: perplexity "
                "beside chapters 9-10's RNNs, KV-cached greedy and beam search",
        task="language-modeling", dataset="time-machine", tags=("attention", "pretraining"),
        inputs=gpt_book_graphs[0].inputs, outputs=gpt_book_graphs[0].outputs, graphs=gpt_book_graphs,
        presets={
            "book": gpt_preset(book, book_data, 50, 70_044, recipe.format(lr=book["lr"], epochs=50)
                               + " (50 epochs: gru-lm's 16M training tokens)"),
            "tiny": gpt_preset(tiny, tiny_data, 2, 5_244, "synthetic text over the book's 28 characters, 16 hidden, "
                                                      "2 heads, 2 blocks, positions up to 64"),
        }))
    register(ModelSpec(
        name="bert-mini", builder="zoo_attention.pretraining:BERTMini", chapter=11, section="11.9",
        summary="encoder-only masked language model (BERT) on The Time Machine's characters: 15% of positions "
                "chosen (80% mask token, 10% random, 10% kept), loss there only",
        task="masked-language-modeling", dataset="time-machine", tags=("attention", "pretraining"),
        inputs=bert_graphs(V)[0].inputs, outputs=bert_graphs(V)[0].outputs, graphs=bert_graphs(V),
        presets={
            "book": bert_preset(book, book_data, 20, 74_396, recipe.format(lr=book["lr"], epochs=20)
                                + "; mask token = index 28"),
            "tiny": bert_preset(tiny, tiny_data, 2, 5_564, "synthetic text over the book's 28 characters, 16 hidden, "
                                                       "2 heads, 2 blocks"),
        }))


@hookimpl
def zoo_register_models(register):
    _nadaraya_watson(register)
    _bahdanau(register)
    _transformer(register)
    _vit(register)
    _pretraining(register)


@hookimpl
def zoo_register_datasets(register):
    from zoo_core import DataSpec

    register(DataSpec("nadaraya-watson-data", "zoo_attention.nadaraya_watson:NadarayaWatsonData",
                      "f(x) = 2 sin(x) + x: 40 samples x ~ U(0, 5) with N(0, 1) noise; validation on the grid "
                      "0, 0.1, ..., 4.9 against the noise-free f (d2l 11.2)"))
