"""Model and tokenizer: any `transformers` causal LM (local folder or hub id) or an inline
architecture with random init; the packed-sequence forward pass and the token-level loss."""
from __future__ import annotations

import contextlib
import logging
import os

import torch
import torch.nn.functional as F

from ift.config import ModelConfig, UserError

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
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
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


def corpus_texts(tasks, limit_per_task: int = 2000):
    """Text to train a tokenizer on: instructions once per task, inputs and outputs of examples."""
    for task in tasks:
        ds = task.dataset.select(range(min(len(task.dataset), limit_per_task)))
        yield from sorted(set(ds["instruction"]))
        for inp, out in zip(ds["input"], ds["output"]):
            yield f"Input: {inp}\nOutput: {out}"


def load_tokenizer(cfg: ModelConfig, run_dir: str | None = None, tasks=None):
    """The run's tokenizer: the one saved in the run directory (a resume), else model.tokenizer or
    model.name_or_path, else a BPE trained on the tasks for an inline model."""
    from transformers import AutoTokenizer

    saved = os.path.join(run_dir, "tokenizer") if run_dir else None
    source = saved if saved and os.path.isfile(os.path.join(saved, "tokenizer_config.json")) else (cfg.tokenizer or cfg.name_or_path)
    if source:
        try:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.tokenizer: cannot load a tokenizer from '{source}': {e}") from None
    else:
        if cfg.config is None or tasks is None:
            raise UserError("model: set model.name_or_path, model.tokenizer, or an inline model.config")
        tok = train_bpe_tokenizer(corpus_texts(tasks), int(cfg.config.get("vocab_size", 1024)))
    if tok.pad_token is None:  # causal LMs often ship without one; padding is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


# --------------------------------------------------------------------------- model


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
            config = AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise UserError(f"model.name_or_path: cannot load '{cfg.name_or_path}': {e}") from None
    config._attn_implementation = cfg.attn_implementation
    return config


def build_model(cfg: ModelConfig, tokenizer, ds_config: dict | None = None, seed: int = 0):
    """Under ZeRO-3 the model is built inside `deepspeed.zero.Init` (from_config) or with an
    `HfDeepSpeedConfig` alive (from_pretrained), so no rank ever holds the whole model."""
    from transformers import AutoModelForCausalLM

    config = model_config(cfg, tokenizer)
    dtype = DTYPES[cfg.dtype]
    zero3 = bool(ds_config) and ds_config.get("zero_optimization", {}).get("stage") == 3
    dschf = None
    if zero3:
        from transformers.integrations import HfDeepSpeedConfig

        dschf = HfDeepSpeedConfig(ds_config)  # noqa: F841 - must stay alive while loading
    torch.manual_seed(seed)
    if cfg.name_or_path:
        model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, config=config, dtype=dtype,
                                                     trust_remote_code=cfg.trust_remote_code)
    else:
        init = contextlib.nullcontext()
        if zero3:
            import deepspeed

            init = deepspeed.zero.Init(config_dict_or_path=ds_config)
        with init:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    del dschf
    return model


def count_parameters(model) -> int:
    # ZeRO-3 partitions parameters; ds_numel is the full size.
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


# --------------------------------------------------------------------------- forward and loss


def packed_attention_mask(position_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [batch, 1, q, k] mask: causal and block-diagonal over the examples of a packed row
    (an example starts wherever position_ids returns to 0). sdpa and eager both take it."""
    segment = torch.cumsum(position_ids == 0, dim=1)
    same = segment[:, :, None] == segment[:, None, :]
    causal = torch.ones(position_ids.shape[1], position_ids.shape[1], dtype=torch.bool, device=position_ids.device).tril()
    allowed = same & causal
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def forward_logits(model, batch: dict) -> torch.Tensor:
    kwargs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    if "attention_mask" in batch:  # padded (unpacked) batch
        kwargs["attention_mask"] = batch["attention_mask"]
    elif getattr(getattr(model, "module", model).config, "_attn_implementation", "sdpa") != "flash_attention_2":
        # flash-attention varlen reads example boundaries from position_ids; sdpa/eager need the mask
        kwargs["attention_mask"] = packed_attention_mask(batch["position_ids"], next(model.parameters()).dtype)
    return model(**kwargs).logits


def token_losses(model, batch: dict) -> torch.Tensor:
    """Cross-entropy per token (0 where labels are ignored), in fp32. Labels are already shifted
    inside each example (ift.data.packing), so no shift here."""
    logits = forward_logits(model, batch)
    return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                           reduction="none").view_as(batch["labels"])
