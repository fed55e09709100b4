"""Kernels: every Triton kernel (under TRITON_INTERPRET=1 on CPU) and numba CPU kernel against its
torch reference, the references against brute-force definitions, the dispatcher, SparseLinear, and
hostile inputs.

Selections (abstopk, weight_topk_mask) must match exactly; arithmetic within the stated tolerances.
Shapes are tiny because the interpreter runs each Triton program in Python.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton (conftest sets it first)

import logging  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import randomize, tiny_config  # noqa: E402
from torch import nn  # noqa: E402

from sparselens import HookedSparseTransformer, kernels  # noqa: E402
from sparselens.kernels import dispatch, ops, reference  # noqa: E402
from sparselens.kernels.csr import CSRWeight  # noqa: E402
from sparselens.kernels.sparsify import CPU_CSR_MAX_DENSITY  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def use_triton(monkeypatch):
    monkeypatch.setenv("SPARSELENS_KERNELS", "triton")


@pytest.fixture
def use_torch(monkeypatch):
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tied_values(shape, seed=0, dtype=torch.float32) -> torch.Tensor:
    """Small integers with both signs: many exact ties in magnitude, and zeros."""
    return torch.randint(-3, 4, shape, generator=gen(seed)).to(dtype)


# ----------------------------------------------------------------------------- brute-force definitions
def magnitude_order(v: float) -> tuple[int, float]:
    """Sort key of one value, largest magnitude first: NaNs (all equal), then by -|v|."""
    return (0, 0.0) if math.isnan(v) else (1, -abs(v))


def brute_abstopk_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """A stable sort of each row by (NaN first, -|x|, index), first k kept."""
    rows = x.reshape(-1, x.shape[-1]).double()
    out = torch.zeros(rows.shape, dtype=torch.bool)
    for r, row in enumerate(rows.tolist()):
        for j in sorted(range(len(row)), key=lambda j: (*magnitude_order(row[j]), j))[:k]:
            out[r, j] = True
    return out.view(x.shape)


def brute_weight_topk_mask(w: torch.Tensor, k: int, floor: int, floor_dim: int) -> torch.Tensor:
    mag = [[magnitude_order(v) for v in row] for row in w.double().tolist()]  # smaller sorts first
    n_rows, n_cols = w.shape
    keep = torch.zeros(n_rows, n_cols, dtype=torch.bool)
    slices = range(n_rows) if floor_dim == 0 else range(n_cols)
    for s in slices:
        cells = [(s, j) for j in range(n_cols)] if floor_dim == 0 else [(i, s) for i in range(n_rows)]
        order = sorted(range(len(cells)), key=lambda t: (mag[cells[t][0]][cells[t][1]], t))
        for t in order[:floor]:
            keep[cells[t]] = True
    rest = [(i, j) for i in range(n_rows) for j in range(n_cols) if not keep[i, j]]
    rest.sort(key=lambda ij: (mag[ij[0]][ij[1]], ij[0] * n_cols + ij[1]))
    for ij in rest[: max(0, k - int(keep.sum()))]:
        keep[ij] = True
    return keep


def with_specials(x: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with about a fifth of its entries set to NaN, -NaN, +inf or -inf."""
    x = x.clone()
    which = torch.randint(0, 20, x.shape, generator=gen(seed))
    for code, value in enumerate((float("nan"), -float("nan"), float("inf"), -float("inf"))):
        x[which == code] = value
    return x


# ----------------------------------------------------------------------------- references vs brute force
def test_abstopk_reference_matches_brute_force():
    for seed in range(5):
        x = tied_values((4, 7), seed)
        for k in range(8):
            assert torch.equal(reference.abstopk_mask(x, k), brute_abstopk_mask(x, k)), (seed, k)
            specials = with_specials(x, seed)
            assert torch.equal(reference.abstopk_mask(specials, k), brute_abstopk_mask(specials, k)), (seed, k)


def test_nan_counts_as_the_largest_magnitude():
    """NaN (either sign) ranks above +-inf, NaNs tie with each other; the lowest index wins ties."""
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, -inf, 2.0, -nan, inf, nan]])
    for k, kept in [(1, [1]), (3, [1, 4, 6]), (4, [1, 2, 4, 6]), (5, [1, 2, 4, 5, 6]), (6, [1, 2, 3, 4, 5, 6])]:
        expected = torch.zeros(1, 7, dtype=torch.bool)
        expected[0, kept] = True
        assert torch.equal(reference.abstopk_mask(x, k), expected), k
        assert torch.equal(reference.abstopk_mask(x.to(torch.bfloat16), k), expected), k


@pytest.mark.parametrize("select", ["_topk_mask", "_topk_mask_branch_free"])
def test_both_topk_paths_match_brute_force_on_mixed_rows(select):
    """The CPU path (torch.topk, tie rule only where a tie was cut) and the device path agree."""
    for seed in range(5):
        x = torch.cat([tied_values((3, 2, 9), seed), torch.randn(3, 2, 9, generator=gen(seed))], dim=1)
        x = torch.cat([x, with_specials(x, seed)], dim=0)
        for k in range(1, 10):
            got = getattr(reference, select)(reference.magnitude_key(x), k)
            assert torch.equal(got, brute_abstopk_mask(x, k)), (seed, k)


def test_magnitude_key_orders_like_the_magnitude():
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        values = torch.tensor([0.0, -0.0, 1e-30, -0.5, 0.5, 1.0, -3.0, 1e30, float("inf"), -float("inf")]).to(dtype)
        key = reference.magnitude_key(values).tolist()
        mag = values.double().abs().tolist()
        for i in range(len(mag)):
            for j in range(len(mag)):
                assert (key[i] < key[j]) == (mag[i] < mag[j]) and (key[i] == key[j]) == (mag[i] == mag[j]), (dtype, i, j)
        nan_keys = reference.magnitude_key(torch.tensor([float("nan"), -float("nan")]).to(dtype)).tolist()
        assert nan_keys[0] == nan_keys[1] > max(key)


@pytest.mark.parametrize("floor_dim", [0, 1])
def test_weight_topk_reference_matches_brute_force(floor_dim):
    g = gen(3)
    for _ in range(40):
        n_rows, n_cols = (int(v) for v in torch.randint(1, 7, (2,), generator=g))
        w = torch.randint(-3, 4, (n_rows, n_cols), generator=g).float()
        k = int(torch.randint(0, n_rows * n_cols + 1, (1,), generator=g))
        floor = int(torch.randint(0, 4, (1,), generator=g))
        expected = brute_weight_topk_mask(w, k, floor, floor_dim)
        assert torch.equal(reference.weight_topk_mask(w, k, floor, floor_dim), expected), (w, k, floor)


# ----------------------------------------------------------------------------- abstopk
@pytest.mark.parametrize("dtype", DTYPES)
def test_abstopk_triton_selects_like_reference(use_triton, dtype):
    x = tied_values((4, 9), seed=1, dtype=dtype)
    x[0] = 2  # an all-equal row
    x[1] = 0  # an all-zero row
    for k in (0, 1, 3, 4, 8, 9):  # k = 0 .. width
        out = kernels.abstopk(x, k)
        assert out.dtype == dtype
        assert torch.equal(out, reference.abstopk(x, k)), k


def test_abstopk_triton_nan_and_inf(use_triton):
    for dtype in (torch.float32, torch.bfloat16):
        x = with_specials(tied_values((6, 9), seed=7), seed=8).to(dtype)
        for k in (1, 4, 8):
            assert torch.equal(kernels.abstopk(x, k).isnan(), reference.abstopk(x, k).isnan()), (dtype, k)
            assert torch.equal(kernels.abstopk(x, k).nan_to_num(), reference.abstopk(x, k).nan_to_num()), (dtype, k)


def test_abstopk_triton_continuous_values_and_odd_width(use_triton):
    x = torch.randn(3, 2, 37, generator=gen(2)).to(torch.bfloat16)
    assert torch.equal(kernels.abstopk(x, 11), reference.abstopk(x, 11))


def test_abstopk_triton_non_contiguous(use_triton):
    base = torch.randn(12, 6, generator=gen(3))
    x = base.T  # [6, 12], strides (1, 6)
    assert not x.is_contiguous()
    assert torch.equal(kernels.abstopk(x, 4), reference.abstopk(x, 4))
    sliced = base[:, ::2]  # last-dim stride 2
    assert torch.equal(kernels.abstopk(sliced, 2), reference.abstopk(sliced, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_abstopk_triton_gradient_reuses_selection(use_triton, dtype):
    x = tied_values((4, 8), seed=4, dtype=dtype)
    x[2] = 0  # kept entries that are exactly zero must still get their gradient
    g = torch.randn(4, 8, generator=gen(5)).to(dtype)
    xt = x.clone().requires_grad_()
    xr = x.clone().requires_grad_()
    (grad_t,) = torch.autograd.grad((kernels.abstopk(xt, 3) * g).sum(), xt)
    (grad_r,) = torch.autograd.grad((reference.abstopk(xr, 3) * g).sum(), xr)
    assert torch.equal(grad_t, grad_r)
    assert torch.equal(grad_t != 0, reference.abstopk_mask(x, 3) & (g != 0))


# ----------------------------------------------------------------------------- rms_norm
def _rms_inputs(dtype, seed=6):
    x = torch.randn(2, 3, 24, generator=gen(seed)).to(dtype)
    w = 1 + 0.3 * torch.randn(24, generator=gen(seed + 1))
    return x, w


# (atol, rtol) of Triton vs the reference: fp32 agrees to rounding; the bf16 reference divides in bf16.
RMS_TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (3e-2, 2e-2)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_triton_matches_reference(use_triton, dtype):
    x, w = _rms_inputs(dtype)
    out, scale = kernels.rms_norm(x, w, 1e-5)
    ref_out, ref_scale = reference.rms_norm(x, w, 1e-5)
    atol, rtol = RMS_TOL[dtype]
    assert out.dtype == ref_out.dtype and scale.dtype == ref_scale.dtype and scale.shape == (2, 3, 1)
    torch.testing.assert_close(scale, ref_scale, atol=atol, rtol=rtol)
    torch.testing.assert_close(out, ref_out, atol=atol, rtol=rtol)


def test_rms_norm_triton_non_contiguous(use_triton):
    x = torch.randn(24, 5, generator=gen(8)).T  # [5, 24] with strides (1, 5)
    w = torch.randn(24, generator=gen(9))
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6)[0], reference.rms_norm(x, w, 1e-6)[0])


def test_rms_norm_triton_gradients(use_triton):
    x, w = _rms_inputs(torch.float32)
    g_out = torch.randn(2, 3, 24, generator=gen(10))
    g_scale = torch.randn(2, 3, 1, generator=gen(11))
    grads = []
    for fn in (kernels.rms_norm, reference.rms_norm):
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        out, scale = fn(xx, ww, 1e-5)
        grads.append(torch.autograd.grad((out * g_out).sum() + (scale * g_scale).sum(), [xx, ww]))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rms_norm_frozen_triton_forward_and_gradients(use_triton):
    x, w = _rms_inputs(torch.float32, seed=12)
    scale = 0.5 + torch.rand(2, 3, 1, generator=gen(13))
    g_out = torch.randn(2, 3, 24, generator=gen(14))
    results = []
    for fn in (kernels.rms_norm_frozen, reference.rms_norm_frozen):
        xx, ww, ss = x.clone().requires_grad_(), w.clone().requires_grad_(), scale.clone().requires_grad_()
        out = fn(xx, ww, ss)
        results.append((out, *torch.autograd.grad((out * g_out).sum(), [xx, ww, ss])))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_rms_norm_frozen_triton_broadcast_scale(use_triton):
    x, w = _rms_inputs(torch.float32, seed=15)
    scale = torch.full((1, 3, 1), 2.0)
    torch.testing.assert_close(kernels.rms_norm_frozen(x, w, scale), reference.rms_norm_frozen(x, w, scale))


# ----------------------------------------------------------------------------- masked_ablate
def _ablate_case(kind: str, channel=(3, 4), seed=20):
    x = torch.randn(2, 5, *channel, generator=gen(seed))
    mask = torch.rand(channel, generator=gen(seed + 1))
    replacement = {
        "zero": None,
        "mean": torch.randn(channel, generator=gen(seed + 2)),
        "resample": torch.randn(x.shape, generator=gen(seed + 3)),
    }[kind]
    return x, mask, replacement


@pytest.mark.parametrize("kind", ["zero", "mean", "resample"])
def test_masked_ablate_triton_forward_and_mask_gradient(use_triton, kind):
    x, mask, replacement = _ablate_case(kind)
    g = torch.randn(x.shape, generator=gen(30))
    results = []
    for fn in (kernels.masked_ablate, reference.masked_ablate):
        xx, mm = x.clone().requires_grad_(), mask.clone().requires_grad_()
        rr = None if replacement is None else replacement.clone().requires_grad_()
        out = fn(xx, mm, rr)
        inputs = [xx, mm] + ([rr] if rr is not None else [])
        results.append((out, *torch.autograd.grad((out * g).sum(), inputs)))
    for got, want in zip(*results):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_ablate_triton_binary_mask_is_exact(use_triton, dtype):
    x, _, _ = _ablate_case("mean", seed=40)
    x = x.to(dtype)
    mean = torch.randn(3, 4, generator=gen(41)).to(dtype)
    keep = torch.rand(3, 4, generator=gen(42)) < 0.5
    assert torch.equal(kernels.masked_ablate(x, torch.ones(3, 4, dtype=torch.bool), mean), x)  # all kept: x exactly
    assert torch.equal(kernels.masked_ablate(x, keep, mean), reference.masked_ablate(x, keep, mean))
    assert torch.equal(kernels.masked_ablate(x, keep, None), reference.masked_ablate(x, keep, None))


def test_masked_ablate_triton_non_contiguous(use_triton):
    x = torch.randn(6, 4, generator=gen(43)).T  # [4, 6]
    mask = torch.rand(6, generator=gen(44))
    mean = torch.randn(6, generator=gen(45))
    torch.testing.assert_close(kernels.masked_ablate(x, mask, mean), reference.masked_ablate(x, mask, mean))


# ----------------------------------------------------------------------------- weight_topk_mask
@pytest.mark.parametrize("floor_dim", [0, 1])
def test_weight_topk_triton_selects_like_reference(use_triton, floor_dim):
    g = gen(50)
    for trial in range(6):
        n_rows, n_cols = (int(v) for v in torch.randint(1, 8, (2,), generator=g))
        w = torch.randint(-3, 4, (n_rows, n_cols), generator=g).to(DTYPES[trial % 3])
        floor = int(torch.randint(0, 4, (1,), generator=g))
        for k in (0, int(torch.randint(0, w.numel() + 1, (1,), generator=g)), w.numel()):
            got = kernels.weight_topk_mask(w, k, floor=floor, floor_dim=floor_dim)
            assert torch.equal(got, reference.weight_topk_mask(w, k, floor, floor_dim)), (w, k, floor)


def test_weight_topk_triton_all_equal_and_continuous(use_triton):
    w = torch.full((4, 6), -0.5)
    for k in (0, 5, 9, 24):
        assert torch.equal(kernels.weight_topk_mask(w, k, floor=2), reference.weight_topk_mask(w, k, 2))
    w = torch.randn(9, 13, generator=gen(51))
    assert torch.equal(kernels.weight_topk_mask(w, 40, floor=2), reference.weight_topk_mask(w, 40, 2))


def test_weight_topk_triton_non_contiguous(use_triton):
    w = torch.randn(10, 7, generator=gen(52)).T  # [7, 10]
    for floor_dim in (0, 1):
        got = kernels.weight_topk_mask(w, 25, floor=3, floor_dim=floor_dim)
        assert torch.equal(got, reference.weight_topk_mask(w, 25, 3, floor_dim))


# ----------------------------------------------------------------------------- numba CPU kernels
NUMBA_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.fixture
def use_numba(monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setenv("SPARSELENS_KERNELS", "numba")


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (NaN == NaN with the same payload, -0.0 != 0.0)."""
    int_dtype = reference.INT_VIEWS[a.dtype][0]
    return a.dtype == b.dtype and torch.equal(a.contiguous().view(int_dtype), b.contiguous().view(int_dtype))


def abstopk_cases(width: int, seed: int) -> dict[str, torch.Tensor]:
    """Rows of every kind the selection must get right, ``[8, width]`` each (fp32)."""
    n = 8
    all_equal = torch.full((n, width), -1.5)
    all_equal[::2] = 1.5  # equal magnitudes, both signs
    return {
        "continuous": torch.randn(n, width, generator=gen(seed)),
        "ties": tied_values((n, width), seed),
        "few values": torch.tensor([0.25, -0.25, 2.0, -2.0])[torch.randint(0, 4, (n, width), generator=gen(seed))],
        "all equal": all_equal,
        "zeros": torch.zeros(n, width),
        "nan and inf": with_specials(torch.randn(n, width, generator=gen(seed)), seed),
        "nan and inf, ties": with_specials(tied_values((n, width), seed), seed + 1),
    }


@pytest.mark.parametrize("dtype", NUMBA_DTYPES)
@pytest.mark.parametrize("width", [7, 256, 1024])
def test_abstopk_numba_selects_like_reference_and_brute_force(use_numba, dtype, width):
    for kind, x in abstopk_cases(width, seed=width).items():
        x = x.to(dtype)
        brute_rows = x[:3] if width == 1024 else x  # the brute force is slow on wide rows
        for k in sorted({0, 1, 2, width // 4, width // 2, width - 1, width}):
            out = kernels.abstopk(x, k)
            assert bits_equal(out, reference.abstopk(x, k)), (kind, k)
            want = brute_abstopk_mask(brute_rows, k)
            assert torch.equal(out[: len(brute_rows)] != 0, want & (brute_rows != 0)), (kind, k)
            assert bits_equal(out[: len(brute_rows)], torch.where(want, brute_rows, torch.zeros((), dtype=dtype))), (kind, k)


def test_abstopk_numba_k_equal_width_is_identity_and_k_zero_is_zeros(use_numba):
    x = torch.randn(3, 5, generator=gen(90))
    assert kernels.abstopk(x, 5) is x
    assert torch.equal(kernels.abstopk(x, 0), torch.zeros(3, 5))


def test_abstopk_numba_nan_rows(use_numba):
    nan, inf = float("nan"), float("inf")
    x = torch.tensor([[1.0, nan, -inf, 2.0, -nan, inf, nan]])
    out = kernels.abstopk(x, 4)  # the three NaNs, then the first infinity
    assert out[0, [1, 4, 6]].isnan().all() and out[0, 2] == -inf
    assert torch.equal(out[0, [0, 3, 5]], torch.zeros(3))


def test_abstopk_numba_batched_and_non_contiguous(use_numba):
    x = torch.randn(2, 3, 4, 33, generator=gen(91))
    assert bits_equal(kernels.abstopk(x, 9), reference.abstopk(x, 9))
    base = tied_values((40, 30), seed=92)
    for view in (base.T, base[:, ::3], base[::2].T[5:]):  # transposed, strided, offset
        assert not view.is_contiguous()
        assert bits_equal(kernels.abstopk(view, 4), reference.abstopk(view, 4))
    empty = torch.zeros(0, 8)
    assert kernels.abstopk(empty, 3).shape == (0, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_abstopk_numba_gradient_is_grad_times_mask(use_numba, dtype):
    x = tied_values((6, 16), seed=93, dtype=dtype)
    x[2] = 0  # kept entries that are exactly zero must still get their gradient
    g = torch.randn(16, 6, generator=gen(94)).to(dtype).T  # a non-contiguous upstream gradient
    xx = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad((kernels.abstopk(xx, 5) * g).sum(), xx)
    assert bits_equal(grad, torch.where(brute_abstopk_mask(x, 5), g, torch.zeros((), dtype=dtype)))
    xr = x.clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad((reference.abstopk(xr, 5) * g).sum(), xr)
    assert bits_equal(grad, grad_ref)


def test_abstopk_numba_gradcheck_float64(use_numba):
    x = torch.randn(4, 3, 10, generator=gen(95), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: kernels.abstopk(t, 3), (x,))


def test_abstopk_numba_deterministic_across_threads(use_numba):
    x = torch.randn(64, 256, generator=gen(96)).to(torch.bfloat16)
    want = reference.abstopk(x, 64)
    threads_before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert bits_equal(kernels.abstopk(x, 64), want), n
    finally:
        torch.set_num_threads(threads_before)
    results: list[torch.Tensor] = []

    def work():
        for _ in range(20):
            results.append(kernels.abstopk(x, 64))

    workers = [threading.Thread(target=work) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(results) == 80 and all(bits_equal(r, want) for r in results)


def test_numba_parallel_paths_match_the_serial_ones(use_numba, monkeypatch):
    """The parallel kernels (used above PARALLEL_MIN_NUMEL entries) give the serial kernels' results:
    forced here on small inputs, two threads."""
    import sparselens.kernels.numba_common as numba_common

    x = torch.randn(300, 256, generator=gen(130))
    w = (1 + 0.3 * torch.randn(256, generator=gen(131)))
    g = torch.randn(300, 256, generator=gen(132))

    def run():
        xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = kernels.abstopk(xx, 64)
        (dx_topk,) = torch.autograd.grad((y * g).sum(), [xx])
        out, scale = kernels.rms_norm(xx, ww, 1e-5)
        dx_norm, dw_norm = torch.autograd.grad((out * g).sum() + scale.sum(), [xx, ww])
        return y, dx_topk, out, scale, dx_norm, dw_norm

    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        serial = run()
        monkeypatch.setattr(numba_common, "PARALLEL_MIN_NUMEL", 1)
        parallel = run()
    finally:
        torch.set_num_threads(threads_before)
    assert bits_equal(parallel[0], serial[0]) and bits_equal(parallel[1], serial[1])  # the same selection
    for got, want in zip(parallel[2:], serial[2:]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("floor_dim", [0, 1])
def test_weight_topk_numba_selects_like_reference_and_brute_force(use_numba, floor_dim):
    g = gen(97)
    for trial in range(12):
        n_rows, n_cols = (int(v) for v in torch.randint(1, 9, (2,), generator=g))
        w = torch.randint(-3, 4, (n_rows, n_cols), generator=g).to(NUMBA_DTYPES[trial % 4])
        if trial % 3 == 0:
            w = with_specials(w, seed=trial)
        floor = int(torch.randint(0, 4, (1,), generator=g))
        for k in (0, 1, int(torch.randint(0, w.numel() + 1, (1,), generator=g)), w.numel() - 1, w.numel()):
            got = kernels.weight_topk_mask(w, k, floor=floor, floor_dim=floor_dim)
            assert torch.equal(got, reference.weight_topk_mask(w, k, floor, floor_dim)), (w, k, floor)
            assert torch.equal(got, brute_weight_topk_mask(w, k, floor, floor_dim)), (w, k, floor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_weight_topk_numba_matrix_sizes(use_numba, dtype):
    """Shapes of the trained matrices (continuous and tied values, rows and columns, strided)."""
    for shape in ((256, 64), (64, 256), (97, 301)):
        for w in (torch.randn(shape, generator=gen(98)), tied_values(shape, seed=99), torch.randn(shape[::-1], generator=gen(100)).T):
            w = w.to(dtype)
            for floor_dim in (0, 1):
                for k in (w.numel() // 16, w.numel() // 3):
                    got = kernels.weight_topk_mask(w, k, floor=4, floor_dim=floor_dim)
                    assert torch.equal(got, reference.weight_topk_mask(w, k, 4, floor_dim)), (shape, floor_dim, k)


@pytest.mark.parametrize("kind", ["continuous", "tied", "mostly_zero", "specials", "two_values"])
def test_weight_topk_numba_large_matrices_select_like_reference(use_numba, kind):
    """Matrices above SAMPLED_MIN_NUMEL, where the threshold is bracketed from a sample first: the
    same selection as the reference whether the bracket holds or the sample misleads (ties, a
    pruned matrix's zeros, NaN and inf, two values only)."""
    from sparselens.kernels.abstopk_cpu import SAMPLED_MIN_NUMEL

    shape = (300, 200)
    assert shape[0] * shape[1] > SAMPLED_MIN_NUMEL
    base = torch.randn(shape, generator=gen(150))
    w = {
        "continuous": base,
        "tied": tied_values(shape, seed=151),
        "mostly_zero": base * (torch.rand(shape, generator=gen(152)) < 0.1),
        "specials": with_specials(base, seed=153),
        "two_values": torch.where(torch.rand(shape, generator=gen(154)) < 0.3, 2.0, -1.0),
    }[kind]
    n = w.numel()
    for floor_dim, floor in ((0, 4), (1, 4), (0, 0)):
        n_free = n - (shape[0] if floor_dim == 0 else shape[1]) * floor
        for k in (n - n_free + 1, n // 16, n // 8, n // 3, n - n_free + n_free // 2, n - 1):
            got = kernels.weight_topk_mask(w, k, floor=floor, floor_dim=floor_dim)
            assert torch.equal(got, reference.weight_topk_mask(w, k, floor, floor_dim)), (kind, floor_dim, floor, k)


def test_sampled_threshold_keeps_what_the_full_bisection_keeps_for_every_rank(use_numba):
    """The sampled bracket (:func:`_threshold`) against the plain bisection, on whole key arrays,
    at ranks 1..n in steps: both select the same keys (the top k, lowest index on ties)."""
    import numpy as np

    from sparselens.kernels.abstopk_cpu import SAMPLED_MIN_NUMEL, _row_threshold, _threshold

    def kept(keys, t, last):
        idx = np.arange(keys.shape[0])
        return (keys > t) | ((keys == t) & (idx <= last))

    rng = np.random.default_rng(160)
    n = SAMPLED_MIN_NUMEL + 1000
    arrays = [rng.integers(0, 2**30, n, dtype=np.int32), rng.integers(0, 50, n, dtype=np.int32),
              np.where(rng.random(n) < 0.9, 0, rng.integers(1, 2**20, n)).astype(np.int32)]
    mask, clamp, top_bit = np.int32(2**31 - 1), np.int32(2**31 - 1), 30
    for keys in arrays:
        for k in range(1, n + 1, 97):
            want = kept(keys, *_row_threshold(keys, k, mask, clamp, top_bit))
            got = kept(keys, *_threshold(keys, k, mask, clamp, top_bit))
            assert int(want.sum()) == k and np.array_equal(got, want), k


def test_weight_topk_masks_on_two_threads_select_like_the_reference_one_by_one(use_numba):
    """The sparsifier's batched selection (matrices on worker threads at once) gives every matrix
    the reference's mask, for row and column floors, a floor of 0 and k that keeps all or only the floor."""
    shapes = [(256, 64), (64, 256), (97, 301), (33, 7), (128, 128)]
    jobs = []
    for i, shape in enumerate(shapes):
        w = torch.randn(shape, generator=gen(140 + i)) if i % 2 == 0 else tied_values(shape, seed=140 + i)
        for floor_dim, floor, k in ((0, 4, w.numel() // 16), (1, 4, w.numel() // 8), (i % 2, 0, w.numel() // 5),
                                    (0, 2, 0), (1, 1, w.numel())):
            jobs.append((w, k, floor, floor_dim))
    threads_before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        together = kernels.weight_topk_masks(jobs)
    finally:
        torch.set_num_threads(threads_before)
    assert len(together) == len(jobs)
    for got, (w, k, floor, floor_dim) in zip(together, jobs):
        assert torch.equal(got, reference.weight_topk_mask(w, k, floor, floor_dim)), (w.shape, k, floor, floor_dim)
    with pytest.raises(ValueError, match="floor_dim must be 0"):
        kernels.weight_topk_masks([(jobs[0][0], 1, 4, 2)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rms_norm_numba_matches_reference(use_numba, dtype):
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    for shape in ((2, 3, 24), (300, 256), (1, 7)):  # 300 rows: several gradient blocks, one partial
        x = torch.randn(shape, generator=gen(110)).to(dtype)
        w = (1 + 0.3 * torch.randn(shape[-1], generator=gen(111))).to(dtype)
        g_out = torch.randn(shape, generator=gen(112)).to(dtype)
        g_scale = torch.randn(*shape[:-1], 1, generator=gen(113)).to(dtype)
        results = []
        for fn in (kernels.rms_norm, reference.rms_norm):
            xx, ww = x.clone().requires_grad_(), w.clone().requires_grad_()
            out, scale = fn(xx, ww, 1e-5)
            with_scale = torch.autograd.grad((out * g_out).sum() + (scale * g_scale).sum(), [xx, ww])
            out_only = torch.autograd.grad((fn(xx, ww, 1e-5)[0] * g_out).sum(), [xx, ww])  # scale unused
            results.append((out, scale, *with_scale, *out_only))
        for got, want in zip(*results):
            assert got.dtype == want.dtype and got.shape == want.shape
            torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_rms_norm_numba_non_contiguous_and_gradcheck(use_numba):
    x = torch.randn(24, 5, generator=gen(114)).T  # [5, 24] with strides (1, 5)
    w = torch.randn(24, generator=gen(115))
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6)[0], reference.rms_norm(x, w, 1e-6)[0])
    xx = torch.randn(3, 4, 6, generator=gen(116), dtype=torch.float64).requires_grad_()
    ww = torch.randn(6, generator=gen(117), dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kernels.rms_norm(a, b, 1e-5), (xx, ww))


def test_rms_norm_numba_leaves_other_dtypes_to_the_reference(use_numba):
    x = torch.randn(4, 16, generator=gen(118)).to(torch.bfloat16)
    w = torch.ones(16)
    for got, want in zip(kernels.rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5)):
        assert torch.equal(got, want)
    x32 = x.float()  # float32 x, float64 weight: mixed dtypes also go to the reference
    w64 = torch.ones(16, dtype=torch.float64)
    assert torch.equal(kernels.rms_norm(x32, w64, 1e-5)[0], reference.rms_norm(x32, w64, 1e-5)[0])


def test_importing_sparselens_does_not_import_numba():
    code = "import sys, sparselens, sparselens.kernels; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- linear (a weight-sparse nn.Linear)
needs_numba = pytest.mark.skipif(not dispatch.numba_available(), reason="numba is a dependency; this checks an install without it")


def _sparse_weight(d_out: int, d_in: int, density: float, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    keep = torch.rand(d_out, d_in, generator=gen(seed)) < density
    return (torch.randn(d_out, d_in, generator=gen(seed + 1)) * keep).to(dtype)


def _took_nonzero_kernel(y: torch.Tensor) -> bool:
    """Whether ``y``'s autograd graph (through its reshape) starts at the nonzero kernel's backward."""
    fn = y.grad_fn
    while fn is not None and type(fn).__name__ == "ViewBackward0":
        fn = fn.next_functions[0][0]
    return type(fn).__name__ == "LinearFunctionBackward"


def _linear_by_hand(x, w, b, g):
    """``(y, dx, dW, db)`` in float64 from the definitions (``y = x W^T + b``, ``g`` = dL/dy)."""
    x2, w2, g2 = x.double().reshape(-1, x.shape[-1]), w.double(), g.double().reshape(-1, w.shape[0])
    y = x2 @ w2.T + (0 if b is None else b.double())
    return y.reshape(g.shape), (g2 @ w2).reshape(x.shape), g2.T @ x2, g2.sum(0)


@needs_numba
@pytest.mark.parametrize("lead, d_in, d_out, density, bias, dtype", [
    ((1,), 13, 7, 0.1, True, torch.float32),
    ((127,), 40, 33, 0.1, True, torch.float32),
    ((2, 129), 64, 48, 0.15, False, torch.float32),
    ((3, 100), 32, 96, 0.05, True, torch.float64),
    ((300,), 24, 16, 0.0, True, torch.float32),  # no nonzero at all: the bias alone
])
def test_linear_walks_the_nonzeros_and_matches_the_definition(lead, d_in, d_out, density, bias, dtype):
    w = _sparse_weight(d_out, d_in, density, dtype=dtype)
    w[0] = 0  # an output row with no nonzero
    w.requires_grad_()
    x = torch.randn(*lead, d_in, generator=gen(2), dtype=dtype, requires_grad=True)
    b = torch.randn(d_out, generator=gen(3), dtype=dtype, requires_grad=True) if bias else None
    g = torch.randn(*lead, d_out, generator=gen(4), dtype=dtype)
    y = kernels.linear(x, w, b)
    assert _took_nonzero_kernel(y), "this density takes the nonzero kernel"
    dx, dw, *db = torch.autograd.grad(y, (x, w) if b is None else (x, w, b), g)
    y_ref, dx_ref, dw_ref, db_ref = _linear_by_hand(x, w, b, g)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    assert y.shape == (*lead, d_out) and y.is_contiguous()
    torch.testing.assert_close(y.double(), y_ref, **tol)
    torch.testing.assert_close(dx.double(), dx_ref, **tol)
    torch.testing.assert_close(dw.double(), dw_ref, **tol)  # dense: zero weights get their gradient too
    assert bool((dw[w.detach() == 0] != 0).any()) or x.numel() == 0
    if b is not None:
        torch.testing.assert_close(db[0].double(), db_ref, **tol)


@needs_numba
def test_linear_takes_f_linear_where_walking_does_not_pay(monkeypatch):
    x = torch.randn(5, 16, generator=gen(0), requires_grad=True)
    dense_w = torch.randn(8, 16, generator=gen(1), requires_grad=True)
    assert not _took_nonzero_kernel(kernels.linear(x, dense_w))
    assert torch.equal(kernels.linear(x, dense_w), F.linear(x, dense_w))
    sparse_w = _sparse_weight(8, 16, 0.1).requires_grad_()
    assert _took_nonzero_kernel(kernels.linear(x, sparse_w))
    assert not _took_nonzero_kernel(kernels.linear(x.bfloat16(), sparse_w.bfloat16()))
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")
    assert torch.equal(kernels.linear(x, sparse_w), F.linear(x, sparse_w))
    with pytest.raises(RuntimeError):  # a shape mismatch fails as F.linear's does
        kernels.linear(torch.randn(5, 15), sparse_w)


@needs_numba
def test_linear_non_finite_values():
    """A NaN weight reaches its output as in F.linear; a non-finite input feature that meets only
    zero weights does not reach the output (F.linear's ``0 * inf`` makes every output NaN)."""
    w = _sparse_weight(6, 10, 0.1)
    w[:, 3] = 0
    w[2, 5] = float("nan")
    x = torch.randn(4, 10, generator=gen(5))
    y = kernels.linear(x, w)
    assert torch.isnan(y[:, 2]).all() and not torch.isnan(y[:, [0, 1, 3, 4, 5]]).any()
    x[1, 3] = float("inf")
    w[2, 5] = 1.0
    y = kernels.linear(x, w)
    assert torch.isfinite(y).all()
    assert torch.isnan(F.linear(x, w)[1]).all()


@needs_numba
def test_model_with_the_nonzero_linear_matches_the_torch_path(monkeypatch, tokens):
    model = _sparse_model(0.1, seed=4)
    logits = model(tokens)
    assert _took_nonzero_kernel(model.blocks[0].mlp.fc_in(torch.randn(2, model.cfg.d_model)))
    grads = torch.autograd.grad(logits.square().mean(), list(model.parameters()))
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")
    logits_ref = model(tokens)
    grads_ref = torch.autograd.grad(logits_ref.square().mean(), list(model.parameters()))
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- sparse_linear
def _sparse_weight(n_out=20, n_in=24, density=0.15, seed=60, dtype=torch.float32):
    w = torch.randn(n_out, n_in, generator=gen(seed)) * (torch.rand(n_out, n_in, generator=gen(seed + 1)) < density)
    w[3] = 0  # an output row with no nonzeros
    return w.to(dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_sparse_linear_matches_dense(monkeypatch, backend):
    monkeypatch.setenv("SPARSELENS_KERNELS", backend)
    w = _sparse_weight()
    bias = torch.randn(20, generator=gen(61))
    x = torch.randn(2, 9, 24, generator=gen(62))
    csr = CSRWeight.from_dense(w)
    assert torch.equal(csr.to_dense(), w) and csr.nnz == int((w != 0).sum())
    torch.testing.assert_close(kernels.sparse_linear(x, csr, bias), F.linear(x, w, bias), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kernels.sparse_linear(x[:, ::2], csr), F.linear(x[:, ::2], w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_sparse_linear_gradients(monkeypatch, backend):
    monkeypatch.setenv("SPARSELENS_KERNELS", backend)
    w = _sparse_weight(seed=63)
    x = torch.randn(7, 24, generator=gen(64))
    bias = torch.randn(20, generator=gen(65))
    g = torch.randn(7, 20, generator=gen(66))
    grads = []
    for sparse in (True, False):
        xx, bb = x.clone().requires_grad_(), bias.clone().requires_grad_()
        y = kernels.sparse_linear(xx, CSRWeight.from_dense(w), bb) if sparse else F.linear(xx, w, bb)
        grads.append(torch.autograd.grad((y * g).sum(), [xx, bb]))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sparse_linear_triton_bf16(use_triton):
    w = _sparse_weight(seed=67, dtype=torch.bfloat16)
    x = torch.randn(5, 24, generator=gen(68)).to(torch.bfloat16)
    expected = F.linear(x.float(), w.float()).to(torch.bfloat16)  # fp32 accumulation, like the kernel
    torch.testing.assert_close(kernels.sparse_linear(x, CSRWeight.from_dense(w)), expected, atol=1e-2, rtol=1e-2)


def _sparse_model(density: float, seed: int = 0, **config) -> HookedSparseTransformer:
    model = randomize(HookedSparseTransformer(tiny_config(**config)), seed=seed + 1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand(module.weight.shape, generator=gen(seed)) < density)
    return model


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_sparsify_linears_keeps_activations_hooks_and_weights(monkeypatch, tokens, backend):
    if backend == "triton":  # only sparse_linear interpreted, on few tokens: the interpreter is slow
        tokens = tokens[:1, :5]
        choose = ops._backend
        monkeypatch.setattr(ops, "_backend", lambda op, *t: choose(op, *t) if op == "sparse_linear" else "torch")
    model = _sparse_model(0.1, n_layers=1, d_model=32, d_head=8)
    logits_before, cache_before = model.run_with_cache(tokens)
    W_Q, W_in = model.W_Q.clone(), model.W_in.clone()
    n_linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    monkeypatch.setenv("SPARSELENS_KERNELS", backend)
    assert kernels.sparsify_linears(model, max_density=1.0) == n_linears > 0
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert torch.equal(model.W_Q, W_Q) and torch.equal(model.W_in, W_in)
    logits_after, cache_after = model.run_with_cache(tokens)
    assert set(cache_after.keys()) == set(cache_before.keys())
    for name in cache_before.keys():
        torch.testing.assert_close(cache_after[name], cache_before[name], atol=1e-4, rtol=1e-4, msg=name)
    torch.testing.assert_close(logits_after, logits_before, atol=1e-4, rtol=1e-4)


def test_sparse_linear_state_dict_loads_into_dense_model(tokens):
    model = _sparse_model(0.1, seed=2)
    dense_logits = model(tokens)
    kernels.sparsify_linears(model, max_density=1.0)
    fresh = HookedSparseTransformer(tiny_config())
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(tokens), dense_logits, atol=1e-5, rtol=1e-5)
    empty = _sparse_model(0.02, seed=3)  # a different sparsity pattern, loaded back into SparseLinears
    kernels.sparsify_linears(empty, max_density=1.0)
    empty.load_state_dict(model.state_dict())
    torch.testing.assert_close(empty(tokens), dense_logits, atol=1e-4, rtol=1e-4)


def test_sparsify_linears_default_uses_the_cpu_crossover():
    model = _sparse_model(1.0)  # every linear dense
    fc_in = model.blocks[0].mlp.fc_in
    with torch.no_grad():
        fc_in.weight.mul_(torch.rand(fc_in.weight.shape, generator=gen(7)) < CPU_CSR_MAX_DENSITY / 2)
    assert kernels.sparsify_linears(model) == 1
    assert isinstance(model.blocks[0].mlp.fc_in, kernels.SparseLinear)
    assert isinstance(model.blocks[0].mlp.fc_out, nn.Linear)


# ----------------------------------------------------------------------------- dispatcher
def test_dispatcher_default_and_override(monkeypatch, caplog):
    x = torch.zeros(2, 3)
    monkeypatch.delenv("SPARSELENS_KERNELS", raising=False)
    cpu_default = "numba" if dispatch.numba_available() else "torch"
    assert dispatch.backend_for("abstopk", x) == cpu_default  # CPU tensor, no override
    assert dispatch.backend_for("weight_topk_mask", x) == cpu_default
    assert dispatch.backend_for("rms_norm", x) == cpu_default
    assert dispatch.backend_for("masked_ablate", x) == "torch"  # no numba kernel
    monkeypatch.setenv("SPARSELENS_KERNELS", "triton")
    assert dispatch.backend_for("abstopk", x) == "triton"
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")
    assert dispatch.backend_for("abstopk", x) == "torch"
    monkeypatch.setenv("SPARSELENS_KERNELS", "cuda")
    with pytest.raises(ValueError, match="SPARSELENS_KERNELS"):
        dispatch.backend_for("abstopk", x)


def test_dispatcher_numba_override(monkeypatch):
    monkeypatch.setenv("SPARSELENS_KERNELS", "numba")
    monkeypatch.setattr(dispatch, "_numba_ok", False)
    with pytest.raises(RuntimeError, match="numba cannot be imported"):
        dispatch.backend_for("abstopk", torch.zeros(2, 3))
    monkeypatch.setattr(dispatch, "_numba_ok", True)
    assert dispatch.backend_for("abstopk", torch.zeros(2, 3)) == "numba"
    assert dispatch.backend_for("masked_ablate", torch.zeros(2, 3)) == "torch"  # no numba kernel
    monkeypatch.delenv("SPARSELENS_KERNELS")
    monkeypatch.setattr(dispatch, "_numba_ok", False)  # numba missing: the reference, no error
    assert dispatch.backend_for("abstopk", torch.zeros(2, 3)) == "torch"


def test_dispatcher_routes_calls(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the torch reference was called")

    monkeypatch.setattr(reference, "abstopk", refuse)
    monkeypatch.setattr(reference, "weight_topk_mask", refuse)
    x = torch.randn(3, 5, generator=gen(80))
    monkeypatch.setenv("SPARSELENS_KERNELS", "triton")
    kernels.abstopk(x, 2)
    kernels.weight_topk_mask(x, 4, floor=1)
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")
    with pytest.raises(AssertionError, match="torch reference"):
        kernels.abstopk(x, 2)
    if dispatch.numba_available():
        monkeypatch.delenv("SPARSELENS_KERNELS")  # CPU default: the numba kernels
        kernels.abstopk(x, 2)
        kernels.weight_topk_mask(x, 4, floor=1)
        kernels.abstopk(x.double(), 2)


def test_dispatcher_logs_each_choice_once(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_logged", set())
    monkeypatch.setenv("SPARSELENS_KERNELS", "torch")
    with caplog.at_level(logging.INFO, logger="sparselens.kernels"):
        for _ in range(3):
            kernels.abstopk(torch.ones(2, 4), 1)
    assert [r.getMessage() for r in caplog.records if "abstopk" in r.getMessage()] == [
        "sparselens.kernels: abstopk uses the torch implementation (SPARSELENS_KERNELS=torch)"
    ]


# ----------------------------------------------------------------------------- hostile inputs
@pytest.mark.parametrize("backend", ["triton", "torch", "numba"])
def test_bad_arguments_raise_clear_errors(monkeypatch, backend):
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("SPARSELENS_KERNELS", backend)
    x = torch.randn(2, 6)
    cases = [
        (lambda: kernels.abstopk(x, 7), "k=7 must be between 0 and the last dim"),
        (lambda: kernels.abstopk(x, -1), "k=-1"),
        (lambda: kernels.abstopk(x, 2.0), "k must be an int"),
        (lambda: kernels.abstopk(x.long(), 2), "float tensor"),
        (lambda: kernels.rms_norm(x, torch.ones(5), 1e-5), "weight must have shape"),
        (lambda: kernels.rms_norm_frozen(x, torch.ones(6), torch.ones(3, 1)), "scale must broadcast"),
        (lambda: kernels.masked_ablate(x, torch.ones(5), None), "mask shape"),
        (lambda: kernels.masked_ablate(x, torch.ones(6), torch.ones(4)), "replacement must have"),
        (lambda: kernels.weight_topk_mask(x, 13), "k=13 must be between 0 and w.numel"),
        (lambda: kernels.weight_topk_mask(x, 3, floor=-1), "floor must be >= 0"),
        (lambda: kernels.weight_topk_mask(x, 3, floor_dim=2), "floor_dim must be 0"),
        (lambda: kernels.weight_topk_mask(x.view(2, 3, 2), 3), "2-D weight matrix"),
        (lambda: kernels.sparse_linear(torch.randn(2, 5), CSRWeight.from_dense(torch.eye(6))), "d_in = 6"),
        (lambda: kernels.sparsify_linears(nn.Linear(2, 2), max_density=2.0), "max_density"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


# ----------------------------------------------------------------------------- weight_topk_mask: Triton multi-block paths
# Under the interpreter the Triton weight top-k uses 256-entry blocks for the histogram, tie count and
# final mask, and 64-entry chunks for the per-slice floor loop. The shapes below (slices of 130: chunks
# of 64, 64 and 2; 650 entries: blocks of 256, 256 and 138) run every cross-block and cross-chunk path,
# partial last block and chunk included; the launch spy checks that they do.
class _LaunchSpy:
    """Stands in for a ``@triton.jit`` kernel and records each launch's grid and constexpr kwargs."""

    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return launch(*args, **kwargs)

        return run


@pytest.fixture
def weight_topk_launches(use_triton, monkeypatch):
    module = dispatch.kernel_module("weight_topk_triton")
    launches: dict[str, list] = {}
    for name in ("_floor_kernel", "_histogram_kernel", "_tie_count_kernel", "_final_mask_kernel"):
        launches[name] = []
        monkeypatch.setattr(module, name, _LaunchSpy(getattr(module, name), launches[name]))
    return launches


def _multi_block_weights(floor_dim: int, values: str, dtype=torch.float32) -> torch.Tensor:
    """``[5, 130]`` (floor_dim 0) or a strided ``[130, 5]`` (floor_dim 1): 5 slices of 130 entries."""
    if values == "ties":
        w = tied_values((5, 130), seed=120)
    else:
        w = torch.randn(5, 130, generator=gen(121))
    w[1] = 0.5  # an all-equal slice: the floor takes indices 0..3, all in the first chunk
    w[2, 64], w[2, 100], w[2, 129] = -3.0 * 4, 3.0 * 4, 3.0 * 4  # tied maxima in the 2nd and last chunks
    w[3] = 0  # an all-zero slice
    return (w if floor_dim == 0 else w.T).to(dtype)  # floor_dim 1: columns of a transposed (strided) view


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("values", ["ties", "continuous"])
@pytest.mark.parametrize("floor_dim", [0, 1])
def test_weight_topk_triton_multi_block_matches_reference(weight_topk_launches, floor_dim, values, dtype):
    w = _multi_block_weights(floor_dim, values, dtype)
    floor, n_slices, slice_len = 4, 5, 130
    n_protected = n_slices * floor
    for k in (n_protected + 1, w.numel() // 3, w.numel() // 2, w.numel() - 1):
        got = kernels.weight_topk_mask(w, k, floor=floor, floor_dim=floor_dim)
        want = reference.weight_topk_mask(w, k, floor, floor_dim)
        assert torch.equal(got, want), (floor_dim, values, dtype, k, (got != want).nonzero().tolist())
    if values == "ties" and dtype == torch.float32:  # the reference itself, on these shapes
        assert torch.equal(want, brute_weight_topk_mask(w, k, floor, floor_dim))

    # every launch went through the multi-chunk floor loop and the multi-block selection
    floor_grid, floor_kwargs = weight_topk_launches["_floor_kernel"][0]
    assert floor_grid == (n_slices,) and floor_kwargs["FLOOR"] == floor
    assert floor_kwargs["BLOCK"] < slice_len and slice_len % floor_kwargs["BLOCK"] != 0, floor_kwargs
    for name in ("_histogram_kernel", "_tie_count_kernel", "_final_mask_kernel"):
        assert weight_topk_launches[name], name
        for grid, kwargs in weight_topk_launches[name]:
            assert grid[0] >= 3 and w.numel() % kwargs["BLOCK"] != 0, (name, grid, kwargs)


def test_weight_topk_triton_ties_span_blocks(weight_topk_launches):
    """One magnitude everywhere (no floor): which tied entries are kept is decided by the counts of
    the blocks before each one (the cross-block exclusive cumulative sum), in row-major order."""
    w = torch.full((5, 130), -1.25)
    w[::2] = 1.25
    for k in (1, 255, 256, 257, 300, 513, 649):
        got = kernels.weight_topk_mask(w, k, floor=0)
        assert int(got.sum()) == k and bool(got.view(-1)[:k].all()), k
        assert torch.equal(got, reference.weight_topk_mask(w, k, 0, 0)), k
    assert all(grid[0] == 3 for grid, _ in weight_topk_launches["_final_mask_kernel"])
