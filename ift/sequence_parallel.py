"""Ulysses sequence parallelism (DeepSpeed's Arctic Long Sequence Training, arXiv 2506.13996).

With train.sequence_parallel=N the world is data_parallel x N: the N consecutive ranks of one
sequence-parallel (SP) group read the same packed rows, and each feeds the model its contiguous
1/N slice of every row (ift.data.packing.sequence_slice). Inside attention DeepSpeed's
`UlyssesSPAttentionHF` swaps the split over the sequence for a split over heads (all-to-all),
runs the core attention on whole rows, and swaps back. Everything else (MLP, norms, the chunked
loss) sees only the rank's slice, which is where the memory goes at long lengths.

What ift adds to DeepSpeed's pieces: the core attention keeps the examples of a packed row apart
after the all-to-all (DeepSpeed's own wrapper drops the mask, so sdpa would attend across
examples): sdpa gets the block-diagonal causal mask of the whole row from its position_ids, once
per forward pass (WholeRowMask); flash-attention gets the row's sequence boundaries collated on
the host. Gradients: DeepSpeed sums them over all ranks and divides by a size that depends on the
ZeRO stage (gradient_divisor), which ift.train's loss scale undoes. Evaluation (model.eval())
bypasses SP: every rank then runs whole rows with the plain attention.
"""

from __future__ import annotations

import math
import types

from ift.config import Config
from ift.errors import UserError

SUPPORTED_ATTENTION = ("sdpa", "flash_attention_2")
# torch and DeepSpeed are imported where used: `ift submit` checks the config without them


def layout(rank: int, world: int, sp: int) -> tuple[int, int, int]:
    """(data-parallel rank, data-parallel size, rank inside the SP group). SP groups are runs of
    consecutive ranks (DeepSpeed's parallel_state_sp), so with N dividing the GPUs of a node an SP
    group's all-to-alls stay inside the node."""
    return rank // sp, world // sp, rank % sp


def gradient_divisor(zero_stage: int, world: int, sp: int) -> int:
    """What DeepSpeed divides the summed gradient by: the data-parallel size world/sp at ZeRO 0-2,
    but the whole world at ZeRO-3, whose reduce-scatter (DeepSpeed 0.19's __avg_scatter_grads,
    taken whenever zero_optimization.reduce_scatter is on, which ift's config keeps) ignores
    sequence parallelism. The SP=1 == SP=2 tests at ZeRO-2 and ZeRO-3 pin both."""
    return world if zero_stage == 3 else world // sp


def check(cfg: Config, world: int, model_config=None) -> None:
    """Start-up checks of train.sequence_parallel against the world and the model, one line naming the field.
    Without `model_config` (a launcher, before any worker starts) the model's shape is read from
    the config; a model config that does not load is left to the workers to report."""
    sp = cfg.train.sequence_parallel  # what it needs of the config alone: ift.config.check_sequence_parallel
    if sp == 1:
        return
    if world % sp:
        raise UserError(f"train.sequence_parallel={sp}: the world size {world} is not divisible by it")
    if model_config is None:
        model_config = _shape_of(cfg)
        if model_config is None:
            return
    text = model_config.get_text_config()
    heads, kv = text.num_attention_heads, getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    if heads % sp:
        raise UserError(f"train.sequence_parallel={sp}: the model's {heads} attention heads are not divisible by it")
    if kv % sp and sp % kv:
        raise UserError(
            f"train.sequence_parallel={sp}: the model's {kv} key/value heads neither divide it nor are divisible by it"
        )
    attn = model_config._attn_implementation
    if attn not in SUPPORTED_ATTENTION:
        raise UserError(
            f"model.attn_implementation={attn}: sequence parallelism needs one of {', '.join(SUPPORTED_ATTENTION)}"
        )


def _shape_of(cfg: Config):
    """The model's config (heads, attention) without a tokenizer; None when it does not load."""
    from transformers import AutoConfig

    from ift.model import resolve_attn_implementation, resolve_dtype

    try:
        if cfg.model.config is not None:
            spec = dict(cfg.model.config)
            config = AutoConfig.for_model(spec.pop("model_type", "llama"), **spec)
        else:
            config = AutoConfig.from_pretrained(
                str(cfg.model.name_or_path), trust_remote_code=cfg.model.trust_remote_code
            )
    except (OSError, ValueError, TypeError):
        return None
    config._attn_implementation = resolve_attn_implementation(
        cfg.model.attn_implementation, resolve_dtype(cfg.model.dtype)
    )
    return config


def setup(lm, cfg: Config):
    """Register Ulysses attention for `lm` and return DeepSpeed's SP state (the `mpu` argument of
    deepspeed.initialize); None at train.sequence_parallel=1. Tiled MLP (train.tiled_mlp) at any SP."""
    if cfg.train.tiled_mlp:
        tile_mlps(lm, cfg.data.max_seq_len // cfg.train.sequence_parallel)
    sp = cfg.train.sequence_parallel
    if sp == 1:
        return None
    import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu
    from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    mpu.initialize_sequence_parallel(sequence_parallel_size=sp)
    state = sequence_parallel_state(mpu)
    text = lm.config.get_text_config()
    name = lm.config._attn_implementation
    plain = ALL_ATTENTION_FUNCTIONS[name]
    ulysses = UlyssesSPAttentionHF(
        attn=packed_attention(name, plain),
        batch_size=cfg.train.micro_batch_size,
        attn_head_count=text.num_attention_heads,
        attn_head_size=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
        kv_head_count=getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
        num_hidden_layers=text.num_hidden_layers,
        process_group=mpu.get_sequence_parallel_group(),
        seq_length_is_variable=True,
    )
    ulysses.core_attn_implementation = name

    whole_row_mask = WholeRowMask(mpu.get_sequence_parallel_group())
    kv_groups = ulysses.attn_head_count // ulysses.global_kv_head_count

    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        if not module.training:  # evaluation: whole rows on every rank, the plain attention
            for k in SLICE_KEYS:
                kwargs.pop(k, None)
            # with N > KV heads Ulysses replicates them and resets the layer's num_key_value_groups
            module.num_key_value_groups = kv_groups
            return plain(module, query, key, value, attention_mask, *args, **kwargs)
        if name == "sdpa":
            kwargs["sp_mask"] = whole_row_mask(kwargs["position_ids"], kwargs.pop("sp_one_sequence", False))
        return ulysses(module, query, key, value, None, *args, **kwargs)

    # Like DeepSpeed's register_with_transformers: the model's own key now leads to Ulysses, so every
    # branch transformers takes for sdpa or flash-attention still runs. Process-wide, as there.
    ALL_ATTENTION_FUNCTIONS[name] = attention
    return state


def sequence_parallel_state(mpu):
    """DeepSpeed's SP state (parallel_state_sp) as deepspeed.initialize's `mpu`, saying that no
    weight is split: DeepSpeed 0.19 reads its model-parallel size as the tensor-parallel degree in
    checkpoint metadata (ds_to_universal then refuses the checkpoint) and asks for a
    tensor-parallel size it lacks when loading a universal checkpoint. The SP state's own functions
    (and the attribute DeepSpeed recognizes it by) stay."""
    state = types.SimpleNamespace(**{k: getattr(mpu, k) for k in dir(mpu) if not k.startswith("_")})
    state.get_tensor_model_parallel_world_size = lambda: 1
    state.get_tensor_model_parallel_rank = lambda: 0
    return state


SLICE_KEYS = ("sp_cu_seq_lens", "sp_max_length", "sp_one_sequence")  # what a slice tells the attention


def block_causal_mask(position_ids):
    """[batch, seq, seq], True = attend: causal and inside the example, which starts wherever
    position_ids restart at 0 (ift.data.packing)."""
    import torch

    example = torch.cumsum(position_ids == 0, dim=1)
    at = torch.arange(position_ids.shape[1], device=position_ids.device)
    return (example[:, :, None] == example[:, None, :]) & (at[None, :] <= at[:, None])


class WholeRowMask:
    """sdpa's mask over the whole rows, built once per forward pass from the gathered position_ids
    and shared by every layer (sdpa keeps it for backward: one copy, not one per layer); none when
    every row is one example (plain causal attention, as transformers does at SP=1)."""

    def __init__(self, group):
        self.group, self.key, self.mask = group, None, None

    def __call__(self, position_ids, one_sequence: bool):
        if one_sequence:
            return None
        if self.key is not position_ids:  # a new forward pass (a recompute passes the same tensor)
            import torch
            import torch.distributed as dist

            parts = [torch.empty_like(position_ids) for _ in range(dist.get_world_size(self.group))]
            dist.all_gather(parts, position_ids, group=self.group)
            self.key, self.mask = position_ids, block_causal_mask(torch.cat(parts, dim=1))[:, None]
        return self.mask


def packed_attention(name: str, plain):
    """The core attention on whole packed rows [batch, heads/N, seq, head_dim], examples kept apart:
    sdpa with the mask `attention` hands it (sp_mask), flash-attention with the rows' boundaries."""

    def sdpa(module, query, key, value, attention_mask, *args, **kwargs):
        for k in SLICE_KEYS:
            kwargs.pop(k, None)
        return plain(module, query, key, value, kwargs.pop("sp_mask", None), *args, **kwargs)

    def flash(module, query, key, value, attention_mask, *args, **kwargs):
        # the micro-batch as one row of sequences, boundaries from the host (as ift.model does at SP=1)
        cu, longest = kwargs.pop("sp_cu_seq_lens"), kwargs.pop("sp_max_length")
        kwargs.pop("sp_one_sequence", None)
        batch, heads, seq, dim = query.shape

        def flat(x):
            return x.transpose(0, 1).reshape(1, x.shape[1], batch * seq, dim)

        out, weights = plain(
            module,
            flat(query),
            flat(key),
            flat(value),
            None,
            *args,
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=longest,
            max_length_k=longest,
            **kwargs,
        )
        return out.reshape(batch, seq, heads, dim), weights

    return sdpa if name == "sdpa" else flash


def tile_mlps(lm, seq_len: int) -> int:
    """Compute every decoder MLP in tiles along the sequence (DeepSpeed's TiledMLP: the
    intermediate activations of one tile at a time, recomputed in backward). Tiles: ceil(seq_len /
    hidden), as DeepSpeed's example; fixed from the config, so every rank runs the same number
    (ZeRO-3 gathers weights per call). Returns the number of MLPs tiled."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    hidden = lm.config.get_text_config().hidden_size
    shards = max(1, math.ceil(seq_len / hidden))
    tiled = 0
    for module in lm.modules():
        if type(module).__name__.endswith("MLP") and hasattr(module, "down_proj"):
            plain_forward = type(module).forward

            def forward(self, x, plain_forward=plain_forward):
                return TiledMLP.apply(plain_forward, self, x, shards, list(self.parameters()))

            module.forward = types.MethodType(forward, module)
            tiled += 1
    if not tiled:
        raise UserError(f"train.tiled_mlp: {type(lm).__name__} has no decoder MLP with a down_proj to tile")
    return tiled
