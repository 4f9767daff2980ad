"""Collating prepared samples into the model's windows: bytes, masks, document layout.

A prepared sample is a window of up to the prepared seq_len bytes plus its document pieces
(`windows.py`). A batch of them is laid out into `n * seq_len` bytes per sample (patch-aligned
documents for document masking: `collate_aligned`), then cut into n windows of the model's
seq_len (`cut_windows`): window j of every sample forms micro-batch j. With a dataset prepared
at the model's length, n = 1 and the layout is the sample itself.
"""

from __future__ import annotations

import numpy as np
import torch

from mbtrain.errors import DataError


def collate_aligned(samples: list[dict], seq_len: int, align: int) -> dict[str, torch.Tensor]:
    """Like `collate`, with every document piece that starts a document laid out on a multiple
    of `align` (MegaByte's patch size, for document masking: every patch then belongs to one
    document). The gap after a document (at most align-1 bytes) is padding, masked out of the
    loss; what no longer fits at the end of a window (at most align-1 bytes per document in
    it) is dropped from this step: a window of several short documents loses a little,
    a window inside one long document nothing. `dropped` counts those bytes."""
    b = len(samples)
    x = np.zeros((b, seq_len), np.int64)
    seg = np.full((b, seq_len), -1, np.int64)
    doc_start = np.zeros((b, seq_len), np.bool_)
    dropped = 0
    for i, s in enumerate(samples):
        data = np.frombuffer(s["data"], np.uint8)
        pos = src = 0
        for j, (ln, off) in enumerate(zip(s["lengths"], s["offsets"])):
            ln, off = int(ln), int(off)
            if j:
                pos = -(-pos // align) * align
            take = max(0, min(ln, seq_len - pos))
            x[i, pos : pos + take] = data[src : src + take]
            seg[i, pos : pos + take] = j
            if take and off == 0:
                doc_start[i, pos] = True
            dropped += ln - take
            pos += take
            src += ln
    return {
        "x": torch.from_numpy(x),
        "mask": torch.from_numpy(seg >= 0),
        "doc_start": torch.from_numpy(doc_start),
        "segment_ids": torch.from_numpy(seg),
        "dropped": torch.tensor(dropped),
    }


def collate(samples: list[dict], seq_len: int) -> dict[str, torch.Tensor]:
    """Pad windows to seq_len; masks from the recorded document pieces.

    x: (B, T) int64 byte values, 0 at padding; mask: (B, T) False at padding; doc_start: (B, T)
    True at the first byte of a document; segment_ids: (B, T) index of the document piece in
    the window, -1 at padding (pieces of different documents never attend to each other if the
    model masks by segment).

    No Python loop per piece or per byte: the windows are joined into one byte string, segment
    ids and document starts are computed for that string from the concatenated piece lengths,
    and full windows (every packed window but a part's last) are reshaped, not copied row by row.
    """
    b = len(samples)
    datas = [s["data"] for s in samples]
    ns = np.fromiter(map(len, datas), np.int64, b)
    if b and ns.max() > seq_len:
        raise DataError(f"sample of {int(ns.max())} bytes exceeds seq_len {seq_len}")
    flat = np.frombuffer(b"".join(datas), np.uint8)
    lengths = [np.asarray(s["lengths"], np.int64) for s in samples]
    counts = np.fromiter(map(len, lengths), np.int64, b)
    lens = np.concatenate(lengths) if b else np.zeros(0, np.int64)
    offs = np.concatenate([np.asarray(s["offsets"], np.int64) for s in samples]) if b else lens
    if int(lens.sum()) != len(flat):
        raise DataError("sample pieces do not add up to the window length")
    first = np.cumsum(counts) - counts  # index of each sample's first piece
    piece_j = np.arange(len(lens)) - np.repeat(first, counts)  # piece index within its window
    seg_flat = np.repeat(piece_j, lens)
    start_flat = np.zeros(len(flat), np.bool_)
    start_flat[(np.cumsum(lens) - lens)[offs == 0]] = True
    if b and ns.min() == seq_len:
        x = flat.astype(np.int64).reshape(b, seq_len)
        mask = np.ones((b, seq_len), np.bool_)
        seg = seg_flat.reshape(b, seq_len)
        doc_start = start_flat.reshape(b, seq_len)
    else:
        x = np.zeros((b, seq_len), np.int64)
        mask = np.arange(seq_len) < ns[:, None]
        seg = np.full((b, seq_len), -1, np.int64)
        doc_start = np.zeros((b, seq_len), np.bool_)
        pos = 0
        for i, n in enumerate(ns.tolist()):
            x[i, :n] = flat[pos : pos + n]
            seg[i, :n] = seg_flat[pos : pos + n]
            doc_start[i, :n] = start_flat[pos : pos + n]
            pos += n
    return {
        "x": torch.from_numpy(x),
        "mask": torch.from_numpy(mask),
        "doc_start": torch.from_numpy(doc_start),
        "segment_ids": torch.from_numpy(seg),
    }


def cut_windows(batch: dict[str, torch.Tensor], windows: int) -> dict[str, torch.Tensor]:
    """(B, n*T) tensors of a collated batch -> (n, B, T): window j of every sample is
    micro-batch j (B different samples per micro-batch). Scalars (`dropped`) stay as they are."""
    out = {}
    for key, value in batch.items():
        if value.dim() == 2:
            b, length = value.shape
            value = value.reshape(b, windows, length // windows).transpose(0, 1).contiguous()
        out[key] = value
    return out


class Collate:
    """Picklable collate_fn for DataLoader workers: a batch of prepared samples laid out into
    `windows` windows of `seq_len` bytes each (one window when the dataset was prepared at the
    model's length)."""

    def __init__(self, seq_len: int, align: int = 1, windows: int = 1):
        self.seq_len, self.align, self.windows = seq_len, align, windows

    def __call__(self, samples):
        capacity = self.seq_len * self.windows
        if self.align > 1:
            batch = collate_aligned(samples, capacity, self.align)
        else:
            batch = collate(samples, capacity)
        return cut_windows(batch, self.windows)


def windows_per_sample(prepared: int, seq_len: int) -> int:
    """How many windows of the model's `seq_len` one prepared sample of `prepared` bytes gives
    (the last one partly padded when it does not divide)."""
    return -(-prepared // seq_len)
