"""Row-compressed (CSR) storage for frozen low-density weight matrices."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor


@dataclass(frozen=True)
class CSRWeight:
    """A ``[out, in]`` matrix in compressed sparse row form.

    Attributes:
        crow: ``[out + 1]`` int32 offsets; row ``o``'s nonzeros are ``crow[o]:crow[o+1]``.
        col: ``[nnz]`` int32 column of each nonzero, ascending within a row.
        values: ``[nnz]`` the nonzero values (the weight's dtype).
        shape: ``(out, in)``.
    """

    crow: Int[Tensor, " out_plus_1"]
    col: Int[Tensor, " nnz"]
    values: Float[Tensor, " nnz"]
    shape: tuple[int, int]

    @classmethod
    def from_dense(cls, w: Float[Tensor, "out in"]) -> "CSRWeight":
        """Pack the nonzeros of ``w`` (exact zeros are dropped)."""
        if w.dim() != 2:
            raise ValueError(f"CSRWeight: expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
        with warnings.catch_warnings():  # torch flags sparse CSR as beta on every first use
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = w.detach().to_sparse_csr()
        return cls(
            crow=csr.crow_indices().to(torch.int32),
            col=csr.col_indices().to(torch.int32),
            values=csr.values(),
            shape=(w.shape[0], w.shape[1]),
        )

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / max(1, self.shape[0] * self.shape[1])

    def to_torch(self) -> torch.Tensor:
        """The same matrix as a ``torch.sparse_csr`` tensor (int64 indices)."""
        return torch.sparse_csr_tensor(
            self.crow.long(), self.col.long(), self.values, size=self.shape, check_invariants=False
        )

    def to_dense(self) -> Float[Tensor, "out in"]:
        return self.to_torch().to_dense()

    def transpose(self) -> "CSRWeight":
        """CSR of ``W.T`` (``[in, out]``)."""
        return CSRWeight.from_dense(self.to_dense().T)
