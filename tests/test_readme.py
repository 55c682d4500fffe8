"""The README's spec example runs as written, its torchrun script is the tested one, and its
recompute and sdpa_backend YAML resolves to what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

from megaspec.config import ModelConfig, resolve

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_spec_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    namespace: dict[str, object] = {}
    torch.manual_seed(0)  # the example draws its weights and tokens from the global generator
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    loss = namespace["loss"]
    assert isinstance(loss, torch.Tensor)
    # A fresh model predicts roughly uniformly over the 32000-token vocabulary.
    assert abs(loss.item() - torch.log(torch.tensor(32000.0)).item()) < 0.1


def test_readme_tensor_parallel_script_is_the_example_file() -> None:
    # examples/tensor_parallel.py runs under torchrun in tests/models/test_torchrun.py.
    example = (README.parent / "examples" / "tensor_parallel.py").read_text()
    code = example[example.index("from __future__ import annotations"):]
    assert f"```python\n{code}```" in README.read_text()


def test_readme_recompute_and_sdpa_backend_yaml_resolves() -> None:
    text = README.read_text()
    section = text[text.index("### Recomputation and the attention kernel"):]
    block = re.findall(r"```yaml\n(.*?)```", section, re.S)[0]
    model = resolve(ModelConfig, overrides=[yaml.safe_load(block)["model"]])
    assert model.transformer_config().recompute == ("pre_mlp_norm", "mlp")
    assert model.transformer_config().fuse_elementwise
    built = model.build()
    assert "sdpa_backend=cudnn" in repr(built)
