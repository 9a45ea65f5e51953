"""Model FLOPs and MFU, counted as PaLM (appendix B) and torchtitan (`get_num_flop_per_token`) do,
for what ift computes: packed rows attend within their documents, and the output projection runs
on target tokens only (ift.model.target_losses).

Per optimizer step (forward + backward = 3 x forward, 2 FLOPs per multiply-add):
    6 * (N - embeddings) * tokens                       every weight matrix but the embeddings
  + 12 * layers * hidden * sum(document_length ** 2)    QK^T and AV: each token attends to its whole
                                                        document (PaLM's T per token, not halved
                                                        for the causal mask, as the anchors count)
  + 6 * vocab * hidden * target_tokens                  the output projection, targets only
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense bf16/fp16 TFLOP/s per GPU, from the vendors' data sheets (without sparsity).
PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))


def peak_tflops(device_name: str) -> float | None:
    """The peak of a GPU from its name (torch.cuda.get_device_name), None when unknown. An H100
    that is not a PCIe card (SXM, "HBM3" in its name) counts as SXM."""
    for key, value in PEAK_TFLOPS:
        if all(part in device_name for part in key.split()):
            return value
    return None


def device_peak_tflops(device) -> float | None:
    """Peak dense TFLOP/s of a CUDA device (a torch.device) from its name; None on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    import torch

    return peak_tflops(torch.cuda.get_device_name(device))


@dataclass(frozen=True)
class FlopCounter:
    non_embedding_params: int
    layers: int
    hidden: int
    vocab: int

    def step_flops(self, tokens: int, attention_sq: int, target_tokens: int) -> float:
        """Model FLOPs of `tokens` real (non-padding) tokens whose documents' squared lengths sum to
        `attention_sq`, `target_tokens` of which reach the output projection."""
        return (
            6.0 * self.non_embedding_params * tokens
            + 12.0 * self.layers * self.hidden * attention_sq
            + 6.0 * self.vocab * self.hidden * target_tokens
        )


def flop_counter(lm) -> FlopCounter:
    """From a Hugging Face causal LM (ZeRO-3 partitioned or not): its parameter count without the
    input embedding and the output projection (once if tied), and its shape."""

    def numel(p):
        return getattr(p, "ds_numel", p.numel())  # ZeRO-3 partitions parameters; ds_numel is the full size

    embeddings = {id(p): numel(p) for p in (lm.get_input_embeddings().weight, lm.get_output_embeddings().weight)}
    total = sum(numel(p) for p in lm.parameters())
    c = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    return FlopCounter(total - sum(embeddings.values()), c.num_hidden_layers, c.hidden_size, c.vocab_size)
