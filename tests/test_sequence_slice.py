"""Sequence parallelism's pieces in one process: the slices of a packed micro-batch cover it
exactly (targets at a slice boundary included); the core attention ift gives DeepSpeed's Ulysses
layer (ift.sequence_parallel.packed_attention) keeps the examples of a packed row apart with no
mask from transformers, as transformers' own packed mask does; tiled MLPs (DeepSpeed's TiledMLP)
give the plain MLP's loss and gradients; the flash-attention core flattens and restores rows in
the order of their boundaries (a varlen stand-in for the GPU kernel). The 2-process runs are in
tests/integration/test_sequence_parallel.py."""

import pytest
import torch
from test_packed_attention import PAD, ROW0, ROW1, WIDTH, make_examples, tiny_llama  # noqa: F401

from ift.data.packing import IGNORE, collate, sequence_slice
from ift.model import hidden_states


@pytest.fixture(scope="module")
def batch():
    rows = [make_examples(ROW0, 1), make_examples(ROW1, 2)]
    return collate(rows, WIDTH, pad_id=PAD, train_on_prompt=False)


@pytest.mark.parametrize("parts", [2, 4])
def test_slices_cover_the_micro_batch(batch, parts):
    slices = [sequence_slice(batch, p, parts) for p in range(parts)]
    for key in ("input_ids", "labels", "position_ids", "task_ids"):
        assert torch.equal(torch.cat([s[key] for s in slices], dim=1), batch[key]), key
    # every target exactly once, with its task; one sits right before a boundary (predicting across it)
    assert sum(len(s["target_index"]) for s in slices) == len(batch["target_index"])
    for s in slices:
        assert torch.equal(s["target_index"], torch.nonzero(s["labels"].reshape(-1) != IGNORE).flatten())
        assert torch.equal(s["target_task"], s["task_ids"].reshape(-1)[s["target_index"]])
        assert torch.equal(s["sp_cu_seq_lens"], batch["cu_seq_lens"]) and s["sp_max_length"] == batch["max_length"]
        assert s["sp_one_sequence"] is False  # packed rows: the attention needs the mask
    assert (batch["labels"][:, WIDTH // parts - 1] != IGNORE).any()
    with pytest.raises(ValueError, match="does not split into 3 equal parts"):
        sequence_slice(batch, 0, 3)


def test_unpacked_rows_pad_to_a_multiple_of_the_parts():
    rows = [make_examples([(7, 3, 0)], 1), make_examples([(13, 5, 1)], 2)]
    assert collate(rows, None, pad_id=PAD, train_on_prompt=False, multiple_of=4)["input_ids"].shape[1] == 16
    sliced = sequence_slice(collate(rows, None, pad_id=PAD, train_on_prompt=False, multiple_of=4), 1, 4)
    assert sliced["sp_cu_seq_lens"].tolist() == [0, 7, 16, 29, 32]  # example, padding tail, per row
    whole = collate([make_examples([(16, 3, 0)], 1)], None, pad_id=PAD, train_on_prompt=False, multiple_of=4)
    assert sequence_slice(whole, 0, 4)["sp_one_sequence"] is True  # one example filling the row: no mask


def test_packed_core_attention_keeps_examples_apart_without_a_mask(batch, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from ift.sequence_parallel import block_causal_mask, packed_attention

    model = tiny_llama("sdpa")
    with torch.no_grad():
        want = hidden_states(model, batch)  # transformers' block-diagonal mask from position_ids
        core = packed_attention("sdpa", sdpa_attention_forward)
        # what Ulysses hands the core: whole rows, transformers' mask dropped, ift's mask of the rows
        monkeypatch.setitem(
            ALL_ATTENTION_FUNCTIONS,
            "sdpa",
            lambda module, q, k, v, mask, *a, **kw: core(
                module, q, k, v, None, *a, sp_mask=block_causal_mask(kw["position_ids"])[:, None], **kw
            ),
        )
        got = hidden_states(model, batch)
        plain_causal = lambda module, q, k, v, mask, *a, **kw: sdpa_attention_forward(  # noqa: E731
            module, q, k, v, None, *a, is_causal=True, **kw
        )
        monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", plain_causal)
        leaky = hidden_states(model, batch)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert not torch.allclose(leaky, want, atol=1e-3, rtol=0)  # the test can tell a leak


def test_one_example_per_row_needs_no_mask(monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from ift.sequence_parallel import packed_attention

    rows = [make_examples([(WIDTH, 9, 0)], 3), make_examples([(WIDTH, 20, 1)], 4)]
    full = collate(rows, WIDTH, pad_id=PAD, train_on_prompt=False)
    assert sequence_slice(full, 1, 2)["sp_one_sequence"] is True
    model = tiny_llama("sdpa")
    core = packed_attention("sdpa", sdpa_attention_forward)
    with torch.no_grad():
        want = hidden_states(model, full)
        monkeypatch.setitem(
            ALL_ATTENTION_FUNCTIONS,
            "sdpa",
            lambda module, q, k, v, mask, *a, **kw: core(module, q, k, v, None, *a, sp_mask=None, **kw),
        )  # what WholeRowMask gives such rows
        got = hidden_states(model, full)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_tiled_mlp_equals_the_plain_mlp_in_forward_and_backward(batch):
    from ift.model import target_losses
    from ift.sequence_parallel import tile_mlps

    plain, tiled = tiny_llama("sdpa").train(), tiny_llama("sdpa").train()
    # hidden 64, rows of 64 tokens: with seq_len 256 every MLP call runs in ceil(256 / 64) = 4 tiles
    assert tile_mlps(tiled, 256) == 2  # one per decoder layer
    calls = []
    mlp = tiled.model.layers[0].mlp
    mlp.down_proj.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[-2]))
    losses = [target_losses(m, batch).sum() for m in (plain, tiled)]
    assert calls == [16, 16, 16, 16], calls  # 64 tokens in 4 tiles of 16
    for loss in losses:
        loss.backward()
    assert torch.allclose(losses[0], losses[1], atol=1e-5, rtol=0)
    for (name, a), b in zip(plain.named_parameters(), tiled.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-5), name


def test_flash_core_flattens_rows_in_the_order_of_their_boundaries(batch):
    """The flash-attention core hands the kernel the micro-batch as one row of sequences with the
    host's boundaries (as transformers' varlen path takes them) and reshapes back: checked against
    sdpa with the block mask, with a varlen stand-in for the GPU kernel (sdpa per sequence)."""
    import torch.nn.functional as F

    from ift.sequence_parallel import block_causal_mask, packed_attention

    def varlen(module, q, k, v, mask, *a, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, **kw):
        assert q.shape[0] == 1 and torch.equal(cu_seq_lens_q, cu_seq_lens_k) and mask is None
        out = torch.empty_like(q)
        for s, e in zip(cu_seq_lens_q[:-1].tolist(), cu_seq_lens_q[1:].tolist()):
            out[:, :, s:e] = F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True)
        assert max_length_q == max(e - s for s, e in zip(cu_seq_lens_q[:-1].tolist(), cu_seq_lens_q[1:].tolist()))
        return out.transpose(1, 2), None  # [1, tokens, heads, dim], as flash_attention_forward returns

    sliced = sequence_slice(batch, 0, 2)  # any slice carries the whole rows' boundaries
    rows, width = batch["input_ids"].shape
    q, k, v = (torch.randn(rows, 4, width, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    got, _ = packed_attention("flash_attention_2", varlen)(
        None,
        q,
        k,
        v,
        None,
        sp_cu_seq_lens=sliced["sp_cu_seq_lens"],
        sp_max_length=sliced["sp_max_length"],
        sp_one_sequence=False,
    )
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=block_causal_mask(batch["position_ids"])[:, None])
    assert torch.allclose(got, want.transpose(1, 2), atol=1e-6, rtol=0)  # [rows, width, heads, dim]
