import pytest
import torch
import torch.nn.functional as F

from mbtrain.model import ModelConfig, build_model, cached_logprobs, generate
from mbtrain.model.decode import sample_next

ARCHS = ["megabyte", "transformer"]


def _model_logprobs(model, x):
    return F.log_softmax(model(x).float(), -1).gather(-1, x[..., None])[..., 0]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("prompt_len", [0, 1, 4, 11])  # 11: not a multiple of P = 4
def test_generation_equals_the_model(arch, pos, prompt_len):
    model = build_model(ModelConfig.tiny(arch=arch, pos=pos)).eval()
    x = torch.randint(0, 256, (2, 27))
    with torch.no_grad():
        expected = _model_logprobs(model, x)[:, prompt_len:]
    got = cached_logprobs(model, x, prompt_len)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "rope"])
@pytest.mark.parametrize("local_context", [2, 4])  # part of the previous patch, all of it
@pytest.mark.parametrize("prompt_len", [0, 3, 4, 11])
def test_generation_with_cross_patch_context_equals_the_model(pos, local_context, prompt_len):
    model = build_model(ModelConfig.tiny(pos=pos, local_context=local_context)).eval()
    x = torch.randint(0, 256, (2, 27))
    with torch.no_grad():
        expected = _model_logprobs(model, x)[:, prompt_len:]
    got = cached_logprobs(model, x, prompt_len)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_argmax_of_forward(arch):
    model = build_model(ModelConfig.tiny(arch=arch)).eval()
    prompt = bytes([0, 255, 7, 1, 2, 3, 9])
    out = list(generate(model, prompt, max_bytes=10, temperature=0))
    assert len(out) == 10 and all(0 <= b < 256 for b in out)
    x = torch.tensor([list(prompt) + out])
    with torch.no_grad():
        greedy = model(x).argmax(-1)[0, len(prompt) :]
    assert greedy.tolist() == out


def test_seed_makes_sampling_reproducible():
    model = build_model(ModelConfig.tiny())
    a = list(generate(model, b"abc", max_bytes=20, seed=3, top_k=50, top_p=0.9))
    b = list(generate(model, b"abc", max_bytes=20, seed=3, top_k=50, top_p=0.9))
    assert a == b and len(a) == 20
    assert model.training  # generate restores the mode


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0] + [-10.0] * 252])
    gen = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, 1.0, top_k=2, generator=gen)) for _ in range(200)}
    assert picks <= {0, 1}
    picks = {int(sample_next(logits, 1.0, top_p=0.5, generator=gen)) for _ in range(200)}
    assert picks == {0}


def test_stop_sequence_ends_generation_and_is_not_yielded():
    model = build_model(ModelConfig.tiny()).eval()
    full = bytes(generate(model, b"xy", max_bytes=30, temperature=0))
    stop = full[10:12]
    first = full.find(stop)
    out = bytes(generate(model, b"xy", max_bytes=30, temperature=0, stop=[b"\x00\x01\x02", stop]))
    assert out == full[:first]


def test_learned_positions_stop_at_seq_len():
    model = build_model(ModelConfig.tiny(seq_len=16))
    assert len(list(generate(model, b"0123456789", max_bytes=100))) == 6
    with pytest.raises(ValueError, match="seq_len"):
        generate(model, bytes(16), max_bytes=1)  # raises at the call, not at first next()


def test_caller_state_is_untouched_between_yields():
    model = build_model(ModelConfig.tiny(dropout=0.1)).train()
    for _ in generate(model, b"abc", max_bytes=9, seed=0):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert model.training


def test_kv_cache_grows_past_its_buffer():
    from mbtrain.model.layers import KVCache

    cache, ks = KVCache(), []
    for n in (3, 1, 70, 1, 1, 100):
        k = torch.randn(2, 4, n, 8)
        ks.append(k)
        got_k, got_v = cache.append(k, -k)
        torch.testing.assert_close(got_k, torch.cat(ks, dim=2), rtol=0, atol=0)
        torch.testing.assert_close(got_v, -torch.cat(ks, dim=2), rtol=0, atol=0)
    assert cache.length == 176


def test_long_decoding_equals_the_model():
    """Enough steps to grow the caches (global and baseline) past their first buffer."""
    for arch in ("megabyte", "transformer"):
        model = build_model(ModelConfig.tiny(arch=arch, seq_len=320)).eval()
        x = torch.randint(0, 256, (1, 300))
        with torch.no_grad():
            expected = _model_logprobs(model, x)[:, 5:]
        torch.testing.assert_close(cached_logprobs(model, x, 5), expected, rtol=0, atol=1e-5)
