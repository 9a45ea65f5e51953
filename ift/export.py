"""Export a ZeRO checkpoint to a plain Hugging Face folder (safetensors, config, tokenizer,
generation config), consolidated with DeepSpeed's own zero_to_fp32 utilities."""
from __future__ import annotations

import logging
import os
import shutil

import torch

from ift import checkpoint
from ift.config import UserError

log = logging.getLogger(__name__)


def resolve_checkpoint(path: str, verify: str = "full") -> str:
    """A run directory (its newest valid checkpoint; damaged newer ones are set aside) or a
    checkpoint folder (which must pass verification against its manifest)."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        found = checkpoint.newest_valid(os.path.join(path, "checkpoints"), verify)
        if not found:
            raise UserError(f"{path}: no valid complete checkpoint in {path}/checkpoints")
        return found
    if not os.path.exists(os.path.join(path, checkpoint.DONE_FILE)):
        raise UserError(f"{path}: not a run directory or a complete checkpoint")
    problems = checkpoint.verify_checkpoint(path, verify)
    if problems:
        raise UserError(f"{path}: damaged checkpoint: {problems[0]}")
    return path


def run_dir_of(ckpt: str) -> str:
    return os.path.dirname(os.path.dirname(ckpt.rstrip("/")))


def load_consolidated(ckpt: str, dtype: torch.dtype | None = None):
    """(model, tokenizer) rebuilt from a checkpoint: the architecture from the run's config, the
    weights gathered from every ZeRO shard."""
    from ift.engine import select_accelerator

    select_accelerator()
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ift.config import load_config
    from ift.model import model_config

    run_dir = run_dir_of(ckpt)
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(run_dir, "tokenizer"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
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
        raise UserError(f"{ckpt}: consolidated weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model = model.to(dtype or torch.float32)
    model.eval()
    return model, tokenizer


def export_checkpoint(source: str, out_dir: str) -> str:
    """Write a Hugging Face folder that `AutoModelForCausalLM.from_pretrained(out_dir)` loads."""
    from transformers import GenerationConfig

    ckpt = resolve_checkpoint(source)
    model, tokenizer = load_consolidated(ckpt)
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id).save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    log.info("exported %s -> %s", ckpt, out_dir)
    return out_dir
