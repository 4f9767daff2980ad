"""Incremental decoding with KV caches, sampling, and a teacher-forced check of it.

MegaByte decodes the way the paper describes: one global step per patch, then P local steps.
The global model keeps a KV cache across patches; the local model keeps one within the
current patch and starts a fresh one at each patch boundary. A byte therefore costs one
local step plus 1/P of a global step, instead of a forward pass over the whole context.

The prompt may have any length: its complete patches are fed to the global model in one
prefill, and the bytes of its unfinished patch to the local model in one prefill.

`cached_logprobs` drives the same decoder teacher-forced, so tests can check that decoding
computes exactly what `model(x)` computes.

With `pos: learned`, a model has no position beyond `seq_len - 1`, so generation stops when
the context holds seq_len bytes; with `pos: rope` it may go on (quality beyond the trained
length is not promised).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mbtrain.model.baseline import ByteTransformer
from mbtrain.model.megabyte import MegaByte


class _MegaByteDecoder:
    """Decoding state of a MegaByte model; `logits` always predict byte number `n`."""

    def __init__(self, model: MegaByte) -> None:
        self.m = model
        self.p = model.patch_size
        self.limit = model.cfg.seq_len if model.global_pos is not None else None
        self.global_caches = model.new_global_caches()
        self.local_caches = model.new_local_caches()
        self.n = 0

    def _global(self, inputs: Tensor) -> None:
        """Run new global positions (B, n, P*D_G); keep the last one's local slices."""
        h = self.m.global_model(inputs, self.global_caches)
        self.slices = self.m.global_to_local_slices(h[:, -1:])[:, 0]  # (B, P, D_L)

    def _local(self, inputs: Tensor) -> Tensor:
        h = self.m.local_model(inputs, self.local_caches)  # (B, r, D_L)
        return self.m.head(self.m.local_model.norm(h[:, -1]))  # (B, 256)

    def _context(self, previous: Tensor | None, batch: int) -> list[Tensor]:
        """Cross-patch context of a new patch (`model.local_context` bytes of the previous
        patch, the pad without one), fed to the fresh local cache before the patch's bytes."""
        r = self.m.cfg.local_context
        if not r:
            return []
        if previous is None:
            return [self.m.local_pad.expand(batch, r, -1)]
        return [self.m.local_embed(previous[:, -r:])]

    def prefill(self, prompt: Tensor) -> Tensor:
        """Feed the prompt (B, L); return logits (B, 256) for byte L."""
        b, length = prompt.shape
        self.m._check(prompt)
        full = length // self.p  # complete patches of the prompt
        pad = self.m.global_pad.expand(b, 1, -1)
        inputs = [pad]
        if full:
            inputs.append(self.m.embed_patches(prompt[:, : full * self.p]))
        self._global(torch.cat(inputs, dim=1))  # global positions 0..full
        cur = prompt[:, full * self.p :]  # (B, r): bytes of the unfinished patch
        self.cur_len = cur.shape[1]
        self.patch = list(cur.unbind(1))
        local = [self.m.local_pad.expand(b, 1, -1)]
        if self.cur_len:
            local.append(self.m.local_embed(cur))
        self.n = length
        current = self.slices[:, : self.cur_len + 1] + torch.cat(local, dim=1)
        previous = prompt[:, (full - 1) * self.p : full * self.p] if full else None
        return self._local(torch.cat([*self._context(previous, b), current], dim=1))

    def step(self, byte: Tensor) -> Tensor:
        """Append byte n (B,); return logits (B, 256) for byte n + 1."""
        self.patch.append(byte)
        self.n += 1
        if len(self.patch) == self.p:  # patch complete: one global step, fresh local cache
            patch = torch.stack(self.patch, dim=1)  # (B, P)
            self._global(self.m.embed_patches(patch, offset=self.n - self.p))
            self.patch = []
            self.local_caches = self.m.new_local_caches()
            inp = self.m.local_pad.expand(byte.shape[0], 1, -1)
            ctx = self._context(patch, byte.shape[0])
        else:
            inp = self.m.local_embed(byte)[:, None]
            ctx = []
        r = len(self.patch)
        return self._local(torch.cat([*ctx, self.slices[:, r : r + 1] + inp], dim=1))


class _TransformerDecoder:
    """Decoding state of the baseline; `logits` always predict byte number `n`."""

    def __init__(self, model: ByteTransformer) -> None:
        self.m = model
        self.limit = model.cfg.seq_len if model.pos is not None else None
        self.caches = model.new_global_caches()
        self.n = 0

    def _run(self, h: Tensor) -> Tensor:
        h = self.m.global_model(h, self.caches)
        return self.m.head(self.m.global_model.norm(h[:, -1]))

    def prefill(self, prompt: Tensor) -> Tensor:
        b, length = prompt.shape
        self.m._check(prompt)
        self.n = length
        return self._run(self.m.embed_inputs(prompt, b, 0, length + 1))

    def step(self, byte: Tensor) -> Tensor:
        self.n += 1
        return self._run(self.m.embed_inputs(byte[:, None], byte.shape[0], self.n, 1))


def make_decoder(model: nn.Module) -> _MegaByteDecoder | _TransformerDecoder:
    if isinstance(model, MegaByte):
        return _MegaByteDecoder(model)
    if isinstance(model, ByteTransformer):
        return _TransformerDecoder(model)
    raise TypeError(f"cannot decode with a {type(model).__name__}")


def _as_bytes(data: bytes | Sequence[int] | Tensor, device: torch.device) -> Tensor:
    if isinstance(data, Tensor):
        t = data.to(device=device, dtype=torch.long)
    else:
        t = torch.tensor(list(data), dtype=torch.long, device=device)
    return t.reshape(1, -1) if t.dim() == 1 else t


@torch.no_grad()
def cached_logprobs(model: nn.Module, x: Tensor, prompt_len: int = 0) -> Tensor:
    """Log-probs (B, T - prompt_len) of x[:, t] for t >= prompt_len, via the cached decoder.

    The first `prompt_len` bytes go through prefill, the rest one step at a time; the result
    must equal `log_softmax(model(x))` gathered at x.
    """
    dec = make_decoder(model)
    logits = dec.prefill(x[:, :prompt_len])
    out = []
    for t in range(prompt_len, x.shape[1]):
        out.append(F.log_softmax(logits.float(), -1).gather(-1, x[:, t : t + 1])[:, 0])
        if t + 1 < x.shape[1]:
            logits = dec.step(x[:, t])
    return torch.stack(out, dim=1)


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One byte (B,) from logits (B, 256): greedy at temperature 0, else top-k / top-p sampling."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a byte when the bytes more likely than it already reach top_p (keeps >= 1).
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def check_sampling(
    max_bytes: int, temperature: float, top_k: int | None, top_p: float | None
) -> None:
    """ValueError naming the first sampling argument of `generate` out of its range."""
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise ValueError(f"max_bytes: must be an integer >= 0, got {max_bytes!r}")
    # NaN passes no comparison, so each range is written as what must hold.
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or not (
        temperature >= 0
    ):
        raise ValueError(
            f"temperature: must be a finite number >= 0 (0: greedy), got {temperature!r}"
        )
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k: must be an integer >= 1 (or None: no limit), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p: must be a number in (0, 1] (or None: no limit), got {top_p!r}")


def generate(
    model: nn.Module,
    prompt: bytes | Sequence[int] | Tensor = b"",
    max_bytes: int = 256,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: bytes | Sequence[bytes] | None = None,
) -> Iterator[int]:
    """Yield generated byte values (ints 0..255) one by one after `prompt`.

    Stops after `max_bytes`, when the context is full (`pos: learned`), or when the output
    ends with a stop sequence; the stop sequence itself is not yielded (bytes that could
    start one are held back until they cannot). Arguments out of range raise ValueError
    here, at the call (`check_sampling`).
    """
    check_sampling(max_bytes, temperature, top_k, top_p)
    device = next(model.parameters()).device
    x = _as_bytes(prompt, device)
    if x.shape[0] != 1:
        raise ValueError("generate takes one prompt")
    stops = [stop] if isinstance(stop, (bytes, bytearray)) else list(stop or [])
    stops = [bytes(s) for s in stops if len(s)]
    gen = None
    if seed is not None:
        gen = torch.Generator(device=device).manual_seed(seed)
    dec = make_decoder(model)
    if dec.limit is not None and x.shape[1] >= dec.limit:
        raise ValueError(
            f"prompt of {x.shape[1]} bytes leaves no room in model.seq_len ({dec.limit})"
        )
    # A separate generator function, so that bad arguments raise here, at the call.
    return _generate(model, dec, x, max_bytes, temperature, top_k, top_p, gen, stops)


def _generate(
    model: nn.Module,
    dec: _MegaByteDecoder | _TransformerDecoder,
    x: Tensor,
    max_bytes: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    gen: torch.Generator | None,
    stops: list[bytes],
) -> Iterator[int]:
    logits = _quiet(model, dec.prefill, x)
    pending = bytearray()
    for i in range(max_bytes):
        byte = sample_next(logits, temperature, top_k, top_p, gen)
        pending.append(int(byte[0]))
        hit = next((s for s in stops if pending.endswith(s)), None)
        if hit is not None:
            yield from pending[: len(pending) - len(hit)]
            return
        keep = _partial_stop(pending, stops)
        yield from pending[: len(pending) - keep]
        del pending[: len(pending) - keep]
        if i + 1 == max_bytes or (dec.limit is not None and dec.n + 1 >= dec.limit):
            break
        logits = _quiet(model, dec.step, byte)
    yield from pending


def _quiet(model: nn.Module, fn: Callable[..., Tensor], *args: Tensor) -> Tensor:
    """Run fn in eval mode without autograd, restoring the caller's mode before returning.

    The caller's code runs between the yields of `generate`, so no grad-mode or train/eval
    change may leak out of a step.
    """
    if not model.training:  # the usual case; model.train() walks every module, skip it
        with torch.inference_mode():
            return fn(*args)
    model.eval()
    try:
        with torch.inference_mode():
            return fn(*args)
    finally:
        model.train(True)


def _partial_stop(buf: bytearray, stops: list[bytes]) -> int:
    """Length of the longest tail of buf that is a proper prefix of a stop sequence."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(buf)), best, -1):
            if buf.endswith(s[:n]):
                best = n
                break
    return best
