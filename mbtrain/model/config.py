"""The model's typed config.

One dataclass for both architectures (`arch: megabyte | transformer`), because the
two share their blocks and most knobs (norm, activation, positions, dropout, init) and a
run compares them side by side. The MegaByte sizes are `global_*` / `local_*`; the plain
byte-level baseline uses `dim` / `layers` / `heads` and ignores the MegaByte-only fields
(and MegaByte ignores the baseline's), so one config file can switch `arch` alone.

Defaults are the paper's text setting (Yu et al., 2023, Table 2/14): P = 8, a global
model of 14 layers at width 2048 (so D_G = 2048 / 8 = 256 per byte), a local model of 18
layers at width 1024, T = 8192, pre-norm, dropout 0.1 and truncated-normal init with
std 0.006.

`validate()` returns every problem at once (the lead's config layer joins them into one
`ConfigError`), with messages of the form
`"model.patch_size: must divide model.seq_len (8192), got 7"`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from mbtrain.config.checks import Checks

ARCHS = ("megabyte", "transformer")
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "swiglu")
POSITIONS = ("learned", "rope")


@dataclass
class ModelConfig:
    """Sizes and choices of a MegaByte model or of the byte-level baseline."""

    arch: str = "megabyte"
    """Architecture: "megabyte" (global + local model) or "transformer" (byte-level baseline)."""
    seq_len: int = 8192
    """Training sequence length T in bytes; the longest input for `pos: learned`."""
    patch_size: int = 8
    """Patch size P in bytes (MegaByte only); must divide seq_len."""
    global_dim: int = 256
    """D_G: global embedding size per byte; the global model's width is patch_size * global_dim."""
    global_layers: int = 14
    """Number of transformer blocks of the global model."""
    global_heads: int = 16
    """Attention heads of the global model; must divide patch_size * global_dim."""
    local_dim: int = 1024
    """D_L: width of the local model."""
    local_layers: int = 18
    """Number of transformer blocks of the local model."""
    local_heads: int = 16
    """Attention heads of the local model; must divide local_dim."""
    dim: int = 1024
    """Width of the byte-level baseline (arch: transformer only)."""
    layers: int = 24
    """Number of blocks of the byte-level baseline (arch: transformer only)."""
    heads: int = 16
    """Attention heads of the byte-level baseline; must divide dim (arch: transformer only)."""
    mlp_ratio: float = 4.0
    """MLP hidden size = int(mlp_ratio * width), for gelu and swiglu alike (swiglu: 1.5x the MLP params)."""
    norm: str = "layernorm"
    """Normalisation: "layernorm" (paper) or "rmsnorm"."""
    norm_eps: float = 1e-5
    """Epsilon of the norms."""
    activation: str = "gelu"
    """MLP activation: "gelu" (paper) or "swiglu" (adds a gate_proj)."""
    pos: str = "learned"
    """Positions: "learned" absolute per byte (paper) or "rope" (patch index globally, byte-in-patch locally)."""
    rope_theta: float = 10000.0
    """RoPE base frequency (pos: rope only)."""
    dropout: float = 0.1
    """Dropout on embeddings, residual branches and attention weights during training."""
    doc_mask: bool = True
    """Document masking of packed windows: each document attends only to itself, starts from
    the pad patch, counts positions from its start; the loader aligns documents to patches."""
    tie_local_embedding: bool = True
    """Share the local byte embedding with the output head, as the paper's output layer does
    (baseline: its embedding with its head)."""
    init_std: float = 0.006
    """Std of the truncated-normal init (cut at +-3 std) of every weight matrix and embedding."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward (torch.utils.checkpoint, use_reentrant=False)."""
    local_context: int = 0
    """Bytes before each patch the local model also attends to (paper 2.3.2, cross-patch
    attention), 0..patch_size; costs (r+P)/P of the local model's compute."""
    local_chunk: int = 0
    """Patches per chunk of the local model (0: all B*K patches at once); same results, less memory."""
    loss_chunk_size: int = 4096
    """Positions per chunk of head + cross-entropy in `loss`, so [B, T, 256] logits never exist at once."""

    @classmethod
    def tiny(cls, **overrides: Any) -> ModelConfig:
        """A ~150K-parameter model for CPU tests (T=64, P=4, no dropout); overrides apply last."""
        base = cls(
            seq_len=64,
            patch_size=4,
            global_dim=16,
            global_layers=2,
            global_heads=4,
            local_dim=32,
            local_layers=2,
            local_heads=4,
            dim=32,
            layers=2,
            heads=4,
            dropout=0.0,
            init_std=0.02,
            loss_chunk_size=64,
        )
        return replace(base, **overrides)

    @property
    def stage_blocks(self) -> int:
        """Blocks of the stack a pipeline splits: the global model's (the baseline's own)."""
        return self.global_layers if self.arch == "megabyte" else self.layers

    @property
    def global_width(self) -> int:
        """Width of the global model: patch_size * global_dim."""
        return self.patch_size * self.global_dim

    def validate(self) -> list[str]:
        """Return every problem of this config as a message; empty when it is valid."""
        c = Checks("model")

        def positive(name: str) -> bool:
            value = getattr(self, name)
            return c.integer(name, value) and c.above(name, value, 0)

        def heads(name: str, width: int, width_desc: str) -> None:
            h = getattr(self, name)
            if c.require(width % h == 0, name, f"must divide {width_desc} ({width}), got {h}"):
                c.require(
                    self.pos != "rope" or (width // h) % 2 == 0,
                    name,
                    f"head dim {width_desc} / {name} = {width // h} must be even for pos: rope",
                )

        c.one_of("arch", self.arch, ARCHS)
        c.one_of("norm", self.norm, NORMS)
        c.one_of("activation", self.activation, ACTIVATIONS)
        c.one_of("pos", self.pos, POSITIONS)
        positive("seq_len")
        positive("loss_chunk_size")
        if self.arch == "megabyte" and isinstance(self.patch_size, int):
            c.require(
                isinstance(self.local_context, int) and 0 <= self.local_context <= self.patch_size,
                "local_context",
                f"must be an integer in [0, model.patch_size ({self.patch_size})], "
                f"got {self.local_context!r}",
            )
        if c.integer("local_chunk", self.local_chunk):
            c.at_least("local_chunk", self.local_chunk, 0)
        c.in_range("dropout", self.dropout, 0, 1, high_open=True)
        for name in ("mlp_ratio", "init_std", "norm_eps", "rope_theta"):
            c.above(name, getattr(self, name), 0)
        if self.arch == "megabyte":
            names = ("patch_size", "global_dim", "local_dim", "global_layers", "global_heads")
            ok = [positive(n) for n in (*names, "local_layers", "local_heads")]
            if all(ok):
                if isinstance(self.seq_len, int) and self.seq_len > 0:
                    c.require(
                        self.seq_len % self.patch_size == 0,
                        "patch_size",
                        f"must divide model.seq_len ({self.seq_len}), got {self.patch_size}",
                    )
                heads("global_heads", self.global_width, "model.patch_size * model.global_dim")
                heads("local_heads", self.local_dim, "model.local_dim")
        elif self.arch == "transformer" and all([positive(n) for n in ("dim", "layers", "heads")]):
            heads("heads", self.dim, "model.dim")
        return c.errors

    def architecture(self) -> dict[str, Any]:
        """The keys that decide the weights' shapes and what they compute: a checkpoint of
        another architecture cannot continue as this one. Dropout, chunking, checkpointing,
        document masking, init and rope's base may change between runs of one model."""
        keys = ["arch", "mlp_ratio", "norm", "activation", "pos", "tie_local_embedding"]
        if self.arch == "megabyte":
            keys += ["patch_size", "global_dim", "global_layers", "global_heads"]
            keys += ["local_dim", "local_layers", "local_heads", "local_context"]
        else:
            keys += ["dim", "layers", "heads"]
        if self.pos == "learned":
            keys.append("seq_len")  # the size of the position table
        return {k: getattr(self, k) for k in keys}

    def architecture_changes(self, saved: dict[str, Any]) -> list[str]:
        """`model.key: saved -> now` for each architecture key that differs from `saved` (a
        checkpoint's `model` section); keys the saved config lacks count as their defaults."""
        defaults = ModelConfig()
        out = []
        for key, now in self.architecture().items():
            then = saved.get(key, getattr(defaults, key))
            if then != now:
                out.append(f"model.{key}: {then!r} -> {now!r}")
        return out

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields, for strict config loading."""
        return [f.name for f in fields(cls)]
