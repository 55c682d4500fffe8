"""What the packaged presets hold, as the data a saved ``config.yaml`` records."""

from __future__ import annotations

TINY_MODEL_DATA = {
    "hidden_size": 64,
    "vocab_size": 256,
    "decoder": {
        "type": "repeat",
        "block": {
            "mixer": {"type": "attention", "num_heads": 4, "num_query_groups": 2,
                      "rotary_base": 10000.0},
            "mlp": {"type": "mlp", "ffn_hidden_size": 128, "activation": "silu", "gated": True},
            "norm": {"type": "rms_norm"},
        },
        "num_blocks": 2,
    },
}  # fmt: skip
"""The tiny preset's model: the explicit fields of ``preset_run("tiny")``."""

# The tiny preset's block slots on the Transformer Engine backend (te_* slot types), same shapes.
TE_SLOT_OVERRIDES = [
    "model.decoder.block.mixer={type: te_attention, num_heads: 4, num_query_groups: 2}",
    "model.decoder.block.mlp={type: te_mlp, ffn_hidden_size: 128}",
    "model.decoder.block.norm={type: te_rms_norm}",
]
