"""Model and tokenizer: any `transformers` causal LM (local folder or hub id) or an inline
architecture with random init; the packed-sequence forward pass and the token-level loss."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ift.config import ModelConfig
from ift.distributed import accelerator_available, resolve_dtype
from ift.errors import UserError
from ift.rundir import RunDir

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # model.dtype (auto: resolve_dtype)
SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}


# --------------------------------------------------------------------------- tokenizer


def train_bpe_tokenizer(texts, vocab_size: int):
    """A byte-level BPE trained on the run's own text: the tokenizer of an inline (from-scratch)
    model, since nothing can be downloaded. Byte-level, so any later text still encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def corpus_texts(tasks, limit_per_task: int = 2000):
    """Text to train a tokenizer on: instructions once per task, inputs and outputs of examples."""
    for task in tasks:
        ds = task.dataset.select(range(min(len(task.dataset), limit_per_task)))
        yield from sorted(set(ds["instruction"]))
        for inp, out in zip(ds["input"], ds["output"]):
            yield f"Input: {inp}\nOutput: {out}"


def open_tokenizer(source: str, trust_remote_code: bool = False):
    """A tokenizer folder or hub id, with a pad token: causal LMs often ship without one, and the
    padding is masked out anyway, so EOS serves. Every tokenizer ift loads comes through here."""
    from transformers import AutoTokenizer

    return with_pad_token(AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code))


def with_pad_token(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_tokenizer(cfg: ModelConfig, run_dir: str | None = None, tasks=None):
    """The run's tokenizer: the one saved in the run directory (a resume), else model.tokenizer or
    model.name_or_path, else a BPE trained on the tasks for an inline model."""
    saved = RunDir(run_dir).tokenizer if run_dir else None
    source = (
        saved
        if saved and os.path.isfile(os.path.join(saved, "tokenizer_config.json"))
        else (cfg.tokenizer or cfg.name_or_path)
    )
    if source:
        try:
            return open_tokenizer(source, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.tokenizer: cannot load a tokenizer from '{source}': {e}") from None
    if cfg.config is None or tasks is None:
        raise UserError("model: set model.name_or_path, model.tokenizer, or an inline model.config")
    return train_bpe_tokenizer(corpus_texts(tasks), int(cfg.config.get("vocab_size", 1024)))


# --------------------------------------------------------------------------- model


_attn_logged: set[str] = set()


def resolve_attn_implementation(name: str, dtype: str) -> str:
    """model.attn_implementation=auto: flash-attention only when transformers says the flash_attn
    wheel imports and matches this torch/CUDA (is_flash_attn_2_available) and the weights are
    bf16/fp16 (its kernels take nothing else); sdpa otherwise. The choice is logged once. Every
    choice isolates the examples of a packed row (see hidden_states)."""
    if name != "auto":
        return name
    from transformers.utils import is_flash_attn_2_available

    flash = accelerator_available() and dtype in ("bf16", "fp16") and is_flash_attn_2_available()
    choice = "flash_attention_2" if flash else "sdpa"
    if choice not in _attn_logged:
        _attn_logged.add(choice)
        why = (
            f"flash-attention available, {dtype}"
            if flash
            else "no CUDA"
            if not accelerator_available()
            else f"dtype {dtype} (flash-attention takes bf16/fp16)"
            if dtype not in ("bf16", "fp16")
            else "flash_attn not installed or not matching this torch/CUDA"
        )
        log.info("model.attn_implementation=auto: %s (%s)", choice, why)
    return choice


def model_config(cfg: ModelConfig, tokenizer):
    from transformers import AutoConfig

    if cfg.config is not None:
        spec = dict(cfg.config)
        model_type = spec.pop("model_type", "llama")
        spec.setdefault("vocab_size", len(tokenizer))
        spec.setdefault("bos_token_id", tokenizer.bos_token_id)
        spec.setdefault("eos_token_id", tokenizer.eos_token_id)
        spec.setdefault("pad_token_id", tokenizer.pad_token_id)
        try:
            config = AutoConfig.for_model(model_type, **spec)
        except (ValueError, TypeError) as e:
            raise UserError(f"model.config: {e}") from None
        if config.vocab_size < len(tokenizer):
            raise UserError(f"model.config.vocab_size={config.vocab_size} < tokenizer size {len(tokenizer)}")
    else:
        try:
            config = AutoConfig.from_pretrained(str(cfg.name_or_path), trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.name_or_path: cannot load '{cfg.name_or_path}': {e}") from None
    config._attn_implementation = resolve_attn_implementation(cfg.attn_implementation, resolve_dtype(cfg.dtype))
    return config


def build_model(cfg: ModelConfig, tokenizer, ds_config: dict | None = None, seed: int = 0):
    """The Hugging Face causal LM. Under ZeRO-3 an `HfDeepSpeedConfig` is alive while it is built,
    so transformers itself wraps construction (from_config) or loading (from_pretrained) in
    `deepspeed.zero.Init` after it has imported the model's module: no rank ever holds the whole
    model, and no import runs while zero.Init patches tensor construction."""
    from transformers import AutoModelForCausalLM

    config = model_config(cfg, tokenizer)
    dtype = DTYPES[resolve_dtype(cfg.dtype)]
    zero3 = (ds_config or {}).get("zero_optimization", {}).get("stage") == 3
    dschf = None
    if zero3:
        from transformers.integrations import HfDeepSpeedConfig

        dschf = HfDeepSpeedConfig(ds_config)  # noqa: F841 - must stay alive while building
    torch.manual_seed(seed)
    if cfg.name_or_path:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name_or_path, config=config, dtype=dtype, trust_remote_code=cfg.trust_remote_code
        )
    else:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if zero3 and not hasattr(next(model.parameters()), "ds_id"):
        raise RuntimeError("ZeRO-3: transformers did not build the model under deepspeed.zero.Init")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    del dschf
    return model


def count_parameters(model) -> int:
    # ZeRO-3 partitions parameters; ds_numel is the full size.
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


# --------------------------------------------------------------------------- forward and loss


def hidden_states(lm, batch: dict) -> torch.Tensor:
    """Final hidden states [batch, seq, hidden] of the base model (before the output projection).
    A packed row carries no attention_mask: transformers' masking utilities (sdpa, eager, flex)
    derive its block-diagonal causal mask from position_ids, which restart at 0 for every example
    (transformers >= 4.53.1, with use_cache=False). Flash-attention's varlen kernel takes the
    micro-batch as one row with the sequence boundaries collated on the host (cu_seq_lens), so
    it neither needs batch size 1 nor reads position_ids back from the device in every layer.
    A padded (unpacked) batch carries its attention_mask. A sequence-parallel slice carries the
    boundaries of its whole rows to the attention (ift.sequence_parallel)."""
    kwargs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    base = getattr(lm, lm.base_model_prefix)
    if "sp_cu_seq_lens" in batch:  # a slice of each row (sequence parallelism): the attention sees whole rows
        kwargs.update({k: batch[k] for k in ("sp_cu_seq_lens", "sp_max_length", "sp_one_sequence")})
    elif "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
    elif lm.config._attn_implementation == "flash_attention_2" and "cu_seq_lens" in batch:
        shape = batch["input_ids"].shape
        kwargs = {
            "input_ids": batch["input_ids"].view(1, -1),
            "position_ids": batch["position_ids"].view(1, -1),
            "use_cache": False,
            "cu_seq_lens_q": batch["cu_seq_lens"],
            "cu_seq_lens_k": batch["cu_seq_lens"],
            "max_length_q": batch["max_length"],
            "max_length_k": batch["max_length"],
        }
        return base(**kwargs).last_hidden_state.view(*shape, -1)
    return base(**kwargs).last_hidden_state


def _logits(lm, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The output projection in fp32, with the logit transforms some architectures apply."""
    logits = F.linear(hidden, weight).float()
    c = lm.config
    if getattr(c, "logit_scale", None):  # Cohere
        logits = logits * c.logit_scale
    if getattr(c, "logits_scaling", None):  # Granite
        logits = logits / c.logits_scaling
    if getattr(c, "final_logit_softcapping", None):  # Gemma 2/3
        logits = torch.tanh(logits / c.final_logit_softcapping) * c.final_logit_softcapping
    return logits


def target_losses(lm, batch: dict, chunk: int = 1024) -> torch.Tensor:
    """Cross-entropy (fp32) of each target token, in the order of batch["target_index"] (flat
    positions whose label is not ignored). Labels are already shifted inside each example
    (ift.data.packing). Only target positions reach the output projection, `chunk` at a time,
    and each chunk's logits are recomputed in backward instead of kept: the loss's peak memory is
    one chunk of logits, not [batch, seq, vocab]. target_index comes from the host, so selecting
    the targets needs no device synchronization."""
    head = lm.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise UserError(f"{type(lm).__name__}: an output projection with a bias is not supported")
    hidden = hidden_states(lm, batch).flatten(0, 1).index_select(0, batch["target_index"])
    targets = batch["labels"].flatten().index_select(0, batch["target_index"])
    out = []
    for at in range(0, max(len(targets), 1), chunk):  # one (maybe empty) chunk keeps the weight in the graph
        h, y = hidden[at : at + chunk], targets[at : at + chunk]
        if torch.is_grad_enabled():
            out.append(checkpoint(_chunk_loss, lm, h, head.weight, y, use_reentrant=False))
        else:
            out.append(_chunk_loss(lm, h, head.weight, y))
    return torch.cat(out)


def _chunk_loss(lm, hidden, weight, targets):
    return F.cross_entropy(_logits(lm, hidden, weight), targets, reduction="none")


def token_losses(lm, batch: dict, chunk: int = 1024) -> torch.Tensor:
    """Per-token losses [batch, seq] (0 where labels are ignored): target_losses scattered back."""
    losses = target_losses(lm, batch, chunk)
    flat = torch.zeros(batch["labels"].numel(), dtype=losses.dtype, device=losses.device)
    return flat.index_put((batch["target_index"],), losses).view_as(batch["labels"])


class CausalLMLoss(torch.nn.Module):
    """What DeepSpeed trains: the causal LM whose forward returns per-target losses. The output
    projection is called as a function of its weight, in chunks; under ZeRO-3 that weight is
    registered as an external parameter of this module, so DeepSpeed gathers it for this forward
    and its backward (and reduces its gradient) like any parameter used inside a module."""

    def __init__(self, lm, loss_chunk: int = 1024):
        super().__init__()
        self.lm, self.loss_chunk = lm, loss_chunk
        weight = lm.get_output_embeddings().weight
        if hasattr(weight, "ds_id"):
            import deepspeed

            deepspeed.zero.register_external_parameter(self, weight)

    @property
    def config(self):
        return self.lm.config

    def forward(self, **batch) -> torch.Tensor:
        return target_losses(self.lm, batch, self.loss_chunk)
