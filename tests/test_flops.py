"""Model FLOPs and MFU (ift.flops) against a hand count, and the peak of each GPU by name."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from ift.flops import FlopCounter, flop_counter, peak_tflops

# d=64, 2 layers, MLP 128, 4 heads of 16 (2 KV heads), vocab 100
SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=100,
    max_position_embeddings=64,
)


def _hand_non_embedding(tied: bool) -> int:
    d, f, layers, kv = 64, 128, 2, 2 * 16
    attention = d * d + d * kv + d * kv + d * d  # q, k, v (2 KV heads of 16), o
    mlp = 3 * d * f  # gate, up, down
    norms = 2 * d
    return layers * (attention + mlp + norms) + d  # + the final norm; embeddings (and lm_head) left out


@pytest.mark.parametrize("tied", [False, True])
def test_counter_leaves_out_the_embeddings(tied):
    lm = LlamaForCausalLM(LlamaConfig(**SHAPE, tie_word_embeddings=tied))
    counter = flop_counter(lm)
    assert counter == FlopCounter(_hand_non_embedding(tied), layers=2, hidden=64, vocab=100)


def test_step_flops_by_hand():
    """Two packed rows: documents of 10, 20 and 30 tokens (60 real tokens), 25 of them targets."""
    counter = FlopCounter(non_embedding_params=1000, layers=2, hidden=64, vocab=100)
    dense = 6 * 1000 * 60
    attention = 12 * 2 * 64 * (10 * 10 + 20 * 20 + 30 * 30)  # each token attends its own document
    head = 6 * 100 * 64 * 25  # the output projection runs on targets only
    assert counter.step_flops(tokens=60, attention_sq=1400, target_tokens=25) == dense + attention + head
    # the old estimate, 6 x all parameters x tokens, counted the output projection for every token
    # (and the input embedding, which costs no FLOPs) and no attention
    with_embeddings = 1000 + 2 * 100 * 64
    assert 6 * with_embeddings * 60 != counter.step_flops(60, 1400, 25)


def test_loader_counts_squared_document_lengths():
    import numpy as np

    from ift.data.loader import PackedLoader
    from ift.data.tokenize import TokenizedTask

    lengths = np.array([5, 7, 9, 11])
    ends = np.cumsum(lengths)
    flat_mask = np.concatenate([np.r_[np.zeros(n - n // 2), np.ones(n // 2)] for n in lengths]).astype(np.int8)
    task = TokenizedTask(
        "t",
        lengths,
        lengths // 2,
        flat_ids=np.arange(ends[-1]) % 50,
        flat_mask=flat_mask,
        starts=ends - lengths,
        ends=ends,
    )
    loader = PackedLoader(
        [task],
        {"t": 1.0},
        seed=0,
        seq_len=32,
        window=4,
        packing=True,
        micro_batch_size=1,
        grad_accum=1,
        train_on_prompt=False,
        pad_id=0,
    )
    for _ in range(3):
        step = loader.next_step()
        (batch,) = step.micro_batches
        segments = np.diff(batch["cu_seq_lens"].numpy())  # the row's documents, then its padding tail
        docs = segments[: np.searchsorted(np.cumsum(segments), step.tokens) + 1]
        assert docs.sum() == step.tokens and set(docs) <= {5, 7, 9, 11}
        assert step.attention_sq == int((docs**2).sum())


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_peak_by_device_name(name, peak):
    assert peak_tflops(name) == peak
