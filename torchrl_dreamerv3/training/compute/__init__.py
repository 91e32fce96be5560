"""Compute: data parallelism under torchrun (``distributed``, ``collectives``) and bf16/compile/TF32
(``settings`` decides them, ``acceleration`` applies them)."""
