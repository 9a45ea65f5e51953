"""Export a ZeRO checkpoint to a plain Hugging Face folder (safetensors, config, tokenizer,
generation config), consolidated with DeepSpeed's own zero_to_fp32 utilities."""

from __future__ import annotations

import logging
import os

import torch

from ift import rundir
from ift.atomic import replacing
from ift.errors import UserError

log = logging.getLogger(__name__)


def load_consolidated(ckpt: str, dtype: torch.dtype | None = None):
    """(model, tokenizer) rebuilt from a checkpoint: the architecture from the run's config, the
    weights gathered from every ZeRO shard."""
    from ift.distributed import select_accelerator

    select_accelerator()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    from ift.config import load_config
    from ift.model import model_config, open_tokenizer

    run = rundir.of_checkpoint(ckpt)
    cfg = load_config(run.config)
    tokenizer = open_tokenizer(run.tokenizer)
    config = model_config(cfg.model, tokenizer)
    # Built on CPU, not on the meta device: buffers that checkpoints do not hold (rotary inv_freq)
    # must come out initialized.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = get_fp32_state_dict_from_zero_checkpoint(os.path.dirname(ckpt), tag=os.path.basename(ckpt))
    # DeepSpeed trained ift.model.CausalLMLoss, which holds the causal LM as `lm`
    state = {k.removeprefix("module.").removeprefix("lm."): v for k, v in state.items()}
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (getattr(config, "tie_word_embeddings", False) and k == "lm_head.weight")]
    if missing or unexpected:
        raise UserError(
            f"{ckpt}: consolidated weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(dtype or torch.float32)
    model.eval()
    return model, tokenizer


def export_checkpoint(source: str, out_dir: str, dtype: str = "auto") -> str:
    """Write a Hugging Face folder that `AutoModelForCausalLM.from_pretrained(out_dir)` loads, in
    `dtype` (auto: the precision the run trained in, e.g. bf16; fp32, bf16, fp16)."""
    _, ckpt = rundir.resolve(source)
    return write_hf_folder(ckpt, out_dir, dtype)


def write_hf_folder(ckpt: str, out_dir: str, dtype: str = "auto") -> str:
    """export_checkpoint of a checkpoint already resolved and verified, in this process alone (no
    collective: rank 0 exports while the others wait)."""
    from transformers import GenerationConfig

    from ift.config import load_config
    from ift.model import DTYPES, resolve_dtype

    run = rundir.of_checkpoint(ckpt)
    if dtype == "auto":
        dtype = resolve_dtype(load_config(run.config).model.dtype)  # the saved config says what ran
    model, tokenizer = load_consolidated(ckpt, DTYPES[dtype])
    with replacing(out_dir.rstrip("/")) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(tmp)
    log.info("exported %s -> %s (%s)", ckpt, out_dir, dtype)
    return out_dir
