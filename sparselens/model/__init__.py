"""The model and its components."""

from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer

__all__ = ["HookedSparseTransformer"]
