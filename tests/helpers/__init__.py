"""Code the tests share: the spawned-process harness and the float64 Llama-layer reference."""
