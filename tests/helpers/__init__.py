"""Code several test modules share, imported as ``tests.helpers.<module>``.

- ``distributed``: ``run_on_ranks``, a function on spawned gloo (or NCCL) processes.
- ``reference_llama``: a Llama layer in plain float64 torch ops, from a layer's own weights.
- ``layers``: small configs and builders for the tests of ``megaspec.layers``.
- ``presets``: what the packaged presets hold, as saved config data.
- ``hf_models``: tiny random transformers models of each family the checkpoint converters support.
"""
