"""The main job: train a small Llama-style byte-level model on the bundled text, on one process.

``train(TrainSettings())`` builds the model, runs AdamW with linear warmup and cosine decay,
clips gradients, reports loss and tokens/s on a progress bar, measures validation loss
periodically and saves ``model.safetensors`` and ``config.json``; :func:`load_trained_model`
rebuilds the model from them. No ``torch.distributed`` setup is needed (tensor-parallel size 1).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import safetensors.torch
import torch
from torch import Tensor

# tqdm ships neither inline types nor py.typed; its stubs (types-tqdm) are not a dependency.
from tqdm import tqdm

from megaspec.backends import torch as torch_backend
from megaspec.data import ByteTokenizer, WindowSampler, load_corpus, train_validation_split
from megaspec.models import GPTModel
from megaspec.transformer_config import AttentionConfig, MlpConfig, TransformerConfig

WEIGHTS_FILE: Final = "model.safetensors"
CONFIG_FILE: Final = "config.json"
CONFIG_FORMAT: Final = "megaspec-train/1"


@dataclass(frozen=True)
class ModelSettings:
    """The shape of the trained model: a Llama-style stack (RMSNorm, RoPE, GQA, SwiGLU MLP).

    Everything needed to rebuild the model from ``config.json``; the layer configs validate
    the values when :func:`build_model` runs.
    """

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 6
    num_query_groups: int = 2
    ffn_hidden_size: int = 512
    rotary_base: float = 10000.0
    vocab_size: int = ByteTokenizer.vocab_size

    @staticmethod
    def from_dict(values: dict[str, Any]) -> ModelSettings:
        """Settings from a mapping such as the ``"model"`` entry of ``config.json``.

        Raises:
            ValueError: if ``values`` has keys that are not fields of this class.
        """
        known = {item.name for item in fields(ModelSettings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"ModelSettings: unknown fields {unknown}; expected some of {sorted(known)}"
            )
        return ModelSettings(**values)


MODEL_PRESETS: Final[dict[str, ModelSettings]] = {
    # ~1.9M parameters: the default run's size (about two minutes on two CPU cores).
    "small": ModelSettings(),
    # ~0.1M parameters: for tests and smoke runs.
    "tiny": ModelSettings(
        hidden_size=64, num_layers=2, num_heads=4, num_query_groups=2, ffn_hidden_size=128
    ),
}


@dataclass(frozen=True)
class TrainSettings:
    """Everything one training run depends on. Validated on construction.

    Attributes:
        model: the model's shape.
        steps: optimizer updates.
        batch_size, seq_length: each step trains on ``batch_size x seq_length`` tokens.
        learning_rate: peak AdamW learning rate, reached after ``warmup_steps`` linear steps;
            a cosine then decays it to ``min_learning_rate`` at the last step.
        weight_decay: AdamW decoupled weight decay of matrices (norm weights get none).
        grad_clip: maximum global gradient norm.
        validation_fraction: tail of the corpus held out for validation loss.
        eval_interval, eval_batches: validation runs every ``eval_interval`` steps and at the
            end, on the same ``eval_batches`` batches each time.
        seed: seeds weights, training batches and validation batches.
        device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
        output_dir: where to save the model; ``None`` saves nothing.
        progress: show a tqdm progress bar.
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    steps: int = 250
    batch_size: int = 32
    seq_length: int = 128
    learning_rate: float = 3e-3
    min_learning_rate: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    validation_fraction: float = 0.05
    eval_interval: int = 50
    eval_batches: int = 8
    seed: int = 0
    device: str = "cpu"
    output_dir: Path | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "seq_length", "eval_interval", "eval_batches",
                    "learning_rate", "grad_clip")  # fmt: skip
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ValueError(f"TrainSettings.{name} must be positive, got {value}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise ValueError(
                f"TrainSettings.min_learning_rate must lie in [0, learning_rate "
                f"{self.learning_rate}], got {self.min_learning_rate}"
            )
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError(
                f"TrainSettings.warmup_steps and weight_decay must be >= 0, got "
                f"{self.warmup_steps} and {self.weight_decay}"
            )
        try:
            torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"TrainSettings.device: {error}") from error


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        model: the trained model (on the settings' device, in train mode).
        losses: training loss of every step, in order.
        validation_losses: ``(steps done, validation loss)`` pairs, in order.
        tokens_per_second: training tokens per second of step time (validation excluded).
        seconds: wall time of the whole run, validation and saving included.
    """

    model: GPTModel
    losses: tuple[float, ...]
    validation_losses: tuple[tuple[int, float], ...]
    tokens_per_second: float
    seconds: float


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested``, capped at the cores this process may use.

    Torch's default counts the machine's cores, which oversubscribes a container or a CPU
    affinity mask that allows fewer; returns the number set.

    Raises:
        ValueError: if ``requested`` is not positive.
    """
    if requested is not None and requested <= 0:
        raise ValueError(f"threads must be positive, got {requested}")
    if hasattr(os, "sched_getaffinity"):  # Linux: the affinity mask, not the machine
        available = len(os.sched_getaffinity(0))
    else:
        available = os.cpu_count() or 1
    threads = available if requested is None else min(requested, available)
    torch.set_num_threads(threads)
    return threads


def build_model(settings: ModelSettings, *, seed: int = 0) -> GPTModel:
    """A freshly initialised :class:`GPTModel` of ``settings`` on the CPU, weights from ``seed``.

    The global RNG state is left as it was.

    Raises:
        ValueError: for inconsistent settings (e.g. heads not dividing the hidden size).
    """
    config = TransformerConfig(hidden_size=settings.hidden_size, num_layers=settings.num_layers)
    attention = AttentionConfig(
        num_heads=settings.num_heads,
        num_query_groups=settings.num_query_groups,
        rotary_base=settings.rotary_base,
    )
    mlp = MlpConfig(ffn_hidden_size=settings.ffn_hidden_size)
    submodules = torch_backend.llama_submodules(attention, mlp, settings.num_layers)
    with torch.random.fork_rng(devices=[]):
        # GPTModel draws its weights from the default CPU generator.
        torch.manual_seed(seed)
        return GPTModel(config=config, vocab_size=settings.vocab_size, submodules=submodules)


def learning_rate_at(step: int, settings: TrainSettings) -> float:
    """The learning rate of update ``step`` (0-based): linear warmup, then cosine decay."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    decay_steps = max(1, settings.steps - 1 - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / decay_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    span = settings.learning_rate - settings.min_learning_rate
    return settings.min_learning_rate + span * cosine


def make_optimizer(model: GPTModel, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: decaying norm gains towards 0 only hurts."""
    matrices = [parameter for parameter in model.parameters() if parameter.dim() >= 2]
    vectors = [parameter for parameter in model.parameters() if parameter.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": matrices, "weight_decay": settings.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ],
        lr=settings.learning_rate,
        betas=(0.9, 0.95),
    )


def train(settings: TrainSettings) -> TrainResult:
    """Train a model per ``settings`` on the bundled corpus; save it if ``output_dir`` is set.

    Deterministic for a given seed, device and thread count.

    Raises:
        ValueError: for settings the model or the corpus cannot satisfy (e.g. a sequence
            longer than the validation split).
    """
    started = perf_counter()
    device = torch.device(settings.device)
    tokens = ByteTokenizer().encode_tensor(load_corpus())
    train_windows, validation_windows = train_validation_split(
        tokens, settings.validation_fraction
    )
    model = build_model(settings.model, seed=settings.seed).to(device)
    model.train()
    optimizer = make_optimizer(model, settings)
    generator = torch.Generator().manual_seed(settings.seed)
    tokens_per_step = settings.batch_size * settings.seq_length
    losses: list[float] = []
    validation: list[tuple[int, float]] = []
    step_seconds = 0.0
    bar = tqdm(range(settings.steps), desc="train", unit="step", disable=not settings.progress)
    for step in bar:
        step_started = perf_counter()
        inputs, labels = train_windows.sample(
            batch_size=settings.batch_size, seq_length=settings.seq_length, generator=generator
        )
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, settings)
        loss = _training_step(model, optimizer, inputs.to(device), labels.to(device), settings)
        losses.append(loss)
        step_seconds += perf_counter() - step_started
        if (step + 1) % settings.eval_interval == 0 or step + 1 == settings.steps:
            validation.append((step + 1, validation_loss(model, validation_windows, settings)))
        tokens_per_second = tokens_per_step * (step + 1) / step_seconds
        postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tokens_per_second:,.0f}"}
        if validation:
            postfix["val"] = f"{validation[-1][1]:.3f}"
        bar.set_postfix(postfix, refresh=False)
    bar.close()
    if settings.output_dir is not None:
        save_trained_model(model, settings, settings.output_dir)
    return TrainResult(
        model=model,
        losses=tuple(losses),
        validation_losses=tuple(validation),
        tokens_per_second=tokens_per_step * settings.steps / step_seconds,
        seconds=perf_counter() - started,
    )


def _training_step(
    model: GPTModel,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    labels: Tensor,
    settings: TrainSettings,
) -> float:
    losses: Tensor = model(inputs, labels=labels)  # [batch, seq] float32
    loss = losses.mean()
    optimizer.zero_grad(set_to_none=True)
    # torch.autograd.backward is typed; Tensor.backward is not.
    torch.autograd.backward(loss)
    torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    optimizer.step()
    return float(loss.item())


@torch.no_grad()
def validation_loss(model: GPTModel, windows: WindowSampler, settings: TrainSettings) -> float:
    """Mean loss over ``settings.eval_batches`` batches of ``windows``.

    The batches come from a generator seeded with ``settings.seed + 1`` on every call, so
    successive validation losses of one run are measured on the same text. The model's
    train/eval mode is restored afterwards.
    """
    generator = torch.Generator().manual_seed(settings.seed + 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(settings.eval_batches):
        inputs, labels = windows.sample(
            batch_size=settings.batch_size, seq_length=settings.seq_length, generator=generator
        )
        losses: Tensor = model(inputs.to(device), labels=labels.to(device))
        total += float(losses.mean().item())
    model.train(was_training)
    return total / settings.eval_batches


def save_trained_model(model: GPTModel, settings: TrainSettings, directory: Path) -> None:
    """Write ``model.safetensors`` and ``config.json`` (model shape, tokenizer, run settings).

    ``directory`` and its parents are created; existing files are overwritten.
    """
    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(model, str(directory / WEIGHTS_FILE))
    training = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in asdict(settings).items()
        if key != "model"
    }
    config = {
        "format": CONFIG_FORMAT,
        "tokenizer": "byte",
        "model": asdict(settings.model),
        "training": training,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def load_trained_model(
    directory: Path, *, device: str = "cpu"
) -> tuple[GPTModel, ModelSettings]:
    """Rebuild the model saved by :func:`save_trained_model` in ``directory``; eval mode.

    Raises:
        FileNotFoundError: if ``config.json`` or ``model.safetensors`` is missing.
        ValueError: if ``config.json`` is not of this format.
        RuntimeError: if the weights do not match the model the config describes.
    """
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("format") != CONFIG_FORMAT:
        raise ValueError(
            f"{directory / CONFIG_FILE}: format {config.get('format')!r}, "
            f"expected {CONFIG_FORMAT!r}"
        )
    settings = ModelSettings.from_dict(config["model"])
    model = build_model(settings).to(device)
    safetensors.torch.load_model(model, str(directory / WEIGHTS_FILE), strict=True, device=device)
    model.eval()
    return model, settings
