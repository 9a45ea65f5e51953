"""The key correctness property of packing: an example inside a packed row sees exactly what it
would see alone. A packed row carries no attention mask: transformers derives the block-diagonal
causal mask from position_ids. Checked on a tiny random Llama (fp32, CPU) for every attention
implementation available on the machine; and the chunked loss equals the full-logits loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from ift.data.packing import IGNORE, collate, prompt_mask
from ift.model import hidden_states, token_losses

VOCAB = 97
PAD = 0
TOL = 1e-5


def tiny_llama(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = attn
    model = LlamaForCausalLM(config).float().eval()
    assert model.config._attn_implementation == attn
    return model


def available_attention() -> list[str]:
    import importlib.util

    found = ["sdpa", "eager", "flex_attention"]
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        found.append("flash_attention_2")
    return found


def forward_logits(model, batch):
    return model.lm_head(hidden_states(model, batch))


@pytest.fixture(scope="module", params=available_attention())
def model(request):
    return tiny_llama(request.param)


def make_examples(spec, seed=0):
    """spec: [(length, n_prompt, task)] -> collate's (ids, target mask, task) triples."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(3, VOCAB, size=n).astype(np.int32), prompt_mask(n, p), t) for n, p, t in spec]


# row 0: four examples of different lengths + 9 padding; row 1: two examples + 31 padding
ROW0 = [(7, 3, 0), (13, 5, 1), (5, 1, 2), (30, 12, 0)]
ROW1 = [(11, 4, 3), (22, 9, 1)]
WIDTH = 64


@pytest.fixture(scope="module")
def packed():
    rows = [make_examples(ROW0, 1), make_examples(ROW1, 2)]
    return rows, collate(rows, WIDTH, pad_id=PAD, train_on_prompt=False)


def alone_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids, dtype=torch.long)[None], use_cache=False).logits[0]


def alone_loss(model, ids, mask) -> torch.Tensor:
    """Standard HF causal-LM loss on the example alone: shift by one, ignore prompt targets; summed."""
    logits = alone_logits(model, ids)
    targets = torch.as_tensor(ids, dtype=torch.long)[1:].clone()
    targets[torch.as_tensor(mask[1:]) == 0] = IGNORE
    return F.cross_entropy(logits[:-1], targets, ignore_index=IGNORE, reduction="none")


def spans(row):
    at, out = 0, []
    for ids, _, _ in row:
        out.append((at, at + len(ids)))
        at += len(ids)
    return out


def test_packed_logits_equal_each_example_alone(model, packed):
    rows, batch = packed
    assert "attention_mask" not in batch
    with torch.no_grad():
        logits = forward_logits(model, batch)
    assert logits.shape == (2, WIDTH, VOCAB)
    worst = 0.0
    for r, row in enumerate(rows):
        for (ids, _, _), (s, e) in zip(row, spans(row)):
            diff = (logits[r, s:e] - alone_logits(model, ids)).abs().max().item()
            worst = max(worst, diff)
    assert worst < TOL, worst


def test_packed_token_losses_equal_sum_of_losses_alone(model, packed):
    rows, batch = packed
    with torch.no_grad():
        losses = token_losses(model, batch)
    assert losses.shape == batch["labels"].shape and losses.dtype == torch.float32
    assert (losses[batch["labels"] == IGNORE] == 0).all()  # prompt, boundaries and padding cost nothing
    total_alone = 0.0
    for r, row in enumerate(rows):
        for (ids, mask, _), (s, e) in zip(row, spans(row)):
            alone = alone_loss(model, ids, mask)
            # token by token: position t of the packed row predicts token t+1 of the same example
            assert torch.allclose(losses[r, s : e - 1], alone, atol=1e-5, rtol=1e-5)
            assert losses[r, e - 1] == 0  # the last token of an example predicts nothing
            total_alone += alone.sum().item()
        assert (losses[r, spans(row)[-1][1] :] == 0).all()
    assert losses.sum().item() == pytest.approx(total_alone, rel=1e-6)
    # the number of loss tokens is exactly the number of target tokens
    n_targets = sum(int(mask.sum()) for row in rows for _, mask, _ in row)
    assert int((batch["labels"] != IGNORE).sum()) == n_targets


def test_without_block_mask_examples_leak(model, packed):
    """Same restarted position_ids but an explicit all-ones attention mask over the row (which
    turns off the detection of packed rows): later examples then attend to earlier ones and their
    logits change, so the mask derived from position_ids is what isolates them."""
    rows, batch = packed
    with torch.no_grad():
        masked = forward_logits(model, batch)
        causal_only = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=torch.ones_like(batch["input_ids"]),
            use_cache=False,
        ).logits
    first_s, first_e = spans(rows[0])[0]
    assert (causal_only[0, first_s:first_e] - masked[0, first_s:first_e]).abs().max() < TOL  # nothing before it
    for s, e in spans(rows[0])[1:]:
        assert (causal_only[0, s:e] - masked[0, s:e]).abs().max() > 1e-3


def test_padded_unpacked_batch_matches_alone(model):
    exs = make_examples([(9, 3, 0), (25, 10, 1), (4, 1, 2), (17, 6, 3)], seed=3)
    batch = collate([[e] for e in exs], None, pad_id=PAD, train_on_prompt=False)
    assert "attention_mask" in batch and batch["input_ids"].shape == (4, 25)
    with torch.no_grad():
        logits = forward_logits(model, batch)
        losses = token_losses(model, batch)
    for r, (ids, mask, _) in enumerate(exs):
        n = len(ids)
        assert (logits[r, :n] - alone_logits(model, ids)).abs().max() < TOL
        assert torch.allclose(losses[r, : n - 1], alone_loss(model, ids, mask), atol=1e-5, rtol=1e-5)
        assert (losses[r, n - 1 :] == 0).all()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_target_loss_equals_full_logits_loss_and_gradients(model, packed, chunk):
    """ift's loss (hidden states at target positions only, projected `chunk` at a time and
    recomputed in backward) against the plain loss over full [batch, seq, vocab] logits: same
    per-token values and same gradients for every parameter (fp32, 1e-5)."""
    _, batch = packed
    if model.config._attn_implementation == "flex_attention" and not torch.cuda.is_available():
        pytest.skip("FlexAttention has no backward on CPU (its forward is checked above)")
    model.train()
    try:
        model.zero_grad()
        ours = token_losses(model, batch, chunk)
        ours.sum().backward()
        ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        full = F.cross_entropy(
            logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE, reduction="none"
        ).view_as(batch["labels"])
        full.sum().backward()
    finally:
        model.eval()
    assert torch.allclose(ours, full.detach(), atol=1e-5, rtol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(ours_grads[name], p.grad, atol=1e-5, rtol=1e-4), name
    assert ours_grads["lm_head.weight"].abs().max() > 0


def test_target_index_lists_exactly_the_target_positions(packed):
    _, batch = packed
    flat = batch["labels"].flatten()
    assert torch.equal(batch["target_index"], torch.nonzero(flat != IGNORE).flatten())
    assert torch.equal(batch["target_task"], batch["task_ids"].flatten()[batch["target_index"]])


def test_cu_seq_lens_match_transformers_varlen_boundaries(packed):
    """flash-attention varlen gets the micro-batch as one row; the boundaries collated on the host
    equal those transformers would read back from the flattened position_ids on the device."""
    from transformers.modeling_flash_attention_utils import _prepare_from_posids

    _, batch = packed
    n = batch["input_ids"].numel()
    qkv = torch.zeros(1, n, 1, 2)
    *_, (cu_q, cu_k), (max_q, max_k) = _prepare_from_posids(qkv, qkv, qkv, batch["position_ids"].view(1, -1))
    assert torch.equal(batch["cu_seq_lens"], cu_q.to(torch.int32)) and torch.equal(cu_q, cu_k)
    assert batch["max_length"] == int(max_q) == int(max_k)
