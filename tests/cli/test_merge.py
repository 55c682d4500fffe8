"""`megaspec train --from` with a peft: section, then `megaspec merge` (megaspec.cli): end to end
on a tiny model, and the refusals with their messages and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from megaspec.cli import main
from megaspec.finetune import load_adapter_run
from megaspec.training import load_trained_model

QUICK = ["--steps", "3", "--batch-size", "4", "--seq-length", "32", "training.eval_batches=1",
         "--sample-tokens", "0", "--no-progress"]  # fmt: skip
TOKENS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "base"
    assert main(["train", "--preset", "tiny", *QUICK, "--output-dir", str(directory)]) == 0
    return directory


def peft_file(directory: Path, text: str = "peft: {type: lora, rank: 4, alpha: 8}\n") -> Path:
    path = directory / "peft.yaml"
    path.write_text(text)
    return path


def test_train_from_a_run_with_peft_then_merge(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, merged_dir = tmp_path / "lora", tmp_path / "merged"
    argv = ["train", "--from", str(base_dir), "-c", str(peft_file(tmp_path)), *QUICK,
            "training.learning_rate=0.01", "--output-dir", str(run_dir)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"training a lora adapter on {base_dir} (base weights frozen) + ")
    assert (
        f"saved adapter_config.json, adapter_model.safetensors, base_model.json, config.yaml, "
        f"progress.json and metrics.jsonl to {run_dir}\n"
    ) in out
    assert main(["merge", str(run_dir), "--output-dir", str(merged_dir)]) == 0
    assert capsys.readouterr().out == (
        f"merged the adapters of {run_dir} into its base; wrote model.safetensors and config.yaml to {merged_dir}\n"
    )
    adapted, run = load_adapter_run(run_dir)
    merged, merged_run = load_trained_model(merged_dir)
    base, _ = load_trained_model(base_dir)
    with torch.no_grad():
        expected = adapted(TOKENS)
        torch.testing.assert_close(merged(TOKENS), expected, rtol=0, atol=1e-5)
        assert not torch.allclose(base(TOKENS), expected, atol=1e-4)  # the adapter was trained
    assert merged_run.peft is None and run.peft is not None and merged_run.model == run.model


def test_train_from_without_peft_trains_every_weight(base_dir: Path, tmp_path: Path) -> None:
    assert main(["train", "--from", str(base_dir), *QUICK, "--output-dir", str(tmp_path / "more")]) == 0
    base, run = load_trained_model(base_dir)
    trained, trained_run = load_trained_model(tmp_path / "more")
    assert trained_run.model == run.model
    assert all(not torch.equal(first, second) for first, second in zip(base.parameters(), trained.parameters()))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model.hidden_size=32"],
         "model: the base (--from) decides the model; remove the override 'model.hidden_size=32'"),
        (["--preset", "tiny"], "--preset and --from both choose the model; give one of them"),
        (["peft={type: lora, rank: 0}"], "peft.rank: must be positive, got 0"),
        (["peft={type: prefix}"], "peft.type: unknown type 'prefix'; valid names: ia3, lora"),
        (["peft={type: lora, targets: ['*.nothing']}"], "target patterns matched no linear: '*.nothing'"),
    ],
)  # fmt: skip
def test_train_from_refusals(
    base_dir: Path, arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--from", str(base_dir), *QUICK, *arguments]) == 2
    assert capsys.readouterr().err == f"megaspec train: {message}\n"


def test_peft_without_from_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--preset", "tiny", "-c", str(peft_file(tmp_path)), *QUICK, "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "megaspec train: peft: adapters train on pretrained weights, not freshly initialised ones; "
        "start from a trained model (megaspec train --from DIR, or megaspec.finetune.finetune)\n"
    )
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_merge_refusals(base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["merge", str(base_dir), "--output-dir", str(tmp_path / "full")]) == 2
    assert capsys.readouterr().err == (
        f"megaspec merge: {tmp_path / 'full'} exists and is not empty; pass --overwrite to replace it\n"
    )
    assert main(["merge", str(base_dir), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"megaspec merge: {base_dir}: not an adapter run: its config.yaml has no peft: section\n"
    )
    assert main(["merge", str(tmp_path / "full"), "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"megaspec merge: {tmp_path / 'full'}: config.yaml is missing; expected an adapter run of megaspec train\n"
    )
    assert not (tmp_path / "out").exists() and (tmp_path / "full" / "keep.txt").read_text() == "mine"
