import os

# Triton reads this when it is imported, and test modules that import transformers or
# transformer_lens import it at collection, before tests/test_kernels.py runs: set it first.
# A GPU run of the kernel tests sets TRITON_INTERPRET=0 itself.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from sparselens import HookedSparseTransformer, SparseTransformerConfig  # noqa: E402

torch.set_num_threads(2)


def tiny_config(**overrides) -> SparseTransformerConfig:
    kwargs = dict(n_layers=2, d_model=64, d_head=16, n_ctx=32, d_vocab=128, seed=0, device="cpu")
    kwargs.update(overrides)
    return SparseTransformerConfig(**kwargs)


def randomize(model: HookedSparseTransformer, seed: int = 1) -> HookedSparseTransformer:
    """Give every parameter (norm weights, biases, sinks, bigram too) a nonzero random value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if name.endswith(".w") else 0.0
            p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture
def tiny_model() -> HookedSparseTransformer:
    return HookedSparseTransformer(tiny_config())


@pytest.fixture(params=["plain", "sink+bigram+pos"])
def any_model(request) -> HookedSparseTransformer:
    extra = {} if request.param == "plain" else dict(attn_sink=True, bigram_table=True, positional_embedding_type="learned")
    return randomize(HookedSparseTransformer(tiny_config(**extra)))


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 128, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def trained_on_quotes():
    """(model, task, means): a 1-layer model trained for a few seconds on single_double_quote (loss
    about 0.05), with node means over some train prompts. Shared by every test module that needs a
    model that can do a task; treat it as read-only."""
    from sparselens.data import load_tokenizer
    from sparselens.interventions import compute_means
    from sparselens.tasks import get_task

    tok = load_tokenizer()
    task = get_task("single_double_quote", tokenizer=tok)
    model = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=256, d_vocab=2048), tokenizer=tok)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(40):
        loss = task.loss(model, task.batch(n=32, split="train", seed=step), grad=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    means = compute_means(model, [task.batch(n=32, split="train", seed=1000).tokens], progress=False)
    return model, task, means
