"""The main job: train a small Llama-style byte-level model on the bundled text, on one process or under torchrun.

A run is one :class:`~megaspec.config.RunConfig`: a packaged preset (``megaspec/data/
preset_<name>.yaml``: the model) under the user's YAML files and ``dotted.path=value``
overrides (:func:`resolve_run`); :class:`~megaspec.config.TrainingConfig`'s defaults are the
default run. :func:`train` builds ``run.model``, runs AdamW with linear warmup and cosine decay
(each weight's rate times its ``lr_scale``) over optionally accumulated micro-batches, clips
gradients, reports loss and tokens/s on a progress bar, measures validation loss periodically,
logs every step to ``metrics.jsonl`` and saves ``model.safetensors``, ``config.yaml`` (the
run's explicitly set fields) and ``progress.json``; :func:`load_trained_model` rebuilds the
model from them. It stops at a non-finite loss without saving, and after the current step on
SIGINT or SIGTERM, saving what it has. With ``training.checkpoint_interval`` it saves training
checkpoints, and ``train(resume_from=...)`` continues from one exactly. No
``torch.distributed`` setup is needed; under torchrun (``train(groups=...)``, see
:mod:`.distributed`) every rank runs the same loop, data and tensor parallel, with the same
checkpoints.

Reading order: :mod:`.setup` (presets, model, optimizer, schedule, loading), :mod:`.batches`
(the training and validation batches), :mod:`.loop` (the steps), :mod:`.checkpoints` (saving
and resuming), :mod:`.files` (the run directory), :mod:`.stopping` (early stops).
"""

from megaspec.training.files import (
    CONFIG_FILE,
    METRICS_FILE,
    PROGRESS_FILE,
    RUN_FILES,
    WEIGHTS_FILE,
    OutputDirectoryError,
    check_output_dir,
    save_trained_model,
)
from megaspec.training.loop import TrainResult, train, validation_loss
from megaspec.training.setup import (
    ADAM_BETAS,
    PRESETS,
    build_model,
    check_peft_base,
    configure_threads,
    learning_rate_at,
    load_trained_model,
    make_optimizer,
    preset_run,
    resolve_run,
    set_learning_rate,
)
from megaspec.training.stopping import NonFiniteLossError, stop_on_signals

__all__ = [
    "ADAM_BETAS",
    "CONFIG_FILE",
    "METRICS_FILE",
    "PRESETS",
    "PROGRESS_FILE",
    "RUN_FILES",
    "WEIGHTS_FILE",
    "NonFiniteLossError",
    "OutputDirectoryError",
    "TrainResult",
    "build_model",
    "check_output_dir",
    "check_peft_base",
    "configure_threads",
    "learning_rate_at",
    "load_trained_model",
    "make_optimizer",
    "preset_run",
    "resolve_run",
    "save_trained_model",
    "set_learning_rate",
    "stop_on_signals",
    "train",
    "validation_loss",
]
