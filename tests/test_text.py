"""`zoo_core.text`: the book's Vocab (index order, unknown tokens, min_freq, reserved tokens), JSON round trip."""

from __future__ import annotations

import json

import pytest

from zoo_core.errors import IntegrityError, UnknownNameError, ZooError
from zoo_core.text import Vocab, tokenize


def test_vocab_order_is_the_books_sorted_set():
    # counts: b 3, a 2, c 1, ' ' 1. The book sorts the kept tokens (plus <unk> and reserved) alphabetically:
    # ' ' < '<pad>' < '<unk>' < 'a' < 'b' < 'c' (code points 32, 60, 60, 97, ...; '<p' < '<u').
    vocab = Vocab(list("bab ca b"), reserved_tokens=["<pad>"])
    assert vocab.idx_to_token == [" ", "<pad>", "<unk>", "a", "b", "c"]
    assert vocab.token_to_idx == {t: i for i, t in enumerate(vocab.idx_to_token)}
    assert vocab.token_freqs[:2] == [("b", 3), ("a", 2)]  # by decreasing count, as the book's
    assert len(vocab) == 6 and vocab.unk == 2


def test_vocab_min_freq_flattening_and_lookup():
    lines = [["the", "cat", "sat"], ["the", "dog"], ["a", "cat"]]
    vocab = Vocab(lines, min_freq=2)  # a list of lists is flattened; only 'the' and 'cat' occur twice
    assert vocab.idx_to_token == ["<unk>", "cat", "the"]
    assert vocab["the"] == 2 and vocab["dog"] == vocab.unk == 0
    assert vocab[["cat", "zebra", "the"]] == [1, 0, 2]
    assert vocab[("cat",)] == [1]
    assert vocab[[["the"], ["cat", "cat"]]] == [[2], [1, 1]]  # nested lists map recursively, as the book's
    assert "cat" in vocab and "dog" not in vocab


def test_vocab_reserved_tokens_are_kept_whatever_their_count():
    vocab = Vocab(["x"], min_freq=5, reserved_tokens=["<bos>", "<eos>"])
    assert vocab.idx_to_token == ["<bos>", "<eos>", "<unk>"]
    assert Vocab().idx_to_token == ["<unk>"]


def test_to_tokens_single_list_and_tensor():
    torch = pytest.importorskip("torch")
    vocab = Vocab(list("abc"))
    assert vocab.to_tokens(1) == "a"
    assert vocab.to_tokens([1, 3]) == ["a", "c"]
    assert vocab.to_tokens([2]) == ["b"]  # the book's fails here; a list of one index gives a list of one token
    assert vocab.to_tokens(torch.tensor([3, 2, 1])) == ["c", "b", "a"]
    assert vocab.to_tokens(torch.tensor(2)) == "b"
    assert vocab.to_tokens(vocab[list("cab")]) == list("cab")


def test_json_round_trip(tmp_path):
    vocab = Vocab([["go", ".", "<eos>"], ["i", "lost", ".", "<eos>"]], reserved_tokens=["<pad>", "<bos>"])
    again = Vocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again == vocab and again.idx_to_token == vocab.idx_to_token and again.unk == vocab.unk
    path = vocab.save(tmp_path / "run" / "vocab.json")
    assert path.is_file() and not list(path.parent.glob(".*"))  # atomic: no temporary file left behind
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded["lost"] == vocab["lost"] and loaded.token_freqs == []
    french = Vocab(["été", "à", "ça"])
    assert Vocab.load(french.save(tmp_path / "fr.json")) == french  # non-ASCII tokens survive


@pytest.mark.parametrize("value", [[], {"idx_to_token": "abc"}, {"idx_to_token": ["a", "a", "<unk>"]},
                                   {"idx_to_token": ["a"]}, {"format": "other", "idx_to_token": ["<unk>"]},
                                   {"idx_to_token": ["<unk>", 3]}])
def test_from_json_rejects_what_is_not_a_vocabulary(value):
    with pytest.raises(IntegrityError):
        Vocab.from_json(value)


def test_load_errors_are_one_line_zoo_errors(tmp_path):
    with pytest.raises(IntegrityError, match="missing"):
        Vocab.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(IntegrityError, match="bad.json") as info:
        Vocab.load(tmp_path / "bad.json")
    assert "\n" not in str(info.value)


def test_tokenize():
    assert tokenize("to be", "char") == ["t", "o", " ", "b", "e"]
    assert tokenize(" to  be ", "word") == ["to", "be"]
    with pytest.raises(UnknownNameError):
        tokenize("x", "byte")
    assert issubclass(UnknownNameError, ZooError)


def test_lazy_export():
    import zoo_core

    assert zoo_core.Vocab is Vocab
