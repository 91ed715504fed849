"""Load the base model and tokenizer: device, dtype, attention backend and quantization.

Optional accelerators sit behind one capability check each, and every decision is logged once
(DESIGN.md convention 5): flash-attn falls back to SDPA, then eager; 8-/4-bit asked for without
bitsandbytes fails with the install command.
"""

from __future__ import annotations

import importlib.util
import logging
import types
from dataclasses import dataclass
from pathlib import Path

import torch

from fathom.config import ConfigError, ModelConfig
from fathom.model.allocator import allocator_settings
from fathom.model.sources import resolve_model_source

logger = logging.getLogger("fathom")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    source: str  # what from_pretrained received (path or Hub id)
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str


def pick_device(requested: str = "auto") -> torch.device:
    """cuda, then mps, then cpu; an explicit request that is not available is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device: cuda was asked for but torch sees no CUDA device")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device: mps was asked for but this torch build or machine has no MPS")
    return torch.device(requested)


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX). There the demo trains
    in bfloat16 45% faster than in float32 (docs/benchmarks.md); elsewhere torch emulates bfloat16 on the
    CPU, slower than float32. torch has no public check, so its private ones are asked, and a torch
    without them counts as no."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """bfloat16 where the device computes it well (CUDA with bf16 support, MPS), float32 elsewhere."""
    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.bfloat16
    return torch.float32


def flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def pick_attn_implementation(requested: str, device: torch.device) -> str:
    """What transformers is told: for ``auto``, the fastest exact path for packed rows that this machine has.

    flash-attn's varlen kernel where it is installed (CUDA); torch's own varlen kernel on a CUDA GPU
    of compute capability 8.0+; else one SDPA call per packed document (any device). None of them
    builds the T x T block mask that plain ``sdpa`` needs for packed rows (see
    :mod:`fathom.model.attention`). Every choice is logged with its reason.
    """
    from fathom.model.attention import IMPLEMENTATIONS, SDPA_PACKED, register, varlen_available

    register()
    if requested == "auto":
        varlen, why_not = varlen_available(device)
        if device.type == "cuda" and flash_attn_available():
            choice, why = "flash_attention_2", "flash-attn is installed and the device is CUDA"
        elif varlen:
            choice, why = IMPLEMENTATIONS["varlen"], "flash-attn is not installed; torch.nn.attention.varlen instead"
        else:
            choice, why = SDPA_PACKED, f"{why_not}; one SDPA call per packed document"
        logger.info("attention: %s (%s)", choice, why)
        return choice
    if requested == "flash_attention_2":
        if device.type != "cuda":
            raise ConfigError(
                "model.attn_implementation: flash_attention_2 needs a CUDA device, "
                f"this run is on {device.type}; use auto or sdpa_packed"
            )
        if not flash_attn_available():
            raise ConfigError(
                "model.attn_implementation: flash_attention_2 needs flash-attn: "
                "pip install flash-attn --no-build-isolation (or set attn_implementation: auto)"
            )
    if requested == "varlen":
        usable, why_not = varlen_available(device)
        if not usable:
            raise ConfigError(f"model.attn_implementation: varlen cannot run here: {why_not}; use auto or sdpa_packed")
    logger.info("attention: %s (as configured)", requested)
    return IMPLEMENTATIONS.get(requested, requested)


def quantization_config(cfg: ModelConfig, compute_dtype: torch.dtype):
    """A BitsAndBytesConfig for 8-bit or 4-bit NF4 (double quantization), or None."""
    if not (cfg.load_in_8bit or cfg.load_in_4bit):
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        flag = "load_in_8bit" if cfg.load_in_8bit else "load_in_4bit"
        raise ConfigError(
            f"model.{flag}: needs bitsandbytes: pip install 'fathom[quant]' (or pip install bitsandbytes)"
        )
    from transformers import BitsAndBytesConfig

    if cfg.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_tokenizer(source: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    kwargs = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    if len(tokenizer) < 32:  # transformers builds an empty tokenizer (1 token) from a folder without one
        raise ConfigError(
            f"model.name_or_path: {cfg.name_or_path} has no usable tokenizer ({len(tokenizer)} tokens; "
            "tokenizer.json / tokenizer_config.json missing?); copy the base model's tokenizer files into it"
        )
    return tokenizer


def load_configured_tokenizer(cfg: ModelConfig):
    """The tokenizer of ``model.name_or_path`` (seconds, no weights); a failure is one line naming the field."""
    try:
        return load_tokenizer(resolve_model_source(cfg.name_or_path), cfg)
    except ConfigError:
        raise
    except (OSError, ValueError) as exc:
        raise _explain_load_failure(cfg.name_or_path, exc) from exc


def _explain_load_failure(name: str, exc: Exception) -> ConfigError:
    local = Path(name).exists()
    if local:
        reason = f"{name} exists but is not a loadable model folder ({type(exc).__name__}: {str(exc).splitlines()[0]})"
    else:
        reason = (
            f"'{name}' is not a local folder and could not be fetched from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Check the id, log in for gated models, or download it first (huggingface-cli download ...) "
            "and point model.name_or_path at the folder"
        )
    return ConfigError(f"model.name_or_path: {reason}")


def enable_activation_checkpointing(model: torch.nn.Module, offload: bool = False) -> None:
    """Recompute each decoder layer in backward; with ``offload`` its saved input waits in CPU memory.

    Both are transformers' own mechanism (torch checkpointing, non-reentrant; torch's
    ``save_on_cpu`` for the offload).
    """
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False}, offload=offload)
        return
    if offload:
        raise ConfigError("train.offload_activations: needs transformers >= 5.x with activation_checkpointing_enable")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def set_checkpointing(model: torch.nn.Module, every: int, offload: bool) -> int:
    """Recompute the decoder layers whose index % ``every`` == 0 (0: none), the rest keep their activations;
    ``offload``: the recomputed layers' saved inputs wait in host memory. Returns how many are recomputed.

    For ``train.memory: auto``, which picks this per phase. transformers' ``every_n_layers`` sets the same
    layers, but only when checkpointing is first enabled (a second enable stacks another input-gradient
    hook); here the per-layer switches are set directly, and the checkpoint function (which carries the
    offload) is rebuilt only when the offload changes.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]
    if every and getattr(base, "_fathom_offload", None) != offload:
        if getattr(base, "_require_grads_hooks", None):
            base.disable_input_require_grads()
        enable_activation_checkpointing(base, offload)
        base._fathom_offload = offload
    for index, layer in enumerate(layers):
        layer.gradient_checkpointing = bool(every) and index % every == 0
    return sum(layer.gradient_checkpointing for layer in layers)


def tile_mlps(model: torch.nn.Module, tile_tokens: int) -> int:
    """Run every decoder MLP over sequence tiles of ``tile_tokens`` in training; returns how many.

    An MLP's T x intermediate tensors (gate, up, their product, in bf16 plus the LoRA path) are the
    largest part of a recomputed layer at long context: 4 x 1.2 GiB at 32K on a 7B. Each tile runs
    under its own (nested, non-reentrant) checkpoint, so its intermediates exist only while that
    tile is recomputed in the backward; RNG state is kept per tile, so dropout masks match. The math
    per token is unchanged (the weight gradients are summed tile by tile). Written by hand after
    Arctic Long Sequence Training's TiledMLP; transformers has no such option.
    """
    if tile_tokens <= 0:
        return 0
    count = 0
    for module in model.modules():
        if type(module).__name__.endswith("MLP") and hasattr(module, "down_proj"):
            module.forward = _tiled(module.forward, tile_tokens)
            count += 1
    return count


def _tiled(whole, tile: int):
    """``whole`` (an MLP's forward over (B, T, H)) run over tiles of ``tile`` tokens, each checkpointed."""
    from torch.utils.checkpoint import checkpoint

    def fresh(part: torch.Tensor) -> torch.Tensor:
        # A new view per (re)computation: the checkpoint hands its recompute the very tensor the forward got,
        # and lora.share_dropout caches a dropped copy per input tensor, so the recompute would reuse it,
        # draw no mask, and save fewer tensors than the forward did (torch's CheckpointError). Under layer
        # checkpointing the layer's recompute made fresh inputs anyway; train.memory auto may keep layers whole.
        return whole(part.view_as(part))

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1] <= tile or not torch.is_grad_enabled():
            return whole(x)
        starts = range(0, x.shape[1], tile)
        return torch.cat([checkpoint(fresh, x[:, s : s + tile], use_reentrant=False) for s in starts], dim=1)

    return forward


NORM_BACKWARD_ROWS = 8192  # tokens per piece of the lean RMSNorm's backward

# RMSNorm classes whose forward is exactly Llama's: weight * (x / rms(x) in fp32, cast back). Gemma's
# (1 + weight) and others are left alone.
LEAN_NORM_TYPES = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm", "Qwen2MoeRMSNorm")


def lean_norms(model: torch.nn.Module) -> int:
    """Give every Llama-style RMSNorm a backward that keeps only its input and 1/rms; returns how many.

    transformers' RMSNorm upcasts its input to fp32, and autograd keeps that fp32 copy and the fp32
    normalized one (plus the bf16 cast) for the backward: 5 bytes per value beyond the input, twice
    per decoder layer and once before the loss, which at 128K tokens on a 7B is 4.4 GiB inside the
    recomputed layer. Here the forward computes the very same values, and the backward recomputes
    the normalized input from the saved input and 1/rms (T floats) in fp32. Written by hand: Liger's
    fused RMSNorm does the same but needs CUDA and Triton.
    """
    count = 0
    for module in model.modules():
        if type(module).__name__ in LEAN_NORM_TYPES and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_lean_norm_forward, module)
            count += 1
    return count


def _lean_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    return _LeanRMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


class _LeanRMSNorm(torch.autograd.Function):
    """``weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)`` with x in fp32, saving x and 1/rms only."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.to(torch.float32)
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        normed = (x32 * rstd).to(x.dtype)
        ctx.save_for_backward(x, rstd, weight)
        return weight * normed

    @staticmethod
    def backward(ctx, grad):
        """d x = rstd * (g - n * mean(g * n)), g the gradient reaching the fp32 normalized n, computed over
        :data:`NORM_BACKWARD_ROWS` tokens at a time, so its fp32 temporaries never span the whole row
        (three fp32 copies of a 128K-token input would be 5 GiB on a 7B)."""
        x, rstd, weight = ctx.saved_tensors
        width = x.shape[-1]
        rows_x, rows_grad, rows_rstd = x.reshape(-1, width), grad.reshape(-1, width), rstd.reshape(-1, 1)
        grad_x = torch.empty_like(rows_x)
        want_weight = ctx.needs_input_grad[1]
        grad_weight = torch.zeros(width, dtype=torch.float32, device=x.device) if want_weight else None
        for start in range(0, rows_x.shape[0], NORM_BACKWARD_ROWS):
            part = slice(start, start + NORM_BACKWARD_ROWS)
            n32 = rows_x[part].to(torch.float32).mul_(rows_rstd[part])
            if want_weight:
                grad_weight += (rows_grad[part] * n32.to(x.dtype)).sum(0).to(torch.float32)
            grad_n = (rows_grad[part] * weight).to(torch.float32)  # through the cast back to x's dtype
            dot = (grad_n * n32).mean(-1, keepdim=True)
            grad_x[part] = grad_n.sub_(n32.mul_(dot)).mul_(rows_rstd[part])
        grad_weight = grad_weight.to(weight.dtype) if want_weight else None
        return grad_x.view_as(x), grad_weight, None


def load_model(
    cfg: ModelConfig, offload_activations: bool = False, place_on_device: bool = True, tokenizer=None
) -> LoadedModel:
    """Load tokenizer (unless given) and model as configured; the model comes back frozen, in train mode.

    ``place_on_device=False`` leaves the weights in host memory (``device`` still names where the
    model will compute): FSDP then moves only each rank's shards to the GPU.
    """
    from transformers import AutoModelForCausalLM

    source = resolve_model_source(cfg.name_or_path)
    device = pick_device(cfg.device)
    dtype = pick_dtype(cfg.dtype, device)
    attn = pick_attn_implementation(cfg.attn_implementation, device)
    quant = quantization_config(cfg, dtype)
    if tokenizer is None:
        tokenizer = load_configured_tokenizer(cfg)

    kwargs = {
        "revision": cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": dtype,
        "attn_implementation": attn,
    }
    if cfg.gguf_file:
        kwargs["gguf_file"] = cfg.gguf_file
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else device.type}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _explain_load_failure(cfg.name_or_path, exc) from exc
    if quant is None and place_on_device:
        model.to(device)
    logger.info(
        "loaded %s on %s in %s%s",
        cfg.name_or_path,
        device if place_on_device or quant is not None else "cpu (to be sharded)",
        str(dtype).replace("torch.", ""),
        " (8-bit base)" if cfg.load_in_8bit else " (4-bit NF4 base)" if cfg.load_in_4bit else "",
    )
    if device.type == "cuda":
        logger.info("CUDA allocator: %s", allocator_settings())
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad_(False)
    # No peft.prepare_model_for_kbit_training: it upcasts every non-quantized weight (embeddings,
    # output layer) to fp32, +4.4 GB for Qwen2.5-7B. The base is frozen here and non-reentrant
    # checkpointing needs no input grads, so nothing else of it is needed.
    if offload_activations and device.type == "cpu":
        logger.info("train.offload_activations: nothing to do on the CPU, activations already live in host memory")
        offload_activations = False
    if cfg.gradient_checkpointing is not False:  # None: train.memory decides per phase, layer by layer
        enable_activation_checkpointing(model, offload_activations)
        model._fathom_offload = offload_activations
    model.train()
    return LoadedModel(model, tokenizer, source, device, dtype, attn)
