"""Document masking: in a window packed with several documents, each document sees only itself."""

from __future__ import annotations

import pytest
import torch

from mbtrain.model import ModelConfig, build_model, layers

P = 4


def window(a: torch.Tensor, b: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A and B laid out as the loader does: each document starts on a patch boundary."""
    start_b = -(-len(a) // P) * P
    x = torch.zeros(1, t, dtype=torch.long)
    seg = torch.full((1, t), -1)
    x[0, : len(a)], seg[0, : len(a)] = a, 0
    x[0, start_b : start_b + len(b)], seg[0, start_b : start_b + len(b)] = b, 1
    return x, seg, start_b


def force_paths(monkeypatch, path: str) -> None:
    """Make document_attention take one of its paths: one masked call, or a call per document
    (chosen for windows of few documents, and for windows too long for a dense mask)."""
    if path == "dense":
        monkeypatch.setattr(layers, "PER_DOCUMENT_MIN_POSITIONS", 10**9)
    elif path == "few-documents":
        monkeypatch.setattr(layers, "PER_DOCUMENT_MIN_POSITIONS", 1)
    else:
        monkeypatch.setattr(layers, "PER_DOCUMENT_MIN_POSITIONS", 10**9)
        monkeypatch.setattr(layers, "DENSE_MASK_LIMIT", 0)


def test_document_attention_paths_agree(monkeypatch):
    """Outputs and gradients of the per-document path equal the dense mask's."""
    torch.manual_seed(0)
    seg = torch.tensor([[0] * 5 + [1] * 9 + [2] * 2, [3] * 16, [4] * 7 + [-1] * 9])
    q, k, v = (torch.randn(3, 2, 16, 8, requires_grad=True) for _ in range(3))
    results = []
    for path in ("dense", "few-documents"):
        force_paths(monkeypatch, path)
        out = layers.document_attention(q, k, v, seg, 0.0)
        grads = torch.autograd.grad((out * torch.arange(8.0)).sum(), (q, k, v))
        results.append((out, *grads))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "arch, pos, extra",
    [
        ("megabyte", "rope", {}),
        ("megabyte", "learned", {}),
        ("megabyte", "rope", {"local_context": P}),
        ("transformer", "learned", {}),
        ("transformer", "rope", {}),
    ],
)
@pytest.mark.parametrize("path", ["dense", "few-documents", "long-window"])
def test_documents_see_only_themselves(arch, pos, extra, path, monkeypatch):
    force_paths(monkeypatch, path)
    torch.manual_seed(0)
    cfg = ModelConfig.tiny(arch=arch, pos=pos, seq_len=32, patch_size=P, **extra)
    model = build_model(cfg).eval()
    a, b = torch.randint(0, 256, (10,)), torch.randint(0, 256, (9,))
    x, seg, start = window(a, b, 28)
    with torch.no_grad():
        logits = model(x, seg)
        alone = model(b[None])
        x2, seg2, _ = window(torch.randint(0, 256, (10,)), b, 28)
        changed = model(x2, seg2)
    got = logits[0, start : start + len(b)]
    torch.testing.assert_close(got, alone[0], rtol=0, atol=1e-5)  # B as if alone
    torch.testing.assert_close(changed[0, start : start + len(b)], got, rtol=0, atol=1e-6)
    # Without masking, A does leak into B: the test can tell the difference.
    with torch.no_grad():
        leaky = model(x)[0, start : start + len(b)]
    assert (leaky - alone[0]).abs().max() > 1e-3


def test_masked_loss_and_gradients_stay_within_documents():
    torch.manual_seed(0)
    model = build_model(ModelConfig.tiny(seq_len=32, patch_size=P))
    a, b = torch.randint(0, 256, (10,)), torch.randint(0, 256, (9,))
    x, seg, start = window(a, b, 28)
    saved = []

    def keep(_m, _inp, out):
        out.retain_grad()
        saved.append(out)

    model.global_embed.register_forward_hook(keep)
    model.local_embed.register_forward_hook(keep)
    model.loss(x, seg == 1, seg).backward()  # the loss of B only
    for emb in saved:  # no gradient reaches A's embeddings, B's get some
        assert emb.grad[0, :10].abs().max() == 0
        assert emb.grad[0, start : start + 8].abs().max() > 0
