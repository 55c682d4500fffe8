"""`megaspec generate` (megaspec.cli.generate): a batch of prompts from a megaspec run
directory (bytes) or a Hugging Face directory (its tokenizer), greedy equal to the library,
and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megaspec.cli import main
from megaspec.data import ByteTokenizer
from megaspec.generate import generate
from megaspec.training import resolve_run, save_trained_model, train
from tests.helpers.hf_models import save, tiny_model

WORDS = [f"w{index}" for index in range(250)]


def run_generate(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["generate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_greedy_from_a_run_directory_is_the_librarys_greedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = resolve_run(preset="tiny", overrides=["training.steps=20"])
    model = train(run, progress=False).model.eval()
    save_trained_model(model, run, tmp_path / "run")
    prompts = ["Return the ", "The Python"]
    argv = [str(tmp_path / "run"), "--max-new-tokens", "12", "--temperature", "0"]
    code, out, err = run_generate(capsys, *argv, *(f"--prompt={prompt}" for prompt in prompts))
    assert code == 0, err
    tokenizer = ByteTokenizer()
    expected = generate(model, [tokenizer.encode_tensor(text) for text in prompts],
                        max_new_tokens=12, temperature=0.0)  # fmt: skip
    longest = max(len(text) for text in prompts)
    texts = [prompt + tokenizer.decode(row[longest:]) for prompt, row in zip(prompts, expected)]
    assert out == "".join(f"{text}\n" for text in texts)


def word_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over WORDS (ids 0..249) and an end-of-sequence token (id 250)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {word: index for index, word in enumerate(WORDS)} | {"</s>": 250, "<unk>": 251}
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>",
                            pad_token="w0").save_pretrained(directory)  # fmt: skip


def test_a_hugging_face_directory_uses_its_tokenizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoTokenizer

    hf = tiny_model("llama3")
    hf.generation_config.eos_token_id = 250
    save(hf, tmp_path / "hf")
    word_tokenizer(tmp_path / "hf")
    code, out, err = run_generate(
        capsys, str(tmp_path / "hf"), "--prompt", "w5 w7 w9", "--max-new-tokens", "8", "--temperature", "0"
    )
    assert code == 0, err
    theirs = hf.generate(torch.tensor([[5, 7, 9]]), max_new_tokens=8, do_sample=False, eos_token_id=250,
                         pad_token_id=0)[0].tolist()  # fmt: skip
    ending = theirs.index(250) if 250 in theirs else len(theirs)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert out == f"{tokenizer.decode(theirs[:ending], skip_special_tokens=True)}\n"
    assert out.startswith("w5 w7 w9")


def test_a_directory_without_a_tokenizer_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save(tiny_model("qwen3"), tmp_path / "hf")
    code, _, err = run_generate(capsys, str(tmp_path / "hf"), "--prompt", "hello")
    assert code == 2
    assert err == (
        f"megaspec generate: {tmp_path / 'hf'}: no tokenizer (tokenizer.json, tokenizer_config.json, "
        f"tokenizer.model missing)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temperature", "-1"], "megaspec generate: temperature must be >= 0 (0 is greedy), got -1.0\n"),
        (["--max-new-tokens", "-2"], "megaspec generate: --max-new-tokens: must be >= 0, got -2\n"),
        (["--device", "cuda:9"] if not torch.cuda.is_available() else ["--device", "nonsense"], None),
    ],
)
def test_bad_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str | None
) -> None:
    run = resolve_run(preset="tiny", overrides=["training.steps=1"])
    save_trained_model(train(run, progress=False).model, run, tmp_path / "run")
    code, _, err = run_generate(capsys, str(tmp_path / "run"), "--prompt", "x", *argv)
    assert code == 2
    if message is not None:
        assert err == message
    else:
        assert err.startswith("megaspec generate: --device ")
