"""fathom eval on a tiny model: the report files exist and agree with the results JSON."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from helpers import small_run_config, write_config

from fathom.cli import main
from fathom.eval.perplexity import bucket_label, loss_by_position, position_buckets


def test_position_buckets():
    assert position_buckets(8192) == [(0, 1024), (1024, 2048), (2048, 4096), (4096, 8192)]
    assert position_buckets(3000) == [(0, 1024), (1024, 2048), (2048, 3000)]
    assert position_buckets(256) == [(0, 256)]
    assert bucket_label(1024, 2048) == "1K-2K" and bucket_label(0, 256) == "0-256"


def test_loss_by_position_matches_the_plain_loss():
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        Qwen2Config(
            vocab_size=300,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    doc = np.random.default_rng(0).integers(0, 300, 2500)
    result = loss_by_position(model, [doc, doc[:10]], 2048, torch.device("cpu"))
    assert result["documents"] == 1 and list(result["buckets"]) == ["0-1K", "1K-2K"]
    with torch.no_grad():
        logits = model(torch.as_tensor(doc[:2048])[None]).logits[0, :-1]
        losses = torch.nn.functional.cross_entropy(logits, torch.as_tensor(doc[1:2048]), reduction="none")
    assert result["buckets"]["0-1K"]["loss"] == pytest.approx(float(losses[:1023].mean()), rel=1e-5)
    assert result["buckets"]["1K-2K"]["tokens"] == 1024


def test_adapters_named_alike_get_labels_that_tell_them_apart(tmp_path):
    """Runs name their final adapters alike: two under one label would share a table row's name and one
    heatmap file, the second overwriting the first."""
    from fathom.eval.runner import _labels

    alike = [tmp_path / "run-a" / "final_512_instruct_model", tmp_path / "run-b" / "final_512_instruct_model"]
    other = tmp_path / "run-a" / "final_1k_model"
    labels = _labels([str(other), *map(str, alike)])
    assert labels == ["final_1k_model", "run-a/final_512_instruct_model", "run-b/final_512_instruct_model"]
    assert _labels([str(alike[0])]) == ["final_512_instruct_model"]  # alone: the folder's name, as before


@pytest.mark.slow
def test_eval_compares_base_and_adapters_and_writes_the_report(tmp_path, local_model_dir, synthetic_corpus, capsys):
    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=1024)
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    capsys.readouterr()
    report_dir = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--base",
                str(local_model_dir),
                "--adapter",
                str(out / "Phase_1a_Short"),
                "--adapter",
                str(out / "final_256_model"),
                "--haystack",
                str(synthetic_corpus),
                "--lengths",
                "256,512",
                "--depths",
                "3",
                "--out",
                str(report_dir),
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    results = json.loads((report_dir / "results.json").read_text())
    assert printed == results
    assert [m["name"] for m in results["models"]] == ["base", "Phase_1a_Short", "final_256_model"]
    for model in results["models"]:
        for kind in ("passkey", "maritime"):
            grid = model["needle"][kind]
            assert set(grid) == {"256", "512"} and all(set(v) == {"0.0", "0.5", "1.0"} for v in grid.values())
            assert all(0.0 <= a <= 1.0 for v in grid.values() for a in v.values())
            assert (report_dir / f"heatmap_{model['name']}_{kind}.png").stat().st_size > 1000
        assert list(model["perplexity_by_position"]["buckets"]) == ["0-512"]
        assert model["short_perplexity"]["perplexity"] > 1
    assert (report_dir / "ppl_by_position.png").stat().st_size > 1000
    page = (report_dir / "report.html").read_text(encoding="utf-8")  # the page beside report.md
    assert page.count("<img") >= 6 and "heatmap_final_256_model_passkey" in page
    report = (report_dir / "report.md").read_text()
    # the report's tables are the JSON's numbers
    final = results["models"][2]
    row = re.search(r"## final_256_model: passkey.*?\| 50% \| ([\d.]+) \| ([\d.]+) \|", report, re.S)
    assert row and [float(x) for x in row.groups()] == [
        round(final["needle"]["passkey"][n]["0.5"], 2) for n in ("256", "512")
    ]
    ppl = final["perplexity_by_position"]["buckets"]["0-512"]["perplexity"]
    assert f"| final_256_model | {ppl:.2f} |" in report
    # base and adapters differ: the adapters were trained
    assert results["models"][0]["short_perplexity"] != results["models"][2]["short_perplexity"]


@pytest.mark.slow
def test_end_of_phase_evaluation_logs_to_tensorboard_and_never_breaks_the_run(
    tmp_path, local_model_dir, synthetic_corpus, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    cfg = small_run_config(local_model_dir, [synthetic_corpus], out, total_tokens=2048)
    cfg["train"]["schedule"] = [
        {"name": "Phase_1a_Short", "max_seq_length": 256, "token_fraction": 0.5},
        {"name": "Phase_1b_Medium", "max_seq_length": 512, "token_fraction": 0.5},
    ]
    cfg["data"].update(eval_fraction=0.2, cache_dir=str(tmp_path / "cache"))
    cfg["eval"] = {"enabled": True, "depths": 2}
    assert main(["train", "--config", str(write_config(tmp_path / "c.yaml", cfg))]) == 0
    acc = EventAccumulator(str(out / "Phase_1b_Medium" / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "eval/needle_acc/512" in tags and "eval/ppl/0-512" in tags
    value = acc.Scalars("eval/needle_acc/512")[0].value
    assert 0.0 <= value <= 1.0

    # a failing evaluation is a warning, and the run still ends with its final model
    import fathom.eval.runner as runner

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation exploded")

    monkeypatch.setattr(runner, "evaluate_phase", broken)
    cfg["output_dir"] = str(tmp_path / "run2")
    assert main(["train", "--config", str(write_config(tmp_path / "c2.yaml", cfg))]) == 0
    assert (tmp_path / "run2" / "final_512_model" / "adapter_model.safetensors").is_file()


def test_ruler_without_lm_eval_is_skipped_with_the_install_command(monkeypatch):
    import importlib.util

    from fathom.eval.ruler import ruler_available

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    assert ruler_available().startswith("--ruler needs lm_eval") and "fathom[ruler]" in ruler_available()


@pytest.mark.slow
def test_ruler_through_lm_eval(tmp_path, local_model_dir, capsys, monkeypatch):
    from fathom.eval.ruler import ruler_available

    reason = ruler_available()
    if reason:
        pytest.skip(reason)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--base",
                str(local_model_dir),
                "--kinds",
                "passkey",
                "--lengths",
                "512",
                "--depths",
                "2",
                "--ruler",
                "--ruler-tasks",
                "niah_single_1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    ruler = results["models"][0]["ruler"]
    assert set(ruler) == {"niah_single_1"}  # one task keeps the test short; the others run the same way
    assert all(0.0 <= s["512"] <= 1.0 for s in ruler.values())
    assert "## RULER" in (out / "report.md").read_text()
