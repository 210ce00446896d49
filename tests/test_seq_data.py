"""The Time Machine and English-French data modules: the book's figures on the real files, shapes and behaviour on the
synthetic stand-ins (no files)."""

from __future__ import annotations

import hashlib

import pytest
import torch

from zoo_core import get_data_spec
from zoo_core.data.fra_eng import FraEng
from zoo_core.data.time_machine import TimeMachine
from zoo_core.errors import DataNotFoundError, UnknownNameError, ZooError
from zoo_core.testing import require_data
from zoo_core.text import Vocab

LETTERS = [" ", "<unk>", *"abcdefghijklmnopqrstuvwxyz"]


def _sha1_tokens(vocab: Vocab) -> str:
    return hashlib.sha1("\n".join(vocab.idx_to_token).encode()).hexdigest()


# --- The Time Machine ------------------------------------------------------------------------------------------------
def test_time_machine_preprocess_and_tokenize():
    assert TimeMachine.preprocess("The Time-Machine, by H. G. Wells\n[1898]") == "the time machine by h g wells "
    assert TimeMachine.tokenize("to be", "char") == list("to be")
    assert TimeMachine.tokenize("to be", "word") == ["to", "be"]
    with pytest.raises(UnknownNameError):
        TimeMachine(8, token="bpe")


def test_time_machine_synthetic_has_the_books_vocabulary_and_windows():
    data = TimeMachine(16, num_steps=8, num_train=50, num_val=20, synthetic=True)
    splits = data.splits()
    assert data.vocab.idx_to_token == LETTERS  # the book's 28 tokens, in the book's order
    assert data.model_hparams() == {"vocab_size": 28} and data.vocabs() == {"vocab": data.vocab}
    (X, Y), (Xv, Yv) = splits["train"], splits["val"]
    assert X.shape == Y.shape == (50, 8) and Xv.shape == Yv.shape == (20, 8)
    assert X.dtype == Y.dtype == torch.int64
    corpus, _ = data.build(data.raw_text(), data.vocab)
    for i in (0, 7, 49):  # the book's windows: X = corpus[i : i + s], Y = corpus[i + 1 : i + s + 1]
        assert torch.equal(X[i], corpus[i:i + 8]) and torch.equal(Y[i], corpus[i + 1:i + 9])
    assert torch.equal(Xv[0], corpus[50:58])
    # seeded: the same text again, another with another seed
    assert torch.equal(TimeMachine(16, 8, 50, 20, synthetic=True).splits()["train"][0], X)
    assert not torch.equal(TimeMachine(16, 8, 50, 20, synthetic=True, seed=1).splits()["train"][0], X)
    batch = data.example_batch()
    assert [t.shape for t in batch] == [(16, 8), (16, 8)]


def test_time_machine_all_windows_trains_on_the_rest_of_the_corpus():
    book = TimeMachine(16, num_steps=4, num_train=30, num_val=10, synthetic=True)
    full = TimeMachine(16, num_steps=4, num_train=30, num_val=10, synthetic=True, all_windows=True)
    corpus, _ = book.build(book.raw_text(), book.vocab)
    X, Xf = book.splits()["train"][0], full.splits()["train"][0]
    assert torch.equal(Xf[:30], X)  # the book's windows first
    # then every window starting after the validation text (windows 30..39 cover corpus[30:44])
    assert len(Xf) == 30 + (len(corpus) - 4) - (30 + 10 + 4)
    assert torch.equal(Xf[30], corpus[44:48]) and torch.equal(Xf[-1], corpus[-5:-1])
    assert torch.equal(full.splits()["val"][0], book.splits()["val"][0])


def test_time_machine_word_tokens_synthetic():
    data = TimeMachine(8, num_steps=5, num_train=20, num_val=5, token="word", synthetic=True)
    X, Y = data.splits()["train"]
    assert X.shape == (20, 5) and all(" " not in t for t in data.vocab.idx_to_token)


def test_time_machine_too_few_windows_is_a_zoo_error():
    data = TimeMachine(8, num_steps=4, num_train=10, num_val=5, synthetic=True)
    data.raw_text = lambda: "abc def"  # a corpus far too short for 15 windows
    with pytest.raises(ZooError, match="num_train"):
        data.splits()


@pytest.mark.data
def test_time_machine_real_figures():
    require_data("time-machine")
    data = TimeMachine(1024, num_steps=32)
    corpus, vocab = data.build(data.raw_text())
    assert len(corpus) == 173428 and vocab.idx_to_token == LETTERS  # d2l §9.2
    # the book's corpus[:10] ("the time m") and its first window
    assert corpus[:10].tolist() == [21, 9, 6, 0, 21, 10, 14, 6, 0, 14]
    (X, Y), (Xv, Yv) = data.splits()["train"], data.splits()["val"]
    assert X.shape == (10000, 32) and Xv.shape == (5000, 32)
    assert "".join(data.vocab.to_tokens(X[0])) == "the time machine by h g wells i "
    assert torch.equal(Y[0], corpus[1:33]) and torch.equal(Xv[0], corpus[10000:10032])
    full = TimeMachine(1024, num_steps=32, all_windows=True).splits()["train"][0]
    assert len(full) == 10000 + (173428 - 32) - 15032 == 168364
    words = TimeMachine(1024, token="word")
    assert len(words.vocab) == 4580 and words.vocab.token_freqs[:3] == [("the", 2261), ("i", 1267), ("and", 1245)]


# --- English-French -------------------------------------------------------------------------------------------------
def test_fra_eng_preprocess_is_the_books():
    assert FraEng.preprocess("Go.\tVa !") == "go .\tva !"
    assert FraEng.preprocess("Run!\tCours\u202f!") == "run !\tcours !"
    assert FraEng.preprocess("Hi,you.\xa0Ok?!") == "hi ,you . ok ? !"
    assert FraEng.preprocess(".Start") == ".start"  # the book never inserts at position 0
    assert FraEng.preprocess("a\n.b") == "a\n .b"  # ... but does after a newline
    assert FraEng.preprocess("İ. x.") == "i̇ . x ."  # lower() lengthens "İ": the marks still get their space


def _books_preprocess(text: str) -> str:  # d2l 1.0.3 MTFraEng._preprocess, verbatim
    text = text.replace("\u202f", " ").replace("\xa0", " ")
    no_space = lambda char, prev_char: char in ",.!?" and prev_char != " "  # noqa: E731
    out = [" " + char if i > 0 and no_space(char, text[i - 1]) else char for i, char in enumerate(text.lower())]
    return "".join(out)


@pytest.mark.parametrize("text", ["Go.\tVa !\nHi.\tSalut !\n", "?!..,", " .a.\n.\t,", "Ça va?\u202f!\xa0.", "",
                                  "J'ai 3,5 ans... OK!?"])
def test_fra_eng_preprocess_equals_the_books_loop(text):
    assert FraEng.preprocess(text) == _books_preprocess(text)


def test_fra_eng_split_pairs_stops_after_max_examples_plus_one_line():
    text = "a .\tb .\nonly one column\nc\td\ne\tf\ng\th"
    src, tgt = FraEng.split_pairs(text, max_examples=3)  # reads lines 0..3; line 1 has one column
    assert src == [["a", ".", "<eos>"], ["c", "<eos>"], ["e", "<eos>"]]
    assert tgt == [["b", ".", "<eos>"], ["d", "<eos>"], ["f", "<eos>"]]


def test_fra_eng_synthetic_batches_and_vocabularies():
    data = FraEng(16, num_steps=6, num_train=40, num_val=10, synthetic=True)
    splits = data.splits()
    assert [len(splits["train"][0]), len(splits["val"][0])] == [40, 11]  # the book's extra pair
    src, tgt_in, valid, tgt_out = splits["train"]
    assert src.shape == tgt_in.shape == tgt_out.shape == (40, 6) and valid.shape == (40,)
    assert all(t.dtype == torch.int64 for t in splits["train"])
    sv, tv = data.src_vocab, data.tgt_vocab
    assert data.vocabs() == {"src_vocab": sv, "tgt_vocab": tv}
    assert data.model_hparams() == {"src_vocab_size": len(sv), "tgt_vocab_size": len(tv), "tgt_pad": tv["<pad>"]}
    assert (tgt_in[:, 0] == tv["<bos>"]).all() and torch.equal(tgt_in[:, 1:], tgt_out[:, :-1])
    assert torch.equal(valid, (src != sv["<pad>"]).sum(1))
    for row, n in zip(src.tolist(), valid.tolist()):  # <eos> last unless trimmed, then padding
        assert row[n - 1] == sv["<eos>"] or n == 6
    assert len(sv) < 40 and len(tv) < 40  # its own small vocabularies


def test_fra_eng_without_quirks_has_exact_splits_and_train_only_vocabularies():
    book = FraEng(16, num_steps=6, num_train=40, num_val=10, synthetic=True)
    fixed = FraEng(16, num_steps=6, num_train=40, num_val=10, synthetic=True, book_quirks=False)
    assert len(fixed.splits()["val"][0]) == 10
    train_src = fixed.pad_or_trim(fixed.split_pairs(fixed.preprocess(fixed.raw_text()))[0][:40], 6)
    assert fixed.src_vocab == Vocab(train_src, min_freq=2)
    assert len(book.splits()["val"][0]) == 11


def test_fra_eng_encode_source_and_build_agree():
    data = FraEng(16, num_steps=6, num_train=40, num_val=10, synthetic=True)
    sentences = ["I go home.", "You see a dog!", "we run very very very very very fast ."]
    src, valid = FraEng.encode_source(sentences, data.src_vocab, 6)
    arrays = data.build(sentences)
    assert torch.equal(src, arrays[0]) and torch.equal(valid, arrays[2])
    assert data.src_vocab.to_tokens(src[0]) == ["i", "go", "home", ".", "<eos>", "<pad>"]
    assert data.src_vocab.to_tokens(src[1])[2] == "<unk>"  # 'a' is not in the synthetic language
    assert valid.tolist() == [5, 6, 6]  # the last trimmed to num_steps: no <eos> left, as in the book
    assert data.build(sentences)[1][:, 0].eq(data.tgt_vocab["<bos>"]).all()
    empty_src, empty_valid = FraEng.encode_source([], data.src_vocab, 6)
    assert empty_src.shape == (0, 0) and empty_valid.shape == (0,)
    with pytest.raises(ZooError):
        data.build(["a"], ["b", "c"])


def test_registered_datasets():
    assert get_data_spec("time-machine").builder == "zoo_core.data.time_machine:TimeMachine"
    assert get_data_spec("fra-eng").builder == "zoo_core.data.fra_eng:FraEng"


def test_fra_eng_missing_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataNotFoundError, match="fra-eng/fra.txt") as info:
        FraEng.locate(str(tmp_path), download=False)
    assert "fra-eng.zip" in str(info.value) and "\n" not in str(info.value)


def test_fra_eng_is_found_by_extracting_the_books_zip(tmp_path, monkeypatch):
    import zipfile

    from zoo_core.data import fra_eng

    text = "Go.\tVa !\nHi.\tSalut !\n"
    with zipfile.ZipFile(tmp_path / "fra-eng.zip", "w") as z:
        z.writestr("fra-eng/fra.txt", text)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_DATA", raising=False)
    monkeypatch.setattr(fra_eng, "ZIP", fra_eng.DataFile("fra-eng.zip"))  # no checksum for the made-up zip
    monkeypatch.setattr(fra_eng, "FILE", fra_eng.DataFile("fra-eng/fra.txt"))
    root = FraEng.locate(str(tmp_path))
    assert (root / "fra-eng" / "fra.txt").read_text() == text


@pytest.mark.data
def test_fra_eng_real_figures():
    require_data("fra-eng")
    data = FraEng(128)
    splits = data.splits()
    assert len(data.src_vocab) == 194 and len(data.tgt_vocab) == 214  # the reference's sizes
    # the tokens themselves, as d2l 1.0.3's MTFraEng builds them (checked against the reference library)
    assert _sha1_tokens(data.src_vocab) == "493bf60fda69b8b43c2dd7a9f4cd569319b10fcf"
    assert _sha1_tokens(data.tgt_vocab) == "234448fbb1729a715d27a8b28ccc68ae32c08212"
    assert [len(splits["train"][0]), len(splits["val"][0])] == [512, 129]
    src, tgt_in, valid, tgt_out = splits["train"]
    sv, tv = data.src_vocab, data.tgt_vocab
    assert src[0].tolist() == [59, 2, 3, 4, 4, 4, 4, 4, 4]  # "go . <eos>", the reference's indices
    assert sv.to_tokens(src[0])[:3] == ["go", ".", "<eos>"] and valid[:3].tolist() == [3, 3, 3]
    assert tv.to_tokens(tgt_in[0])[:4] == ["<bos>", "va", "!", "<eos>"]
    assert tv.to_tokens(tgt_out[2])[:3] == ["cours", "!", "<eos>"]  # "Cours\u202f!": the narrow space
    assert sv.to_tokens(src[1])[:2] == ["hi", "."]
    src4, valid4 = FraEng.encode_source(["go .", "i lost .", "he's calm .", "i'm home ."], sv, 9)
    assert sv.to_tokens(src4[2])[:4] == ["he's", "calm", ".", "<eos>"]
    fixed = FraEng(128, book_quirks=False)
    assert len(fixed.splits()["val"][0]) == 128 and len(fixed.src_vocab) < 194
