"""AbsTopK and the sparsifier's top-k on the CPU: exact selections on the floats' bit patterns (numba).

For IEEE floats ``|x|`` orders like the bit pattern with the sign bit cleared, read as an integer
(the *key*, :func:`sparselens.kernels.reference.magnitude_key`: ``bits & 0x7FFFFFFF`` for fp32,
``& 0x7FFF`` for bf16/fp16), so one integer routine serves every float dtype. Every NaN gets the
key one above +inf: NaN counts as the largest magnitude (like ``torch.topk``) and NaNs tie.

A selection of the ``k`` largest keys finds the k-th largest key ``t`` by bisection on its bits
(one vectorised counting pass per bit, stopping as soon as exactly ``k`` keys are at or above the
candidate), then keeps every key above ``t`` and the lowest-index keys equal to ``t`` until ``k``
are kept: the reference's tie rule. AbsTopK selects each row on its own (rows may run in
parallel), so the result does not depend on the thread count; the sparsifier's per-matrix top-k
is one such selection over the flattened matrix, its protected entries scored below all others.

Compiled by numba on first use for each dtype width and cached on disk (``cache=True``); run
serially or on numba's threads by :func:`sparselens.kernels.numba_common.launch`.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Bool, Float
from numba import njit, prange
from torch import Tensor

from sparselens.kernels.numba_common import launch, thread_pool
from sparselens.kernels.reference import INT_VIEWS


@njit(inline="always")
def _key(bits, key_mask, nan_key):
    key = bits & key_mask
    return key if key < nan_key else nan_key


@njit(inline="always")
def _row_threshold(row, k, key_mask, nan_key, top_bit):
    """``(t, last)``: select the keys > ``t`` and the keys == ``t`` at indices ``<= last``. ``0 < k <= d``."""
    as_key = row.dtype.type  # casts keep the counting loops in the key's width: more SIMD lanes
    t = as_key(0)  # invariant: at least k keys are >= t (every key is >= 0)
    for b in range(top_bit, -1, -1):
        cand = as_key(t | (1 << b))
        n_ge = np.int32(0)
        for j in range(row.shape[0]):
            n_ge = np.int32(n_ge + np.int32(_key(row[j], key_mask, nan_key) >= cand))
        if n_ge >= k:
            t = cand
            if n_ge == k:  # exactly the keys >= cand: no tie to break
                return as_key(cand - 1), -1
    n_tied = np.int32(k)  # ties to keep: k minus the keys above t
    for j in range(row.shape[0]):
        n_tied = np.int32(n_tied - np.int32(_key(row[j], key_mask, nan_key) > t))
    for j in range(row.shape[0]):
        if _key(row[j], key_mask, nan_key) == t:
            n_tied -= 1
            if n_tied == 0:
                return t, j
    return t, -1  # unreachable: at least k keys are >= t


@njit(inline="always")
def _keep_from(row, start, stop, lo, key_mask, nan_key, keep_row, out_row):
    """For ``0 <= start <= j < stop``: keep ``row[j]`` (and copy it to ``out_row``) iff its key is ``>= lo``."""
    for j in range(np.uint64(start), np.uint64(stop)):  # an unsigned index: no wraparound check, SIMD
        kept = _key(row[j], key_mask, nan_key) >= lo
        keep_row[j] = kept
        out_row[j] = row[j] if kept else 0


@njit(inline="always")
def _abstopk_row(row, k, key_mask, nan_key, top_bit, out_row, keep_row):
    """One row of bit patterns: ``keep_row`` its top ``k`` keys, ``out_row = row`` there, else 0."""
    t, last = _row_threshold(row, k, key_mask, nan_key, top_bit)
    _keep_from(row, 0, last + 1, t, key_mask, nan_key, keep_row, out_row)
    _keep_from(row, last + 1, row.shape[0], row.dtype.type(t + 1), key_mask, nan_key, keep_row, out_row)


@njit(cache=True, nogil=True)
def _abstopk_rows(x, k, key_mask, nan_key, top_bit, out, keep):
    """:func:`_abstopk_row` for every row of ``x`` ``[rows d]``, in this thread."""
    for r in range(x.shape[0]):
        _abstopk_row(x[r], k, key_mask, nan_key, top_bit, out[r], keep[r])


@njit(parallel=True, cache=True, nogil=True)
def _abstopk_rows_parallel(x, k, key_mask, nan_key, top_bit, out, keep):
    """:func:`_abstopk_rows` with the rows spread over numba's threads."""
    for r in prange(x.shape[0]):
        _abstopk_row(x[r], k, key_mask, nan_key, top_bit, out[r], keep[r])


#: selections over more entries than this bracket the threshold from a sample first (:func:`_threshold`)
SAMPLED_MIN_NUMEL = 1 << 15
_SAMPLE = 4096


@njit(inline="always")
def _threshold(keys, k, key_mask, nan_key, top_bit):
    """:func:`_row_threshold`'s ``(t, last)`` for a long array, with far fewer passes over it.

    A strided sample of :data:`_SAMPLE` keys brackets the ``k``-th largest key between two sample
    order statistics around the expected rank (six standard deviations and 16 each side); one pass
    counts the keys above the bracket and collects those inside it (with their indices), and the
    exact bisection then runs on the few collected keys. Where the sample misleads (the count does
    not confirm the bracket, or too many keys fall inside it) the bisection runs on the whole array:
    the result is always exact and the same.
    """
    n = keys.shape[0]
    if n < SAMPLED_MIN_NUMEL:
        return _row_threshold(keys, k, key_mask, nan_key, top_bit)
    as_key = keys.dtype.type
    stride = n // _SAMPLE
    sample = np.empty(_SAMPLE, dtype=keys.dtype)
    for i in range(_SAMPLE):
        sample[i] = _key(keys[i * stride], key_mask, nan_key)
    expected = k * _SAMPLE / n  # sample keys expected at or above the threshold
    margin = 6.0 * np.sqrt(expected + 1.0) + 16.0
    r_hi, r_lo = int(expected - margin), int(expected + margin) + 1
    if r_hi < 1 or r_lo > _SAMPLE:
        return _row_threshold(keys, k, key_mask, nan_key, top_bit)
    hi_cut = as_key(_row_threshold(sample, r_hi, key_mask, nan_key, top_bit)[0] + 1)  # expect < k keys at or above
    lo = _row_threshold(sample, r_lo, key_mask, nan_key, top_bit)[0]  # expect >= k keys at or above
    cap = int(4.0 * margin * n / _SAMPLE) + 1024
    inside = np.empty(cap, dtype=keys.dtype)
    where = np.empty(cap, dtype=np.int64)
    n_above, n_inside = 0, 0
    for j in range(n):
        key = _key(keys[j], key_mask, nan_key)
        if key >= hi_cut:
            n_above += 1
        elif key >= lo:
            if n_inside == cap:
                return _row_threshold(keys, k, key_mask, nan_key, top_bit)
            inside[n_inside] = key
            where[n_inside] = j
            n_inside += 1
    if n_above >= k or n_above + n_inside < k:  # the bracket does not hold the k-th key
        return _row_threshold(keys, k, key_mask, nan_key, top_bit)
    if n_above + n_inside == k:  # exactly the keys >= lo
        return as_key(lo - 1), -1
    # fewer than all collected keys: a threshold found among them lies above the next one, >= lo
    t, last = _row_threshold(inside[:n_inside], k - n_above, key_mask, nan_key, top_bit)
    return t, (where[last] if last >= 0 else last)


@njit(cache=True, nogil=True)
def _fill_mask(x, protected, k, key_mask, nan_key, top_bit, keep):
    """``keep = protected`` plus the ``k`` largest keys of the other entries, lowest index on ties; flat ``[n]``.

    ``0 < k <= n - count(protected)``. One selection over the whole matrix, serial (each counting
    pass is short and vectorised; parallel regions would cost more than they save).
    """
    as_key = x.dtype.type
    score = np.empty_like(x)  # key + 1, or 0 where protected: below every other entry
    for i in range(x.shape[0]):
        score[i] = as_key(0) if protected[i] else as_key(_key(x[i], key_mask, nan_key) + 1)
    # scores are keys already: the mask keeps them, the clamp is the largest score (NaN's)
    t, last = _threshold(score, k, key_mask, as_key(nan_key + 1), top_bit)
    for i in range(np.uint64(0), np.uint64(last + 1)):
        keep[i] = (score[i] >= t) | (protected[i] != 0)
    t_after = as_key(t + 1)
    for i in range(np.uint64(last + 1), np.uint64(x.shape[0])):
        keep[i] = (score[i] >= t_after) | (protected[i] != 0)


@njit(cache=True, nogil=True)
def _masked(grad, keep, out):
    """``out = grad`` where ``keep``, else 0, on bit patterns (the backward); flat ``[n]``."""
    for i in range(grad.shape[0]):
        out[i] = grad[i] if keep[i] else 0


@njit(parallel=True, cache=True, nogil=True)
def _masked_parallel(grad, keep, out):
    """:func:`_masked` spread over numba's threads."""
    for i in prange(grad.shape[0]):
        out[i] = grad[i] if keep[i] else 0


def _keys_of(dtype: torch.dtype) -> tuple[torch.dtype, np.generic, np.generic, int]:
    """``(integer view, key mask, NaN's key, top bit of a key)`` for a float dtype, as numba-typed scalars."""
    int_dtype, inf_bits = INT_VIEWS[dtype]
    key_types: dict[torch.dtype, type[np.signedinteger]] = {torch.int16: np.int16, torch.int32: np.int32, torch.int64: np.int64}
    as_key = key_types[int_dtype]
    key_mask = torch.iinfo(int_dtype).max
    return int_dtype, as_key(key_mask), as_key(inf_bits + 1), key_mask.bit_length() - 1


def _bits(t: Tensor) -> np.ndarray:
    """The bit patterns of a contiguous CPU tensor as a numpy integer array (shared memory)."""
    return t.view(INT_VIEWS[t.dtype][0]).numpy() if t.is_floating_point() else t.view(torch.uint8).numpy()


def abstopk_forward(x: Float[Tensor, "... d"], k: int) -> tuple[Float[Tensor, "... d"], Bool[Tensor, "... d"]]:
    """``(out, keep)``: ``x`` with all but its ``k`` largest-``|x|`` entries per row zeroed, and the mask.

    ``x``: a CPU float tensor, any strides; ``0 <= k <= d`` (not checked). Both results contiguous.
    """
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    if k == 0 or rows.numel() == 0:
        return torch.zeros_like(x, memory_format=torch.contiguous_format), torch.zeros(x.shape, dtype=torch.bool)
    out = torch.empty_like(rows)
    keep = torch.empty(rows.shape, dtype=torch.bool)
    _, key_mask, nan_key, top_bit = _keys_of(x.dtype)
    args = (_bits(rows), k, key_mask, nan_key, top_bit, _bits(out), _bits(keep))
    launch(_abstopk_rows, _abstopk_rows_parallel, rows.numel(), *args)
    return out.view(x.shape), keep.view(x.shape)


def masked_grad(grad: Float[Tensor, "... d"], keep: Bool[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """``grad`` where ``keep``, else 0 (``grad`` any strides, ``keep`` contiguous of the same shape)."""
    grad = grad.contiguous()
    out = torch.empty_like(grad)
    if grad.numel() > 0:
        args = (_bits(grad).reshape(-1), _bits(keep).reshape(-1), _bits(out).reshape(-1))
        launch(_masked, _masked_parallel, grad.numel(), *args)
    return out


@njit(cache=True, nogil=True)
def _transpose_into(src, dst):
    """``dst = src.T`` for 2-D arrays (``dst`` ``[cols rows]`` preallocated)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[j, i] = src[i, j]


class _MaskPlan:
    """One :func:`weight_topk_mask`: its tensors made in the calling thread (torch allocations and
    copies), its selection run by :meth:`run` with numba and numpy alone, so that several plans
    can run on worker threads at once (no torch op there, so no second OpenMP team)."""

    def __init__(self, w: Float[Tensor, "rows cols"], k: int, floor: int, floor_dim: int):
        slices = (w.detach() if floor_dim == 0 else w.detach().T).contiguous()  # [n_slices, slice_len]
        self.floor = min(floor, slices.shape[1])
        n_protected = slices.shape[0] * self.floor
        self.n_fill = max(0, k - n_protected)
        self.keep_all = self.n_fill > 0 and self.n_fill == w.numel() - n_protected  # every unprotected entry kept
        self.numel = w.numel()
        self.slices, self.floor_out = slices, torch.empty_like(slices)
        self.protected_slices = torch.empty(slices.shape, dtype=torch.bool)
        self.protected = torch.empty(w.shape, dtype=torch.bool) if floor_dim == 1 else self.protected_slices
        self.flat = w.detach().contiguous().view(-1)
        self.mask = torch.empty(w.shape, dtype=torch.bool)
        self.keys = _keys_of(w.dtype)[1:]

    def run(self) -> None:
        protected_slices, protected, mask = _bits(self.protected_slices), _bits(self.protected), _bits(self.mask)
        if self.floor == 0 or self.numel == 0:
            protected_slices[...] = 0
        else:
            _abstopk_rows(_bits(self.slices), self.floor, *self.keys, _bits(self.floor_out), protected_slices)
        if self.protected is not self.protected_slices:  # floor_dim 1: the floor was taken on columns
            _transpose_into(protected_slices, protected)
        if self.keep_all:
            mask[...] = 1
        elif self.n_fill == 0:
            mask[...] = protected
        else:
            _fill_mask(_bits(self.flat), protected.reshape(-1), self.n_fill, *self.keys, mask.reshape(-1))


def weight_topk_mask(w: Float[Tensor, "rows cols"], k: int, floor: int, floor_dim: int) -> Bool[Tensor, "rows cols"]:
    """:func:`sparselens.kernels.reference.weight_topk_mask` on a CPU tensor (arguments already checked)."""
    plan = _MaskPlan(w, k, floor, floor_dim)
    plan.run()
    return plan.mask


def weight_topk_masks(jobs: list[tuple[Tensor, int, int, int]], n_threads: int) -> list[Bool[Tensor, "rows cols"]]:
    """:func:`weight_topk_mask` of each ``(w, k, floor, floor_dim)``, on ``n_threads`` threads at once
    (largest matrix first); the same masks as one at a time."""
    plans = [_MaskPlan(*job) for job in jobs]
    if n_threads > 1 and len(plans) > 1:
        list(thread_pool(n_threads).map(_MaskPlan.run, sorted(plans, key=lambda plan: -plan.numel)))
    else:
        for plan in plans:
            plan.run()
    return [plan.mask for plan in plans]
