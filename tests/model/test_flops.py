import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from mbtrain.model import ModelConfig, build_model, count_parameters, flops_per_byte
from mbtrain.model.flops import block_matmul_params, paper_rule_flops

VARIANTS = [
    {},
    {"pos": "rope"},
    {"norm": "rmsnorm", "activation": "swiglu"},
    {"local_context": 3},
    {"tie_local_embedding": False},
    {"patch_size": 8, "global_dim": 8, "mlp_ratio": 2.5},
]


@pytest.mark.parametrize("arch", ["megabyte", "transformer"])
@pytest.mark.parametrize("over", VARIANTS)
def test_parameter_count_formula(arch, over):
    cfg = ModelConfig.tiny(arch=arch, **over)
    model = build_model(cfg)
    assert count_parameters(cfg) == sum(p.numel() for p in model.parameters())


def test_parameter_count_of_the_paper_default_without_building():
    cfg = ModelConfig()
    n = count_parameters(cfg)
    # 14 global blocks of width 2048 and 18 local blocks of width 1024: about 0.9B.
    assert 0.85e9 < n < 0.95e9


def _cpu_sdpa(q, k, v, *args, out_shape=None, **kwargs):
    # torch's counter knows the CUDA attention kernels but not the CPU one.
    return sdpa_flop_count(q, k, v)


@pytest.mark.parametrize("arch", ["megabyte", "transformer"])
@pytest.mark.parametrize("over", VARIANTS[:4])
def test_flops_match_the_counted_module_shapes(arch, over):
    cfg = ModelConfig.tiny(arch=arch, **over)
    model = build_model(cfg).eval()
    x = torch.randint(0, 256, (2, cfg.seq_len))
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x)
    counted = counter.get_total_flops()
    assert counted == pytest.approx(flops_per_byte(cfg, training=False) * x.numel(), rel=1e-9)
    assert flops_per_byte(cfg, training=True) == 3 * flops_per_byte(cfg, training=False)


def test_paper_rule():
    """Forward FLOPs ~ 2T(m_global/P + m_local) for MegaByte vs 2Tm for a transformer."""
    cfg = ModelConfig(seq_len=1024)  # short T: attention is a small share
    ours = flops_per_byte(cfg, training=False) * cfg.seq_len
    assert ours == pytest.approx(paper_rule_flops(cfg), rel=0.1)
    m_global = cfg.global_layers * block_matmul_params(cfg, cfg.global_width)
    m_local = cfg.local_layers * block_matmul_params(cfg, cfg.local_dim)
    assert paper_rule_flops(cfg) == 2 * cfg.seq_len * (m_global / cfg.patch_size + m_local)
    base = ModelConfig(arch="transformer", seq_len=256)  # attention ~ T / (6 dim) of the total
    m = base.layers * block_matmul_params(base, base.dim)
    assert flops_per_byte(base, training=False) * 256 == pytest.approx(2 * 256 * m, rel=0.1)
    # At equal parameter count MegaByte spends far fewer FLOPs per byte (global model / P).
    base = ModelConfig(arch="transformer", seq_len=1024)
    ratio = count_parameters(cfg) / count_parameters(base)
    assert flops_per_byte(cfg) < flops_per_byte(base) * ratio
