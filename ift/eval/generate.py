"""The model `ift eval` generates with, and greedy generation.

The model is a run directory (its newest complete checkpoint), a checkpoint folder, or any local
Hugging Face causal-LM folder. Generation is greedy, batched with left padding, and stops at EOS.
"""

from __future__ import annotations

import os

from ift import rundir
from ift.config import Config, load_config
from ift.errors import UserError

# --------------------------------------------------------------------------- loading the model


def _checkpoint_step(ckpt: str) -> int | None:
    from ift.checkpoint import DONE_FILE, STEP_DIR

    m = STEP_DIR.match(os.path.basename(ckpt.rstrip("/")))
    if m:
        return int(m.group(1))
    try:
        with open(os.path.join(ckpt, DONE_FILE)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def locate(source: str) -> dict:
    """What `source` is, without loading weights: {"kind": "run" | "hf", "path", "run_dir", "checkpoint",
    "step", "cfg" (the run's Config, or None for a model folder)}."""
    path = os.path.abspath(os.path.expanduser(source))
    if not os.path.exists(path):
        raise UserError(f"no such run directory, checkpoint or model folder: {source}")
    if not os.path.isdir(path):
        raise UserError(f"{source}: not a directory (expected a run directory, a checkpoint or a model folder)")
    if rundir.is_run_or_checkpoint(path):
        run, ckpt = rundir.resolve(path)
        if not os.path.isfile(run.config):
            raise UserError(f"{run.path}: run directory without config.yaml (needed to rebuild the model)")
        return {
            "kind": "run",
            "path": path,
            "run_dir": run.path,
            "checkpoint": ckpt,
            "step": _checkpoint_step(ckpt),
            "cfg": load_config(run.config),
        }
    if os.path.isfile(os.path.join(path, "config.json")):
        return {"kind": "hf", "path": path, "run_dir": None, "checkpoint": None, "step": None, "cfg": None}
    raise UserError(
        f"{source}: not a run directory (no checkpoints/), a checkpoint (no COMPLETE marker) "
        "or a Hugging Face model folder (no config.json)"
    )


def load_model(source: str, info: dict | None = None):
    """(model, tokenizer, info) for a run directory, a checkpoint folder or a local HF folder (see `locate`)."""
    import torch

    from ift import export
    from ift.distributed import accelerator_available

    info = info or locate(source)
    if info["kind"] == "run":
        model, tokenizer = export.load_consolidated(info["checkpoint"])
    else:
        from transformers import AutoModelForCausalLM

        from ift.model import open_tokenizer

        try:
            tokenizer = open_tokenizer(info["path"])
        except (OSError, ValueError) as e:
            raise UserError(f"{source}: cannot load a tokenizer from the model folder: {e}") from None
        dtype = "auto" if accelerator_available() else torch.float32
        try:
            model = AutoModelForCausalLM.from_pretrained(info["path"], dtype=dtype, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{source}: cannot load a causal LM from the model folder: {e}") from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"{source}: the tokenizer has no EOS token, so generation cannot stop")
    if accelerator_available():
        from ift.model import DTYPES, resolve_dtype

        if info["cfg"] is not None:  # a run's checkpoint (consolidated in fp32): the precision it trained in
            model = model.to(DTYPES[resolve_dtype(info["cfg"].model.dtype)])
        model = place_on_gpus(model)
    model.eval()
    return model, tokenizer, info


def gpu_placement(model_bytes: int, free_bytes: int, gpus: int) -> str:
    """ "one": the model fits on one GPU with a fifth to spare (the KV cache and activations of
    generation); "spread": it does not, and there are several GPUs to spread it over."""
    return "one" if gpus == 1 or model_bytes * 1.2 <= free_bytes else "spread"


def place_on_gpus(model):
    """The model on the current GPU when it fits there, else over all visible GPUs with accelerate's
    device map (layers split whole). A model on several GPUs generates slower: one at a time works."""
    import torch

    from ift.distributed import world_size

    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    free, _ = torch.cuda.mem_get_info()
    gpus = 1 if world_size() > 1 else torch.cuda.device_count()  # one rank per GPU: its own (current) GPU
    if gpu_placement(size, free, gpus) == "one":
        return model.to("cuda")
    from accelerate import dispatch_model, infer_auto_device_map

    device_map = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules)
    return dispatch_model(model, device_map)


def context_limit(model, cfg: Config | None) -> int | None:
    """Tokens the model may see: its position limit, and the run's data.max_seq_len (as in training)."""
    keys = ("max_position_embeddings", "n_positions", "max_sequence_length")
    config = getattr(model, "config", model)  # a model, or (vLLM) its config
    limits: list[int] = [x for k in keys if isinstance(x := getattr(config, k, None), int) and x > 0]
    if cfg is not None:
        limits.append(cfg.data.max_seq_len)
    return min(limits) if limits else None


# --------------------------------------------------------------------------- generation


def eos_ids(model, tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]:
        if e is not None and e not in ids:
            ids.append(int(e))
    return ids


def plan_batches(lengths: list[int], batch_size: int, bucket: bool = True) -> list[list[int]]:
    """Indices of each batch: with `bucket`, prompts sorted by length (longest first, then by index),
    so a batch pads little; without, in the given order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if bucket else list(range(len(lengths)))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the prompt slots of left-padded batches that are padding."""
    slots = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths) / slots if slots else 0.0


def generate(
    model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int, batch_size: int, progress=None
) -> list[str]:
    """Greedy continuations of token-id prompts in one process; stripped texts in the order of `prompt_ids`."""
    return generate_sharded(model, tokenizer, prompt_ids, max_new_tokens, batch_size, progress)[0]


def generate_sharded(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    progress=None,
    bucket: bool = True,
    synced: bool = False,
    device=None,
) -> tuple[list[str], dict]:
    """Greedy continuations on every rank of the world, each rank generating its share: the batches
    are planned over all prompts (`plan_batches`) and batch i runs on rank i mod world, so an
    example is generated in the same batch at any world size, and the texts equal one process's.
    Returns (texts in the order of `prompt_ids`, on every rank; counts summed over ranks).

    synced: the model's parameters are sharded (ZeRO-3), so every forward is collective: every
    rank runs the same number of batches (a short rank repeats one and keeps nothing) and decodes
    until all ranks' rows have ended (transformers' synced_gpus). device: where the inputs go (default:
    the model's first parameter's; the training engine names its own, since ZeRO-3 may hold
    parameters on the host)."""
    from ift.distributed import gather_objects, rank, world_size

    lengths = [len(p) for p in prompt_ids]
    batches = plan_batches(lengths, batch_size, bucket)
    world = world_size()
    mine = batches[rank() :: world]
    rounds = -(-len(batches) // world) if synced else len(mine)
    texts: dict = {}
    counts = {"examples": 0, "generated_tokens": 0, "decode_slots": 0}
    for r in range(rounds):
        idx = mine[r] if r < len(mine) else batches[0]
        out, new_tokens, steps = _generate_batch(
            model, tokenizer, [prompt_ids[i] for i in idx], max_new_tokens, synced, device
        )
        if r < len(mine):
            texts.update(zip(idx, out))
            counts["examples"] += len(idx)
            counts["generated_tokens"] += new_tokens
            counts["decode_slots"] += steps * len(idx)
            if progress is not None:
                progress.update(len(idx))
    every = gather_objects((texts, counts))
    merged = {i: t for part, _ in every for i, t in part.items()}
    total = {k: sum(c[k] for _, c in every) for k in counts}
    total["padding_frac"] = padding_fraction(lengths, batches)
    return [merged[i] for i in range(len(prompt_ids))], total


def _generate_batch(
    model, tokenizer, prompts: list[list[int]], max_new_tokens: int, synced: bool, device=None
) -> tuple[list[str], int, int]:
    """(stripped texts, tokens generated up to and including each row's EOS, decode steps run).
    generate stops once every row has ended, so a batch of short answers costs few steps."""
    import torch
    from transformers import GenerationConfig

    from ift.model import with_pad_token

    tokenizer.padding_side = "left"
    with_pad_token(tokenizer)  # a tokenizer the caller loaded itself: the batch is padded with EOS
    device = device or next(model.parameters()).device
    eos = eos_ids(model, tokenizer)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos if len(eos) > 1 else eos[0],
        bos_token_id=tokenizer.bos_token_id,
    )
    batch = tokenizer.pad({"input_ids": prompts}, padding_side="left", return_attention_mask=True, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    with torch.inference_mode():
        gen = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            generation_config=gen_cfg,
            synced_gpus=synced,
        )
    texts, generated = [], 0
    for row in gen[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in eos), len(row))
        generated += min(cut + 1, len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return texts, generated, gen.shape[1] - width


def generate_vllm(
    folder: str, prompt_ids: list[list[int]], max_new_tokens: int, eos: list[int], dtype: str = "auto"
) -> tuple[list[str], dict]:
    """eval.backend vllm: the same prompts (token ids), greedy, through vllm.LLM on a Hugging Face folder."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise UserError(
            "eval.backend vllm needs vLLM on a CUDA machine: pip install vllm (or eval.backend=hf)"
        ) from None
    llm = LLM(model=folder, tokenizer=folder, dtype=dtype, trust_remote_code=False)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=eos, skip_special_tokens=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompt_ids], params)
    texts = [o.outputs[0].text.strip() for o in outputs]
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return texts, {
        "examples": len(texts),
        "generated_tokens": generated,
        "decode_slots": generated,
        "padding_frac": 0.0,
    }
