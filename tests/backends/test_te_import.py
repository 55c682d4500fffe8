"""The te backend without Transformer Engine (as on this CPU CI): clear errors, no imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from megaspec.backends.fp8 import Fp8Config, fp8_autocast
from megaspec.schema import ConfigError
from megaspec.training import build_model, resolve_run, train
from tests.helpers.presets import TE_SLOT_OVERRIDES as TE_SLOTS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is not None,
    reason="Transformer Engine is installed here; these tests are about its absence",
)

MISSING = (
    "megaspec's Transformer Engine backend needs transformer_engine.pytorch, which could not "
    "be imported (ModuleNotFoundError: No module named 'transformer_engine'); install it with "
    "`pip install 'megaspec[te]'` (the `te` extra: transformer-engine[pytorch]==2.20.2, needs "
    "CUDA), or use megaspec.backends.torch"
)


def test_importing_the_te_backend_names_the_extra() -> None:
    with pytest.raises(ImportError) as caught:
        import megaspec.backends.te  # noqa: F401
    assert type(caught.value).__name__ == "TransformerEngineNotInstalled"
    assert str(caught.value) == MISSING


def test_megaspec_never_imports_transformer_engine() -> None:
    # A fresh interpreter: the public API and the TE-free backend modules load without it.
    code = (
        "import sys, megaspec, megaspec.backends.torch, megaspec.backends.fp8, "
        "megaspec.backends.portable, megaspec.layers\n"
        "print(sorted(m for m in sys.modules if m.startswith('transformer_engine')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_fp8_autocast_needs_transformer_engine() -> None:
    with pytest.raises(ImportError, match="pip install 'megaspec\\[te\\]'"):
        with fp8_autocast(Fp8Config(recipe="current")):
            pass


def test_fp8_autocast_without_config_is_a_plain_block() -> None:
    with fp8_autocast(None):
        value = torch.ones(2) * 2
    assert value.tolist() == [2.0, 2.0]


def test_fp8_config_checks_its_recipe() -> None:
    with pytest.raises(ConfigError) as caught:
        Fp8Config(recipe="tensorwise")  # type: ignore[arg-type]  # the wrong value on purpose
    assert str(caught.value) == "Fp8Config.recipe: must be one of delayed, current, got 'tensorwise'"


def test_te_slot_types_resolve_but_build_only_with_transformer_engine() -> None:
    run = resolve_run(preset="tiny", overrides=TE_SLOTS)
    assert run.model.decoder.block.mixer.type_name == "te_attention"
    with pytest.raises(ImportError) as caught:
        build_model(run)
    assert str(caught.value) == MISSING


def test_fp8_training_needs_te_slots() -> None:
    run = resolve_run(preset="tiny", overrides=["training.steps=1", "training.fp8={recipe: current}"])
    assert run.training.fp8 == Fp8Config(recipe="current")
    with pytest.raises(ConfigError) as caught:
        train(run, progress=False, save_model=False)
    assert str(caught.value) == (
        "training.fp8: the model has no Transformer Engine module, so FP8 would change nothing; "
        "use te slot types (mixer: {type: te_attention}, mlp: {type: te_mlp}) or drop fp8"
    )
