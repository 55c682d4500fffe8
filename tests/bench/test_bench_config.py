"""The bench sizes' parameter counts and model FLOPs against hand-derived values, the matmul
peak's arithmetic, and train_step.py's command line (sizes, --all, unknown --only names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.config import HIDDEN4096, SIZES, SMALL
from bench.peak import measure_matmul_peak
from bench.train_step import parse_args, profiled, skip_reason
from bench.peers import PEERS


def test_small_model_flops_by_hand() -> None:
    # Per layer: qkv 3*128*128 + proj 128*128 + MLP 3*352*128 + two norms 2*128 = 200,960.
    layers = 2 * 200_960
    n = layers + 128 + 512 * 128  # + final norm + output layer; not the input embedding
    assert SMALL.non_embedding_parameters() == n == 467_584
    per_token = 6 * n + 12 * 2 * 128 * 64  # 6N + 12 L h s
    assert SMALL.model_flops_per_token() == per_token == 3_002_112
    assert SMALL.model_flops_per_step() == per_token * 2 * 64


def test_hidden4096_parameters_by_hand() -> None:
    layer = 4 * 4096 * 4096 + 3 * 11008 * 4096 + 2 * 4096
    assert HIDDEN4096.expected_parameters() == 8 * layer + 4096 + 2 * 32000 * 4096 == 1_881_214_976
    assert (HIDDEN4096.num_heads, HIDDEN4096.batch, HIDDEN4096.sequence) == (32, 4, 2048)


def test_matmul_peak_counts_two_flops_per_multiply_add() -> None:
    peak = measure_matmul_peak(torch.device("cpu"), size=64, repeats=2, rounds=2, dtype=torch.float32)
    assert (peak.m, peak.n, peak.k, peak.dtype) == (64, 64, 64, "float32")
    assert peak.tflops > 0
    with pytest.raises(ValueError, match="size, repeats and rounds must be at least 1, got 0, 2, 2"):
        measure_matmul_peak(torch.device("cpu"), size=0, repeats=2, rounds=2)


def test_sizes_on_the_command_line() -> None:
    assert parse_args([]).size == "1b"
    assert parse_args(["--small"]).size == "small"
    args = parse_args(["--size", "hidden4096"])
    assert (args.size, args.small) == ("hidden4096", False)
    assert SIZES[args.size] is HIDDEN4096


def test_small_contradicting_size_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--small", "--size", "hidden4096"])
    assert "--small contradicts --size hidden4096" in capsys.readouterr().err


def test_unknown_only_name_lists_the_frameworks(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--only", "megaspec,no-such-peer"])
    names = ",".join(peer.name for peer in PEERS)
    expected = f"unknown framework(s) no-such-peer in --only; the frameworks are {names}"
    assert expected in capsys.readouterr().err


def test_profile_only_names_the_profiled_frameworks(capsys: pytest.CaptureFixture[str]) -> None:
    megaspec, megatron = (next(p for p in PEERS if p.name == name) for name in ("megaspec", "megatron"))
    args = parse_args(["--profile", "--profile-only", "megaspec"])
    assert profiled(megaspec, args) and not profiled(megatron, args)
    assert profiled(megatron, parse_args(["--profile"]))
    assert not profiled(megaspec, parse_args([]))
    with pytest.raises(SystemExit):
        parse_args(["--profile", "--profile-only", "nope"])
    assert "unknown framework(s) nope in --profile-only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--profile-only", "megaspec"])
    assert "--profile-only needs --profile" in capsys.readouterr().err


def test_all_runs_the_opt_in_peers() -> None:
    compiled = next(peer for peer in PEERS if peer.name == "hf-compile")
    assert skip_reason(compiled, parse_args([])) == "skipped (opt-in: --only)"
    assert skip_reason(compiled, parse_args(["--all"])) is None
    with pytest.raises(SystemExit):
        parse_args(["--all", "--only", "hf"])


def test_no_script_under_bench_shadows_a_package_the_peers_import() -> None:
    # `python bench/X.py` puts bench/ first on sys.path: a bench/peft.py once made HF + Liger's
    # `import peft` load it ("'peft' is not a package") and the peer did not run.
    bench = Path(__file__).resolve().parents[2] / "bench"
    names = {path.stem for path in bench.glob("*.py")} | {path.name for path in bench.iterdir() if path.is_dir()}
    imported = {"peft", "transformers", "liger_kernel", "megatron", "transformer_engine", "torch",
                "accelerate", "triton", "megaspec", "safetensors", "yaml", "numpy", "tqdm"}  # fmt: skip
    assert names & imported == set()
