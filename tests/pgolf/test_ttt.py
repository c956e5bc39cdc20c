"""Score-first TTT: no target is ever trained on before it has been scored."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pgolf import ttt
from pgolf.bpb import ByteLUTs

T, STRIDE, CHUNK = 32, 8, 64


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))


class TinyCausal(nn.Module):
    """Embedding -> causal running mean -> per-block scales -> head. Causal, so scoring order matters."""

    def __init__(self, vocab: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.head = nn.Linear(8, vocab)

    def forward_logits(self, x):
        h = self.emb(x).cumsum(1) / torch.arange(1, x.size(1) + 1)[None, :, None]
        for b in self.blocks:
            h = h * b.scale
        return self.head(h)

    def forward(self, x, y):
        logits = self.forward_logits(x)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))


def _cfg(**kw):
    base = dict(eval_seq_len=T, train_seq_len=T, eval_stride=STRIDE, ttt_chunk_tokens=CHUNK, ttt_lr=0.05,
                ttt_epochs=2, ttt_freeze_blocks=1, ttt_momentum=0.9, ttt_batch_seqs=1, ttt_grad_clip=1.0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_every_target_is_scored_before_any_update_that_uses_it(monkeypatch):
    total = 5 * CHUNK
    # token id == stream position, so a target id tells exactly which position it is
    val = torch.arange(total + 1, dtype=torch.int32)
    vocab = total + 1
    luts = ByteLUTs(torch.ones(vocab, dtype=torch.int16), torch.zeros(vocab, dtype=torch.bool),
                    torch.zeros(vocab, dtype=torch.bool))
    events: list[tuple[str, set[int]]] = []
    real_ce = F.cross_entropy

    def recording_ce(logits, target, *a, **k):
        training = torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        events.append(("train" if training else "score", set(target.reshape(-1).tolist())))
        return real_ce(logits, target, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", recording_ce)
    torch.manual_seed(0)
    model = TinyCausal(vocab)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss, bpb = ttt.ttt_sliding_eval(model, val, luts, _cfg(), device="cpu", log=lambda s: None)

    scored: set[int] = set()
    trained_any = False
    for kind, targets in events:
        if kind == "score":
            scored |= targets
        else:
            trained_any = True
            assert targets <= scored, f"trained on unscored targets {sorted(targets - scored)[:5]}"
            assert max(targets) <= (5 - 1) * CHUNK  # the last chunk is never trained on
    assert trained_any
    assert scored == set(range(1, total + 1))  # every target scored
    assert math.isfinite(loss) and bpb == pytest.approx(loss / math.log(2))  # one byte per token here
    after = dict(model.named_parameters())
    assert torch.equal(after["blocks.0.scale"], before["blocks.0.scale"])  # frozen by the name prefix
    assert not torch.equal(after["blocks.1.scale"], before["blocks.1.scale"])
    assert not torch.equal(after["head.weight"], before["head.weight"])
    assert all(p.requires_grad for p in model.parameters())


def test_chunk_assignment_uses_the_first_scored_position():
    total = 3 * CHUNK
    starts = ttt.ttt_windows(total, T, STRIDE)
    chunks = ttt.chunk_of_windows(starts, total, T, STRIDE, CHUNK)
    assert sum(len(c) for c in chunks) == len(starts)
    assert chunks[0][0] == 0
    # window ws = CHUNK - T + STRIDE scores [CHUNK, CHUNK + STRIDE): it belongs to chunk 1, not chunk 0
    assert CHUNK - T + STRIDE in chunks[1]
    assert CHUNK - T in chunks[0]
    # short tail windows below `stride` tokens are dropped by the TTT filter (reference quirk)
    assert ttt.ttt_windows(20, 16, 8) == [0, 8]


def test_zero_epochs_equals_plain_sliding_eval():
    from pgolf.evaluate import sliding_window_eval

    total = 4 * CHUNK
    g = torch.Generator().manual_seed(1)
    val = torch.randint(0, 50, (total + 1,), generator=g).to(torch.int32)
    luts = ByteLUTs(torch.randint(1, 4, (50,), generator=g).to(torch.int16), torch.zeros(50, dtype=torch.bool),
                    torch.zeros(50, dtype=torch.bool))
    torch.manual_seed(0)
    model = TinyCausal(50)
    got = ttt.ttt_sliding_eval(model, val, luts, _cfg(ttt_epochs=0), device="cpu", log=lambda s: None)
    ref = sliding_window_eval(model.forward_logits, val, luts, T, STRIDE, 4, device="cpu")
    assert got == pytest.approx(ref, rel=1e-6)
