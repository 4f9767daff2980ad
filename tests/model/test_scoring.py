import math

import pytest
import torch
import torch.nn.functional as F

from mbtrain.model import ModelConfig, build_model, score_bytes
from mbtrain.model.scoring import _windows


def test_windows_cover_every_byte_once():
    for mode, stride in (("basic", 8), ("sliding", 3), ("strided", 8), ("strided", 5)):
        scored = []
        for b, e, s in _windows(37, 8, mode, stride):
            assert 0 <= b <= s < e <= b + 8
            scored += range(s, e)
        assert scored == list(range(37))


@pytest.mark.parametrize("arch", ["megabyte", "transformer"])
def test_basic_equals_one_forward_per_window(arch):
    model = build_model(ModelConfig.tiny(arch=arch)).eval()
    data = torch.randint(0, 256, (50,))
    res = score_bytes(model, data, context=25, mode="basic", batch_size=2)
    with torch.no_grad():
        x = data.view(2, 25)
        nll = F.cross_entropy(model(x).reshape(-1, 256), x.reshape(-1), reduction="sum")
    assert res.count == 50
    assert res.nats == pytest.approx(float(nll), rel=1e-5)
    assert res.bpb == pytest.approx(float(nll) / 50 / math.log(2), rel=1e-5)


def test_all_modes_equal_with_one_window():
    model = build_model(ModelConfig.tiny(arch="transformer")).eval()
    data = bytes(range(40))
    ref = score_bytes(model, data, context=64, mode="basic")
    for mode in ("sliding", "strided"):
        assert score_bytes(model, data, context=64, mode=mode).nats == pytest.approx(ref.nats)


def _trained_model():
    """A tiny MegaByte trained on random crops of periodic text (a few seconds): 150 steps
    take it to ~0.3 bits per byte in basic windows, where longer contexts clearly help (at 80
    it still sat near 2.2, where the modes differed by less than the CPU's rounding)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(pos="rope"))
    text = b"the quick brown fox jumps over a lazy dog. " * 30
    data = torch.tensor(list(text))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        starts = torch.randint(0, len(text) - 32, (8,))
        x = torch.stack([data[s : s + 32] for s in starts])
        opt.zero_grad()
        model.loss(x).backward()
        opt.step()
    return model, text[:128]


def test_sliding_and_strided_no_worse_than_basic_on_a_trained_model():
    model, data = _trained_model()
    basic = score_bytes(model, data, context=32, mode="basic", batch_size=4)
    sliding = score_bytes(model, data, context=32, mode="sliding", stride=8, batch_size=4)
    strided = score_bytes(model, data, context=32, mode="strided", stride=8, batch_size=4)
    assert basic.count == sliding.count == strided.count == len(data)
    assert sliding.bpb <= basic.bpb
    assert strided.bpb <= basic.bpb


def test_strided_combines_two_shifted_passes():
    """P = 4, basic windows of 16: second-half bytes come from the pass shifted by 2."""
    model = build_model(ModelConfig.tiny()).eval()
    data = torch.randint(0, 256, (32,))
    res = score_bytes(model, data, context=16, mode="strided", stride=16)

    def nll(b, e):
        with torch.no_grad():
            return F.cross_entropy(model(data[None, b:e])[0], data[b:e], reduction="none")

    a0, a1 = nll(0, 16), nll(16, 32)
    b0, b1 = nll(2, 16), nll(14, 30)  # first window shifted forward, later ones back
    pick = [b0[i - 2] if i % 4 >= 2 and i >= 6 else a0[i] for i in range(16)]
    pick += [b1[i - 14] if i % 4 >= 2 and i < 30 else a1[i - 16] for i in range(16, 32)]
    assert res.nats == pytest.approx(float(sum(pick)), rel=1e-5)
