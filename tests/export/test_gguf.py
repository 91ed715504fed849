"""fathom export --gguf: llama.cpp's converter, then the RoPE metadata read back with the gguf reader.

The metadata check and fix always run, on small GGUF files written here with the gguf package. The
conversion runs with llama.cpp's own converter from the llama-cpp-python source distribution
(``LLAMA_CPP_DIR``, else fetched once from PyPI into fathom's cache; skipped when neither works);
llama.cpp's logits are compared with the merged folder's when llama-cpp-python is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QWEN_TOKENIZER, build_tiny_model

from fathom.cli import main
from fathom.export.folder import ModelFolder
from fathom.export.gguf import Mismatch, check_gguf, expected_metadata, fix_gguf
from fathom.model.rope import RopeSetting

YARN = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128, "rope_theta": 10000.0}
LLAMA_CPP_PYTHON = "0.3.36"  # its sdist carries vendor/llama.cpp/convert_hf_to_gguf.py


def _model(parameters: dict, window: int) -> ModelFolder:
    return ModelFolder(Path("m"), "merged", "base", RopeSetting(parameters, window), None, window)


def _write_gguf(path: Path, metadata: dict) -> np.ndarray:
    import gguf

    writer = gguf.GGUFWriter(str(path), "qwen2")
    for key, value in metadata.items():
        kind = {str: gguf.GGUFValueType.STRING, float: gguf.GGUFValueType.FLOAT32}.get(
            type(value), gguf.GGUFValueType.UINT32
        )
        writer.add_key_value(key, value, kind)
    tensor = np.arange(64, dtype=np.float32).reshape(8, 8)
    writer.add_tensor("token_embd.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensor


def test_a_lost_rope_scaling_is_found_and_written_back(tmp_path):
    """What a converter that ignores rope_parameters leaves: the native window and no scaling keys."""
    import gguf

    expected = expected_metadata(_model(YARN, 256), "qwen2")
    assert expected == {
        "general.architecture": "qwen2",
        "qwen2.context_length": 256,
        "qwen2.rope.freq_base": 10000.0,
        "qwen2.rope.scaling.type": "yarn",
        "qwen2.rope.scaling.factor": 2.0,
        "qwen2.rope.scaling.original_context_length": 128,
    }
    lost = tmp_path / "lost.gguf"
    tensor = _write_gguf(lost, {"qwen2.context_length": 128, "qwen2.rope.freq_base": 10000.0})
    found = {m.key: (m.found, m.expected) for m in check_gguf(lost, expected)}
    assert found == {
        "qwen2.context_length": (128, 256),
        "qwen2.rope.scaling.type": (None, "yarn"),
        "qwen2.rope.scaling.factor": (None, 2.0),
        "qwen2.rope.scaling.original_context_length": (None, 128),
    }
    fixed = tmp_path / "fixed.gguf"
    fix_gguf(lost, fixed, check_gguf(lost, expected))
    assert check_gguf(fixed, expected) == []
    reader = gguf.GGUFReader(str(fixed))
    assert np.array_equal(reader.get_tensor(0).data, tensor)


def test_scaling_the_config_does_not_have_is_a_mismatch_too(tmp_path):
    plain = {"rope_type": "default", "rope_theta": 10000.0}
    path = tmp_path / "x.gguf"
    _write_gguf(
        path, {"qwen2.context_length": 128, "qwen2.rope.freq_base": 10000.0, "qwen2.rope.scaling.type": "linear"}
    )
    (mismatch,) = check_gguf(path, expected_metadata(_model(plain, 128), "qwen2"))
    assert (mismatch.key, mismatch.found, mismatch.expected) == ("qwen2.rope.scaling.type", "linear", "none")


def test_export_refuses_an_adapter_a_taken_file_and_a_missing_converter(tmp_path, local_model_dir, capsys, monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "x", "r": 4}')
    assert main(["export", str(adapter), "--gguf", str(tmp_path / "a.gguf")]) == 2
    assert "is an adapter; merge it first (fathom merge" in capsys.readouterr().err
    taken = tmp_path / "taken.gguf"
    taken.write_text("mine")
    assert main(["export", str(local_model_dir), "--gguf", str(taken)]) == 2
    assert "already exists" in capsys.readouterr().err and taken.read_text() == "mine"
    assert main(["export", str(local_model_dir), "--gguf", str(tmp_path / "b.gguf"), "--llama-cpp", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "convert_hf_to_gguf.py is not in" in err[0] and "pip download --no-deps" in err[0]


@pytest.fixture(scope="session")
def llama_cpp_dir(tmp_path_factory) -> Path:
    """llama.cpp's source tree from the llama-cpp-python sdist: $LLAMA_CPP_DIR, else fetched once from PyPI."""
    if os.environ.get("LLAMA_CPP_DIR"):
        return Path(os.environ["LLAMA_CPP_DIR"])
    pytest.importorskip("sentencepiece", reason="llama.cpp's converter imports sentencepiece (in fathom[dev])")
    cache = Path(os.environ.get("FATHOM_TEST_CACHE", Path.home() / ".cache" / "fathom-tests"))
    tree = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    download = tmp_path_factory.mktemp("sdist")
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(download),
         f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    archives = list(download.glob("*.tar.gz"))
    if fetched.returncode != 0 or not archives:
        reason = fetched.stderr.strip()[-200:]
        pytest.skip(f"llama.cpp's converter: set LLAMA_CPP_DIR, or let pip fetch llama-cpp-python's sdist ({reason})")
    with tarfile.open(archives[0]) as archive:
        members = [
            m
            for m in archive.getmembers()
            if "/vendor/llama.cpp/" in m.name
            and ("/convert_hf_to_gguf.py" in m.name or "/conversion/" in m.name or "/gguf-py/" in m.name)
        ]
        try:
            archive.extractall(cache, members=members, filter="data")
        except TypeError:  # Python before 3.10.12 / 3.11.4 has no extraction filters
            archive.extractall(cache, members=members)  # PyPI's own sdist, the members chosen above
    return tree


@pytest.fixture(scope="module")
def merged_qwen(tmp_path_factory) -> Path:
    """A tiny Qwen2 with Qwen2.5's tokenizer (llama.cpp's converter knows it) and YaRN x2 past a 128 window."""
    if not QWEN_TOKENIZER.exists():
        pytest.skip("needs ../shared's Qwen2.5 tokenizer: llama.cpp's converter refuses tokenizers it does not know")
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("merged_qwen")
    tokenizer = AutoTokenizer.from_pretrained(QWEN_TOKENIZER)
    return build_tiny_model(
        folder, tokenizer, "qwen2", vocab_size=151_936, max_position_embeddings=256, rope_parameters=YARN
    )


def test_export_writes_the_rope_llama_cpp_reads(llama_cpp_dir, merged_qwen, tmp_path):
    out = tmp_path / "model.gguf"
    assert (
        main(["export", str(merged_qwen), "--gguf", str(out), "--outtype", "f32", "--llama-cpp", str(llama_cpp_dir)])
        == 0
    )
    assert out.stat().st_size > 0 and not list(tmp_path.glob(".tmp-*"))  # export read it back and found it right

    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="comparing logits needs llama-cpp-python (builds from its sdist)"
    )
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 1000, (240,), generator=torch.Generator().manual_seed(0)).tolist()  # past the 128 window
    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(merged_qwen).eval()(torch.tensor([ids])).logits[0].numpy()
    lost = tmp_path / "lost.gguf"  # the same file with its scaling dropped, as a lossy export leaves it
    fix_gguf(out, lost, [Mismatch("qwen2.rope.scaling.type", "yarn", "none")])
    late = slice(140, 240)  # positions past the native window, where the scaling matters
    error = {}
    for path in (out, lost):
        engine = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
        if path == out:  # the metadata as llama.cpp itself reads it
            meta = engine.metadata
            assert (meta["qwen2.rope.scaling.type"], float(meta["qwen2.rope.scaling.factor"])) == ("yarn", 2.0)
            assert int(meta["qwen2.rope.scaling.original_context_length"]) == 128
            assert int(meta["qwen2.context_length"]) == 256
        engine.eval(ids)
        error[path.name] = float(np.abs(np.asarray(engine.scores[: len(ids)])[late] - reference[late]).max())
        engine.close()
    scale = float(np.abs(reference[late]).max())
    assert error["model.gguf"] < 1e-3 * scale, error  # llama.cpp reads the RoPE the merged folder has
    assert error["lost.gguf"] > 10 * error["model.gguf"], error  # and without it the positions read differently
