"""``fathom serve-args``: the serving commands that keep a model's RoPE setting and its trained context.

A long-context model served without its RoPE scaling reads every position past the base's native
window wrongly, and the engines do not see an adapter's ``fathom_rope.json``. So the commands name
it: vLLM through ``--hf-overrides`` (the ``rope_scaling`` form Qwen's model cards give, which
transformers 4 and 5 both accept) and ``--max-model-len``; llama.cpp and Ollama read it from the
GGUF's metadata (``fathom export --gguf`` writes and checks it), with the explicit llama.cpp flags
given too.
"""

from __future__ import annotations

import json
import shlex

from fathom.export.folder import ModelFolder

ENGINES = ("vllm", "llama.cpp", "ollama")


def rope_overrides(model: ModelFolder) -> dict | None:
    """The config fields an engine must be given for the trained RoPE (None: the base's own is right)."""
    if not model.scaled_rope:
        return None
    legacy = model.rope.legacy_scaling_kwargs()
    return {"rope_scaling": legacy["rope_scaling"], "max_position_embeddings": model.rope.max_position_embeddings}


def vllm_command(model: ModelFolder, served: str | None = None) -> tuple[str, list[str]]:
    """``vllm serve ...`` for ``model`` and the notes that go with it; ``served`` names the model to serve
    (a Hub repo the folder was pushed to; default: the folder, or for an adapter its base)."""
    notes: list[str] = []
    length = model.serving_length
    if model.kind == "merged":
        args = ["vllm", "serve", served or str(model.folder)]
    else:
        base = served or model.base_hub_id or model.base_model
        args = ["vllm", "serve", base, "--enable-lora", "--lora-modules", f"fathom={model.folder}"]
        if model.lora_rank:
            args += ["--max-lora-rank", str(_vllm_rank(model.lora_rank))]
        if model.whole_modules:
            notes.append(
                f"this adapter also trains {', '.join(model.whole_modules)} whole, which vLLM's LoRA does not load: "
                "serve the merged folder instead (fathom merge)"
            )
    if length:
        args += ["--max-model-len", str(length)]
    overrides = rope_overrides(model)
    if overrides is not None and model.kind == "adapter":
        args += ["--hf-overrides", json.dumps(overrides, separators=(",", ":"))]
        notes.append(f"--hf-overrides gives the base the RoPE the adapter was trained with ({model.rope.describe()})")
    elif overrides is not None:
        notes.append(f"the merged config.json carries the RoPE it was trained with ({model.rope.describe()})")
    return shlex.join(args), notes


def _vllm_rank(rank: int) -> int:
    """vLLM accepts --max-lora-rank from a fixed set (8, 16, 32, 64, 128, 256, 320, 512): the smallest that fits."""
    return next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= rank), rank)


def llama_cpp_command(model: ModelFolder, gguf: str) -> str:
    args = ["llama-server", "-m", gguf]
    if model.serving_length:
        args += ["-c", str(model.serving_length)]
    if model.scaled_rope:
        p = model.rope.parameters
        args += ["--rope-scaling", model.rope.rope_type, "--rope-scale", f"{p.get('factor', 1):g}"]
        if p.get("original_max_position_embeddings"):
            args += ["--yarn-orig-ctx", str(p["original_max_position_embeddings"])]
    return shlex.join(args)


def ollama_modelfile(model: ModelFolder, gguf: str) -> str:
    lines = [f"FROM {gguf}"]
    if model.serving_length:
        lines.append(f"PARAMETER num_ctx {model.serving_length}")
    return "\n".join(lines)


def serving_lines(model: ModelFolder, engine: str | None = None, gguf: str | None = None) -> list[str]:
    """What ``fathom serve-args`` prints: per engine, the command and its notes."""
    lines: list[str] = []
    if engine in (None, "vllm"):
        command, notes = vllm_command(model)
        lines += ["# vLLM", command, *[f"#   {n}" for n in notes], ""]
    gguf_file = gguf or "model.gguf"
    needs_gguf = "" if gguf else "   (model.gguf: fathom export --gguf model.gguf MERGED_FOLDER)"
    if engine in (None, "llama.cpp"):
        lines += [f"# llama.cpp{needs_gguf}", llama_cpp_command(model, gguf_file), ""]
    if engine in (None, "ollama"):
        modelfile = ollama_modelfile(model, gguf_file)
        lines += ["# Ollama: write this Modelfile, then: ollama create fathom -f Modelfile && ollama run fathom"]
        lines += [*modelfile.splitlines(), ""]
    if model.scaled_rope and engine in (None, "llama.cpp", "ollama"):
        lines.append(
            "# transformers' GGUF loader (from_pretrained(..., gguf_file=...)) drops RoPE scaling: load the merged "
            "folder in transformers, the GGUF in llama.cpp / Ollama"
        )
    return lines[:-1] if lines and lines[-1] == "" else lines
