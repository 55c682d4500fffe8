"""The bundled corpus, the byte tokenizer and the window sampler of megaspec.data."""

from __future__ import annotations

import pytest
import torch

from megaspec.data import ByteTokenizer, WindowSampler, load_corpus, train_validation_split


def test_corpus_is_bundled_licensed_text_without_machine_paths() -> None:
    corpus = load_corpus()
    assert 300_000 <= len(corpus.encode("utf-8")) <= 600_000
    assert "PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2" in corpus
    assert "Python Library Documentation: module argparse" in corpus
    for machine_specific in ("/root/", "site-packages", "\nFILE\n", "MODULE REFERENCE", " at 0x"):
        assert machine_specific not in corpus


def test_tokenizer_round_trips_the_corpus() -> None:
    tokenizer = ByteTokenizer()
    sample = load_corpus()[:20_000] + " Fran\u00e7ois, \u4e2d\u6587, \U0001f600"
    ids = tokenizer.encode(sample)
    assert all(0 <= token < tokenizer.vocab_size for token in ids)
    assert tokenizer.decode(ids) == sample
    as_tensor = tokenizer.encode_tensor(sample)
    assert as_tensor.dtype == torch.int64 and as_tensor.tolist() == ids
    assert tokenizer.decode(as_tensor) == sample
    # A model can emit a broken multi-byte sequence; decoding must not raise.
    assert tokenizer.decode([0xE4, 0x41]) == "\ufffdA"
    with pytest.raises(ValueError, match="byte ids"):
        tokenizer.decode([256])


def test_sampler_gives_shifted_reproducible_windows_and_a_held_out_tail() -> None:
    tokens = torch.arange(1000)
    train_windows, validation_windows = train_validation_split(tokens, 0.1)
    assert len(train_windows) == 900 and validation_windows.tokens[0].item() == 900
    inputs, labels = train_windows.sample(
        batch_size=8, seq_length=16, generator=torch.Generator().manual_seed(1)
    )
    assert inputs.shape == labels.shape == (8, 16)
    assert torch.equal(labels, inputs + 1)  # contiguous windows, labels shifted by one
    assert int(labels.max()) < 900
    again, _ = train_windows.sample(
        batch_size=8, seq_length=16, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(inputs, again)
    with pytest.raises(ValueError, match="needs at least 101 tokens"):
        validation_windows.sample(batch_size=1, seq_length=100, generator=torch.Generator())
    with pytest.raises(ValueError, match="1-D"):
        WindowSampler(torch.zeros(2, 2, dtype=torch.int64))
