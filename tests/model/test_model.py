import pytest
import torch
import torch.nn.functional as F

from mbtrain.model import ByteTransformer, MegaByte, ModelConfig, build_model

ARCHS = ["megabyte", "transformer"]


def _embedding_outputs(model):
    """Register hooks keeping the outputs of every byte embedding (and positions)."""
    saved, handles = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Embedding) and "pos" not in name:

            def hook(_m, _inp, out):
                out.retain_grad()
                saved.append(out)

            handles.append(mod.register_forward_hook(hook))
    return saved, handles


@pytest.mark.parametrize(
    "arch, extra",
    [
        ("megabyte", {}),
        ("megabyte", {"local_context": 4}),
        ("megabyte", {"local_context": 3, "tie_local_embedding": False}),
        ("transformer", {}),
    ],
)
@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("t", [16, 13])  # a multiple of P = 4, and not
def test_causality(arch, extra, pos, t):
    model = build_model(ModelConfig.tiny(arch=arch, pos=pos, **extra))
    x = torch.randint(0, 256, (2, t))
    for target in range(t):
        saved, handles = _embedding_outputs(model)
        logits = model(x)
        for h in handles:
            h.remove()
        logits[:, target].sum().backward()
        for e in saved:
            assert e.grad is not None
            assert torch.all(e.grad[:, target:] == 0), f"logits[{target}] sees the future"
        if target > 0:  # and it does see the past (through the global or the local path)
            assert sum(e.grad[:, :target].abs().sum() for e in saved) > 0
        model.zero_grad()


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_any_length(arch):
    model = build_model(ModelConfig.tiny(arch=arch))
    for t in (1, 3, 4, 5, 64):
        assert model(torch.randint(0, 256, (2, t))).shape == (2, t, 256)
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.randint(0, 256, (1, 65)))  # learned positions end at seq_len


def test_rope_has_no_length_dependent_parameters():
    a = sum(p.numel() for p in build_model(ModelConfig.tiny(pos="rope", seq_len=64)).parameters())
    b = sum(p.numel() for p in build_model(ModelConfig.tiny(pos="rope", seq_len=4096)).parameters())
    assert a == b
    model = build_model(ModelConfig.tiny(pos="rope", seq_len=16))
    assert model(torch.randint(0, 256, (1, 40))).shape == (1, 40, 256)


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_loss_equals_full_cross_entropy(arch):
    model = build_model(ModelConfig.tiny(arch=arch, loss_chunk_size=7))
    x = torch.randint(0, 256, (3, 30))
    full = F.cross_entropy(model(x).reshape(-1, 256), x.reshape(-1))
    loss = model.loss(x)
    torch.testing.assert_close(loss, full, rtol=1e-6, atol=1e-6)
    g1 = torch.autograd.grad(loss, list(model.parameters()))
    g2 = torch.autograd.grad(full, list(model.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_never_builds_all_logits_at_once(arch):
    model = build_model(ModelConfig.tiny(arch=arch, loss_chunk_size=8))
    rows = []
    model.head.register_forward_hook(lambda _m, _i, out: rows.append(out.shape[0]))
    model.loss(torch.randint(0, 256, (2, 40))).backward()
    assert rows and max(rows) <= 2 * 8  # B * chunk rows of logits per head call


@pytest.mark.parametrize("arch", ARCHS)
def test_loss_mask_ignores_masked_positions(arch):
    model = build_model(ModelConfig.tiny(arch=arch))
    x = torch.randint(0, 256, (2, 20))
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[:, 15:] = False
    mask[1, :3] = False
    y = x.clone()
    y[:, 15:] = torch.randint(0, 256, (2, 5))  # masked tail changes must not matter
    logits = model(x)
    expected = F.cross_entropy(logits[mask], x[mask])
    torch.testing.assert_close(model.loss(x, mask), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.loss(y, mask), model.loss(x, mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_pipeline_decomposition_equals_forward(arch):
    model = build_model(ModelConfig.tiny(arch=arch))
    x = torch.randint(0, 256, (2, 18))
    h = model.embed_global(x)
    for block in model.global_model.blocks:
        h = block(h)
    torch.testing.assert_close(model.local_logits(h, x), model(x))
    torch.testing.assert_close(model.local_head(h, x), model.loss(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_module_names_for_parallelism(arch):
    cfg = ModelConfig.tiny(arch=arch, activation="swiglu")
    model = build_model(cfg)
    block = model.global_model.blocks[0]
    for name in ("attn_norm", "attn", "mlp_norm", "mlp"):
        assert hasattr(block, name)
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert isinstance(getattr(block.attn, name), torch.nn.Linear)
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert isinstance(getattr(block.mlp, name), torch.nn.Linear)
    assert isinstance(model, (MegaByte, ByteTransformer))


def test_head_count_comes_from_the_linears():
    """A TP shard holds fewer heads; attention must follow q_proj's size, not the config."""
    model = build_model(ModelConfig.tiny())
    attn = model.global_model.blocks[0].attn
    d, hd = attn.q_proj.in_features, attn.head_dim
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, torch.nn.Linear(d, 2 * hd, bias=False))
    attn.out_proj = torch.nn.Linear(2 * hd, d, bias=False)
    assert attn(torch.randn(2, 5, d)).shape == (2, 5, d)


@pytest.mark.parametrize("arch", ARCHS)
def test_activation_checkpointing_same_gradients(arch):
    x = torch.randint(0, 256, (2, 16))
    torch.manual_seed(1)
    plain = build_model(ModelConfig.tiny(arch=arch))
    torch.manual_seed(1)
    ckpt = build_model(ModelConfig.tiny(arch=arch, activation_checkpointing=True))
    plain.loss(x).backward()
    ckpt.loss(x).backward()
    for a, b in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast(arch):
    model = build_model(ModelConfig.tiny(arch=arch, norm="rmsnorm", activation="swiglu"))
    x = torch.randint(0, 256, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(x)
    loss.backward()
    assert torch.isfinite(loss)
    assert abs(loss.item() - model.loss(x).item()) < 0.1


def test_tied_local_embedding():
    model = build_model(ModelConfig.tiny(tie_local_embedding=True))
    assert model.head.weight is model.local_embed.weight


def test_dropout_only_in_training():
    model = build_model(ModelConfig.tiny(dropout=0.5))
    x = torch.randint(0, 256, (1, 16))
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_all_256_byte_values_learnable(arch):
    """Overfit a short random binary sequence containing 0x00 and 0xFF."""
    cfg = ModelConfig.tiny(arch=arch, seq_len=32, loss_chunk_size=32)
    model = build_model(cfg)
    x = torch.randint(0, 256, (1, 32))
    x[0, 5], x[0, 17], x[0, 30] = 0x00, 0xFF, 0x00
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(x)
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05
    assert torch.equal(model(x).argmax(-1)[0, [5, 17, 30]], torch.tensor([0x00, 0xFF, 0x00]))


@pytest.mark.parametrize("arch", ARCHS)
def test_per_byte_nll_matches_forward(arch):
    model = build_model(ModelConfig.tiny(arch=arch, loss_chunk_size=5)).eval()
    x = torch.randint(0, 256, (2, 19))
    with torch.no_grad():
        expected = F.cross_entropy(model(x).transpose(1, 2), x, reduction="none")
    torch.testing.assert_close(model.nll(x), expected)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 5])
def test_local_model_in_chunks_gives_the_same_logits_and_gradients(chunk, checkpointing):
    """B*K = 2*4 = 8 patch sequences in chunks of 1, 3 (uneven) and 5 patches."""
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 16))
    results = []
    for local_chunk in (0, chunk):
        torch.manual_seed(1)
        cfg = ModelConfig.tiny(local_chunk=local_chunk, activation_checkpointing=checkpointing)
        model = build_model(cfg)
        logits = model(x)
        loss = model.loss(x)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((logits.detach(), loss.detach(), grads))
    (l0, loss0, g0), (l1, loss1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=0, atol=1e-6)
    torch.testing.assert_close(loss1, loss0, rtol=0, atol=1e-6)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=0, atol=1e-6, msg=name)
