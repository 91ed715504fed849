"""fathom push (--dry-run, and the upload calls), the model card, and fathom serve-args, on a real tiny run
trained past its base's window (so the RoPE setting must survive every step)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import build_tiny_model, small_run_config, train_bpe_tokenizer, write_config

from fathom.cli import main


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory, synthetic_corpus):
    """A tiny base (window 128, a README naming its license) and a run to 256 with rope_scaling auto."""
    tmp = tmp_path_factory.mktemp("publish")
    base = build_tiny_model(tmp / "base", train_bpe_tokenizer(synthetic_corpus), "qwen2", max_position_embeddings=128)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny base\n")
    cfg = small_run_config(base, [synthetic_corpus], tmp / "run", total_tokens=2048)
    cfg["model"]["rope_scaling"] = "auto"
    cfg["data"]["cache_dir"] = str(tmp / "cache")
    assert main(["train", "--config", str(write_config(tmp / "c.yaml", cfg))]) == 0
    merged = tmp / "merged"
    adapter = tmp / "run" / "final_256_model"
    assert main(["merge", "--base", str(base), "--adapter", str(adapter), "--out", str(merged)]) == 0
    return tmp, base, adapter, merged


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def _eval_folder(tmp: Path) -> Path:
    """A fathom eval report, written by fathom's own report writer."""
    from fathom.eval.runner import write_report

    results = {
        "base": "tiny",
        "lengths": [128, 256],
        "depths": [0.0, 1.0],
        "samples": 1,
        "kinds": ["passkey"],
        "models": [
            {
                "name": "final_256_model",
                "needle": {"passkey": {"128": {"0.0": 1.0, "1.0": 0.5}, "256": {"0.0": 1.0, "1.0": 0.0}}},
            }
        ],
    }
    out = tmp / "eval"
    write_report(results, out)
    return out


def test_push_dry_run_writes_the_card_and_the_files_and_touches_nothing(scaled_run, tmp_path, capsys):
    tmp, _base, adapter, _ = scaled_run
    before = _digest(adapter)
    out = tmp_path / "staged"
    args = ["push", "--adapter", str(adapter), "--repo", "acme/tiny-maritime-256", "--dry-run", "--out", str(out)]
    assert main([*args, "--base-id", "acme/tiny-base", "--eval", str(_eval_folder(tmp_path))]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{out}/" and any(line.startswith("  adapter_model.safetensors  (") for line in printed)
    assert _digest(adapter) == before, "the user's folder was written to"

    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "fathom_rope.json",
        "fathom_config.yaml",
    } <= names
    assert "eval/heatmap_final_256_model_passkey.png" in names and "tokenizer.json" in names
    assert not any(n.startswith(("optimizer", "rng")) or n.endswith(".bin") for n in names)
    for path in out.rglob("*"):  # no local path of the user's survives in a text file
        if path.suffix in (".json", ".yaml", ".md"):
            assert str(tmp) not in path.read_text(encoding="utf-8"), f"{path.name} names a local path"
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "acme/tiny-base"
    config = yaml.safe_load((out / "fathom_config.yaml").read_text())
    assert config["data"]["paths"] == ["<1 local path(s), not published>"] and config["output_dir"] == "."

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == "acme/tiny-base" and meta["license"] == "apache-2.0"  # from the base's card
    assert meta["library_name"] == "peft" and "long-context" in meta["tags"]
    assert "| Phase_1c_Long | continual pretraining | 256 | 512 | 512 | " in card  # budget and trained tokens
    assert "Continual pretraining read 24 documents" in card and "formats: 24 .md" in card
    assert "Trained with **yarn x2 (128 -> 256)" in card
    assert "'rope_type': 'yarn'" in card and "rope_parameters=" in card and "max_position_embeddings=256" in card
    assert 'torch_dtype="auto", rope_scaling={' in card  # transformers 4.x
    assert 'PeftModel.from_pretrained(base, "acme/tiny-maritime-256")' in card
    assert "vllm serve acme/tiny-base --enable-lora --lora-modules fathom=acme/tiny-maritime-256" in card
    assert '--hf-overrides \'{"rope_scaling":{"rope_type":"yarn","factor":2.0' in card
    assert "## Evaluation" in card and "](eval/heatmap_final_256_model_passkey.png)" in card
    assert "## Ask it" not in card  # Phase 1 only: it continues text, it was taught no question form


def test_the_pushed_adapter_loads_as_the_card_says(scaled_run, tmp_path):
    """The card's transformers-5 code, run against the staged folder and the base it names, equals fathom's loading."""
    import torch

    from fathom.model.adapter import load_for_inference

    _tmp, base, adapter, _ = scaled_run
    out = tmp_path / "staged"
    args = ["push", "--adapter", str(adapter), "--repo", "acme/x", "--dry-run", "--out", str(out)]
    assert main([*args, "--base-id", "acme/tiny-base"]) == 0
    code = (out / "README.md").read_text().split("transformers 5:\n\n```python\n")[1].split("```")[0]
    scope: dict = {}
    # the Hub, played by the folders: the base repo is the base folder, the adapter repo the staged folder
    exec(code.replace('"acme/tiny-base"', repr(str(base))).replace('"acme/x"', repr(str(out))), scope)
    ours, _, _ = load_for_inference(str(base), str(adapter))
    ids = torch.randint(0, 300, (1, 256))
    with torch.no_grad():
        assert torch.allclose(scope["model"].eval()(ids).logits, ours(ids).logits, atol=1e-5)


def test_push_dry_run_of_a_merged_folder(scaled_run, tmp_path, capsys):
    tmp, _base, _, merged = scaled_run
    out = tmp_path / "staged"
    assert main(["push", "--merged", str(merged), "--repo", "acme/tiny-merged", "--dry-run", "--out", str(out)]) == 0
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and "base_model" not in meta  # the base was a local folder
    assert 'AutoModelForCausalLM.from_pretrained("acme/tiny-merged", dtype="auto")' in card
    assert "vllm serve acme/tiny-merged --max-model-len 256" in card
    record = json.loads((out / "fathom_merge.json").read_text())
    assert record["adapter"] == "final_256_model" and str(tmp) not in json.dumps(record)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


def test_push_uploads_the_staged_folder_through_huggingface_hub(scaled_run, monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    _, _base, adapter, _ = scaled_run
    calls = []
    monkeypatch.setattr(
        HfApi,
        "create_repo",
        lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)) or f"https://huggingface.co/{repo_id}",
    )
    monkeypatch.setattr(
        HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("create_branch", repo_id, kw))
    )

    def upload_folder(self, **kw):
        calls.append(
            (
                "upload_folder",
                kw["repo_id"],
                {"revision": kw["revision"], "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())},
            )
        )

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    args = [
        "push",
        "--adapter",
        str(adapter),
        "--repo",
        "acme/m",
        "--private",
        "--revision",
        "v1",
        "--base-id",
        "acme/base",
    ]
    assert main(args) == 0
    assert [c[0] for c in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0][2]["private"] is True and calls[1][2]["branch"] == "v1" and calls[2][2]["revision"] == "v1"
    assert "README.md" in calls[2][2]["files"] and "adapter_model.safetensors" in calls[2][2]["files"]


def test_push_refuses_what_others_could_not_load_in_one_line(scaled_run, capsys):
    _, _, adapter, _ = scaled_run
    assert main(["push", "--adapter", str(adapter), "--repo", "acme/m"]) == 2  # its base is a local folder
    assert capsys.readouterr().err.startswith("fathom: error: --base-id: the adapter's base is the local folder")
    assert main(["push", "--adapter", str(adapter), "--repo", "not a repo", "--dry-run"]) == 2
    assert "--repo: 'not a repo' is not a Hub repo id" in capsys.readouterr().err


def test_serve_args_carry_the_rope_and_the_trained_context(scaled_run, capsys):
    _, base, adapter, merged = scaled_run
    assert main(["serve-args", str(adapter)]) == 0
    lines = capsys.readouterr().out.splitlines()
    vllm = lines[lines.index("# vLLM") + 1]
    assert vllm.startswith(f"vllm serve {base} --enable-lora --lora-modules fathom={adapter} --max-lora-rank 8")
    overrides = json.loads(vllm.split("--hf-overrides ")[1].strip("'"))
    assert overrides == {
        "rope_scaling": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 128},
        "max_position_embeddings": 256,
    }
    assert "--max-model-len 256" in vllm
    assert "llama-server -m model.gguf -c 256 --rope-scaling yarn --rope-scale 2 --yarn-orig-ctx 128" in lines
    assert "PARAMETER num_ctx 256" in lines
    assert any("transformers' GGUF loader" in line and "drops RoPE scaling" in line for line in lines)

    assert main(["serve-args", str(merged), "--engine", "vllm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# vLLM\nvllm serve {merged} --max-model-len 256\n") and "--hf-overrides" not in out


def test_serve_args_on_a_folder_that_is_no_model_is_one_line(tmp_path, capsys):
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir()
    assert main(["serve-args", str(tmp_path)]) == 2
    assert "FOLDER: " in capsys.readouterr().err


def test_no_local_path_reaches_a_staged_folder(scaled_run, tmp_path, capsys):
    """Every file type staged (card, configs, tokenizer files, the eval's results) is scanned for the
    machine's paths; they are replaced, and a binary file holding one stops the push."""
    tmp, base, adapter, _ = scaled_run
    copy = tmp_path / "run" / "final_256_model"
    shutil.copytree(adapter, copy)
    config = yaml.safe_load((copy / "fathom_config.yaml").read_text())
    sft = {"name": "Phase_2_Instruct", "max_seq_length": 256, "paths": [str(tmp / "qa.jsonl")]}
    sft |= {"prompt_template": "Question: {question}\n\n{document}\n\nQuestion: {question}", "system": "Be brief."}
    config["sft"] = sft | {"init_adapter": str(tmp / "run" / "Phase_1a_Short")}
    (copy / "fathom_config.yaml").write_text(yaml.safe_dump(config))
    tokenizer_config = json.loads((copy / "tokenizer_config.json").read_text())
    (copy / "tokenizer_config.json").write_text(json.dumps(tokenizer_config | {"name_or_path": str(base)}))
    eval_dir = _eval_folder(tmp_path)
    results = json.loads((eval_dir / "results.json").read_text())
    results["models"][0]["path"] = str(copy)
    (eval_dir / "results.json").write_text(json.dumps(results))
    out = tmp_path / "staged"
    args = ["push", "--adapter", str(copy), "--repo", "acme/x", "--dry-run", "--out", str(out), "--eval", str(eval_dir)]
    assert main(args) == 0  # no --base-id: the card may only name the base folder's name
    private = [str(tmp), str(tmp_path), str(base), str(Path.home()), str(Path.cwd())]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [p for p in private if p.encode() in data], path.name
    card = (out / "README.md").read_text()
    assert "vllm serve base --enable-lora" in card  # the base folder's name, not its path
    _assert_the_card_says_how_to_ask(card, sft["prompt_template"], sft["system"])
    assert yaml.safe_load((out / "fathom_config.yaml").read_text())["sft"]["init_adapter"].startswith("<a local")

    (copy / "extra.safetensors").write_bytes(b"\x00\x01" + str(base).encode() + b"\x00")
    capsys.readouterr()
    assert main([*args[:-4], "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "fathom: error: push: extra.safetensors holds a local path of this machine" in err
    assert not (tmp_path / "refused").exists()


def _assert_the_card_says_how_to_ask(card: str, template: str, system: str) -> None:
    """A Phase-2 model's card gives the turns it was taught, as text and as code that builds exactly them."""
    import ast

    ask = card.split("## Ask it\n")[1].split("\n## ")[0]
    assert f"after the system prompt {system!r}" in ask and f"```text\n{template}\n```" in ask
    code = ask.split("```python\n")[1].split("```")[0]
    scope: dict = {"open": lambda *a, **k: type("F", (), {"read": lambda self: "THE DOCUMENT"})()}
    exec(code.split("inputs =")[0], scope)  # up to the messages: the rest needs a model
    question = scope["question"]
    assert scope["messages"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": template.format(document="THE DOCUMENT", question=question)},
    ]
    assert ast.parse(code)
