"""``fathom export --gguf``: a merged folder to one GGUF file for llama.cpp / Ollama, its RoPE checked.

The conversion is llama.cpp's own ``convert_hf_to_gguf.py`` (it knows every architecture's tensor
names and tokenizer; no library on PyPI replaces it): found with ``--llama-cpp DIR``, the
``LLAMA_CPP_DIR`` variable, or on PATH. It ships inside the llama-cpp-python source distribution,
so it installs offline from PyPI::

    pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz
    fathom export --gguf model.gguf MERGED --llama-cpp llama_cpp_python-*/vendor/llama.cpp

The written file is then read back with the ``gguf`` package, and what a long-context model lives
by is compared with the merged folder's config: architecture, context length, RoPE base, scaling
type and factor, original context length. A wrong or missing value is written correctly into a
copy of the metadata (``gguf``'s own ``copy_with_new_metadata``); the file is only moved into
place when it agrees. (transformers' own GGUF loader drops RoPE scaling when it reads a file back,
so a scaled GGUF is meant for llama.cpp and Ollama, not for ``from_pretrained(gguf_file=...)``.)
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fathom.config import ConfigError
from fathom.errors import ExportFailed
from fathom.export.folder import ModelFolder, read_model_folder

logger = logging.getLogger("fathom")

CONVERTER = "convert_hf_to_gguf.py"
OUTTYPES = ("f16", "bf16", "q8_0", "f32")
GET_CONVERTER = (
    "pip download --no-deps --no-binary :all: llama-cpp-python && tar xzf llama_cpp_python-*.tar.gz, then pass "
    "--llama-cpp llama_cpp_python-<version>/vendor/llama.cpp"
)
# transformers model_type -> llama.cpp's architecture name, where they differ or are known
ARCHITECTURES = {"qwen2": "qwen2", "qwen3": "qwen3", "llama": "llama", "mistral": "llama", "gemma2": "gemma2"}
SCALING_TYPES = {"yarn": "yarn", "linear": "linear"}  # types llama.cpp reads from rope.scaling.*


@dataclass(frozen=True)
class Mismatch:
    key: str
    found: object
    expected: object

    def __str__(self) -> str:
        return f"{self.key} is {self.found!r}, the model's config says {self.expected!r}"


def find_converter(llama_cpp: Path | None) -> Path:
    """llama.cpp's converter script: in ``llama_cpp``, in ``$LLAMA_CPP_DIR``, or on PATH."""
    folders = [llama_cpp] if llama_cpp is not None else []
    if os.environ.get("LLAMA_CPP_DIR"):
        folders.append(Path(os.environ["LLAMA_CPP_DIR"]))
    for folder in folders:
        if (folder / CONVERTER).is_file():
            return folder / CONVERTER
    on_path = shutil.which(CONVERTER)
    if on_path and llama_cpp is None:
        return Path(on_path)
    where = f"{llama_cpp}" if llama_cpp is not None else "PATH or LLAMA_CPP_DIR"
    raise ConfigError(f"--llama-cpp: llama.cpp's {CONVERTER} is not in {where}; get it with: {GET_CONVERTER}")


def expected_metadata(model: ModelFolder, model_type: str | None) -> dict[str, object]:
    """The GGUF keys a long-context model's RoPE lives by, with the values the merged config gives."""
    arch = ARCHITECTURES.get(model_type or "", model_type or "")
    rope = model.rope
    expected: dict[str, object] = {"general.architecture": arch, f"{arch}.context_length": rope.max_position_embeddings}
    if rope.theta is not None:
        expected[f"{arch}.rope.freq_base"] = float(rope.theta)
    if rope.rope_type in SCALING_TYPES:
        p = rope.parameters
        expected[f"{arch}.rope.scaling.type"] = SCALING_TYPES[rope.rope_type]
        expected[f"{arch}.rope.scaling.factor"] = float(p.get("factor", 1.0))
        if p.get("original_max_position_embeddings"):
            expected[f"{arch}.rope.scaling.original_context_length"] = int(p["original_max_position_embeddings"])
    return expected


def check_gguf(path: Path, expected: dict[str, object]) -> list[Mismatch]:
    """Every key of ``expected`` whose value in the GGUF file differs (or is missing), read with ``gguf``'s reader."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    found = []
    for key, want in expected.items():
        field = reader.get_field(key)
        value = field.contents() if field is not None else None
        if isinstance(want, float) and isinstance(value, (int, float)):
            same = abs(float(value) - want) <= 1e-6 * max(1.0, abs(want))
        else:
            same = value == want
        if not same:
            found.append(Mismatch(key, value, want))
    unscaled = not any(key.endswith(".rope.scaling.type") for key in expected)
    arch = expected["general.architecture"]
    scaling = reader.get_field(f"{arch}.rope.scaling.type")
    if unscaled and scaling is not None and scaling.contents() not in ("none", None):
        found.append(Mismatch(f"{arch}.rope.scaling.type", scaling.contents(), "none"))
    return found


def fix_gguf(path: Path, out: Path, mismatches: list[Mismatch]) -> None:
    """Copy ``path`` to ``out`` with the mismatched keys written as expected (the architecture cannot be fixed)."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(path))
    arch = reader.get_field("general.architecture").contents()
    new = {}
    for m in mismatches:
        if isinstance(m.expected, str):
            kind = gguf.GGUFValueType.STRING
        elif isinstance(m.expected, float):
            kind = gguf.GGUFValueType.FLOAT32
        else:
            kind = gguf.GGUFValueType.UINT32
        new[m.key] = MetadataDetails(kind, m.expected, "fathom: the merged config's value")
    writer = gguf.GGUFWriter(str(out), arch=arch, endianess=reader.endianess)
    alignment = reader.get_field("general.alignment")
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    copy_with_new_metadata(reader, writer, new, remove_metadata=[])


def export_gguf(merged: Path, out: Path, outtype: str = "bf16", llama_cpp: Path | None = None) -> Path:
    """Convert the merged folder ``merged`` to ``out`` (a new file), checked against its config; returns ``out``."""
    if outtype not in OUTTYPES:
        raise ConfigError(f"--outtype: {outtype!r} is not one of {', '.join(OUTTYPES)}")
    is_adapter = (Path(merged) / "adapter_config.json").is_file()  # said first: an adapter cannot be exported at all
    model = None if is_adapter else read_model_folder(merged, "MERGED")
    if model is None or model.kind != "merged":
        raise ConfigError(
            f"MERGED: {merged} is an adapter; merge it first (fathom merge --base BASE --adapter {merged} --out M), "
            "then export M"
        )
    if out.exists():
        raise ConfigError(f"--gguf: {out} already exists; choose a new file (nothing was changed)")
    converter = find_converter(llama_cpp)
    model_type = _model_type(merged)
    out.parent.mkdir(parents=True, exist_ok=True)
    converted, fixed = out.with_name(f".tmp-{out.name}"), out.with_name(f".tmp-fixed-{out.name}")
    try:
        _convert(converter, merged, converted, outtype)
        expected = expected_metadata(model, model_type)
        mismatches = check_gguf(converted, expected)
        if any(m.key == "general.architecture" for m in mismatches):
            raise ExportFailed(f"fathom export: {out.name}: {mismatches[0]}; this converter does not know the model")
        if mismatches:
            logger.warning("the converter wrote %s; writing the config's values", "; ".join(map(str, mismatches)))
            fix_gguf(converted, fixed, mismatches)
            os.replace(fixed, converted)
            remaining = check_gguf(converted, expected)
            if remaining:
                raise ExportFailed(f"fathom export: {out.name}: still {remaining[0]} after rewriting the metadata")
        os.replace(converted, out)
    finally:
        converted.unlink(missing_ok=True)
        fixed.unlink(missing_ok=True)
    checked = ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in expected.items())
    logger.info("wrote %s (%s); read back with the gguf reader: %s", out, outtype, checked)
    if model.rope.scaled:
        logger.info(
            "llama.cpp and Ollama read that RoPE scaling from the file; transformers' from_pretrained(gguf_file=...) "
            "drops it, so load the merged folder in transformers (fathom serve-args %s --gguf %s)",
            merged,
            out,
        )
    return out


def _convert(converter: Path, merged: Path, out: Path, outtype: str) -> None:
    command = [sys.executable, str(converter), str(merged), "--outfile", str(out), "--outtype", outtype]
    logger.info("converting with %s", converter)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or [f"exit {done.returncode}"]
        missing = re.search(r"No module named '([\w.]+)'", last[0])
        hint = f"; install what it needs: pip install {missing.group(1).split('.')[0]}" if missing else ""
        raise ExportFailed(f"fathom export: {CONVERTER} failed: {last[0].strip()[:240]}{hint}")


def _model_type(folder: Path) -> str | None:
    from fathom.fsutil import read_json

    return read_json(folder / "config.json").get("model_type")
