"""ift: distributed instruction fine-tuning of causal language models on DeepSpeed ZeRO."""

__version__ = "0.1.0"
