"""RoPE scaling: config mapping, auto, applying it live, the record in every adapter, merge."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import build_tiny_model, small_run_config, train_bpe_tokenizer, write_config

from fathom.cli import main
from fathom.config import ConfigError, RopeScalingConfig, config_from_dict, config_to_yaml, load_config, validate
from fathom.model.rope import (
    RopeSetting,
    apply_rope,
    model_rope,
    read_rope_record,
    resolve_rope,
    warn_if_mismatch,
)

NATIVE = RopeSetting({"rope_type": "default", "rope_theta": 10_000.0}, 128)


@pytest.fixture(scope="session")
def short_window_model_dir(tmp_path_factory, synthetic_corpus):
    """Tiny Qwen2 whose native window is 128 tokens, with tied embeddings."""
    folder = tmp_path_factory.mktemp("tiny_qwen2_window128")
    return build_tiny_model(
        folder, train_bpe_tokenizer(synthetic_corpus), "qwen2", max_position_embeddings=128, tie_word_embeddings=True
    )


@pytest.mark.parametrize(
    ("spec", "parameters", "window"),
    [
        ("linear:2", {"rope_type": "linear", "factor": 2.0, "original_max_position_embeddings": 128}, 256),
        ("dynamic:2", {"rope_type": "dynamic", "factor": 2.0}, 128),  # dynamic rescales past the native window
        ("yarn:4", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}, 512),
        (
            "llama3:2",
            {
                "rope_type": "llama3",
                "factor": 2.0,
                "original_max_position_embeddings": 128,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            },
            256,
        ),
        (
            RopeScalingConfig(type="yarn", factor=2, original_max_position_embeddings=100, beta_fast=16),
            {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 100, "beta_fast": 16.0},
            200,
        ),
    ],
)
def test_each_scaling_type_maps_onto_transformers_rope_parameters(spec, parameters, window):
    setting, _ = resolve_rope(NATIVE, None, spec, 256)
    assert setting.parameters == parameters | {"rope_theta": 10_000.0}
    assert setting.max_position_embeddings == window


def test_rope_theta_override_and_none():
    setting, _ = resolve_rope(NATIVE, 500_000, None, 64)
    assert setting.parameters == {"rope_type": "default", "rope_theta": 500_000.0}
    yarn = RopeSetting(
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 1e4}, 128
    )
    plain, _ = resolve_rope(yarn, None, "none", 64)
    assert plain.parameters == {"rope_type": "default", "rope_theta": 1e4} and plain.max_position_embeddings == 32


def test_auto_scales_only_phases_past_the_native_window():
    assert resolve_rope(NATIVE, None, "auto", 128)[0].same_as(NATIVE)
    setting, why = resolve_rope(NATIVE, None, "auto", 512)
    assert (
        setting.rope_type == "yarn" and setting.parameters["factor"] == 4.0 and setting.max_position_embeddings == 512
    )
    assert why.startswith("auto: 512 > native 128")
    assert resolve_rope(NATIVE, None, "auto", 160)[0].parameters["factor"] == 1.25  # rounded up to a quarter
    # a model that is already scaled keeps its method and gets a larger factor over the same original window
    llama = RopeSetting(
        {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 16, "low_freq_factor": 1.0,
         "high_freq_factor": 4.0, "rope_theta": 5e5},
        128,
    )  # fmt: skip
    grown, _ = resolve_rope(llama, None, "auto", 256)
    assert grown.rope_type == "llama3" and grown.parameters["factor"] == 16.0 and grown.max_position_embeddings == 256
    yarn = RopeSetting(
        {
            "rope_type": "yarn",
            "factor": 2.0,
            "original_max_position_embeddings": 64,
            "beta_fast": 16.0,
            "rope_theta": 1e4,
        },
        128,
    )
    grown, _ = resolve_rope(yarn, None, "auto", 512)
    assert grown.parameters == {
        "rope_type": "yarn", "factor": 8.0, "rope_theta": 1e4, "original_max_position_embeddings": 64, "beta_fast": 16.0
    }  # fmt: skip


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "yarm:2",
            "model.rope_scaling.type: 'yarm' is not one of linear, dynamic, yarn, llama3 (did you mean 'yarn'?)",
        ),
        ("yarn:0.5", "model.rope_scaling.factor: must be >= 1"),
        ("yarn:two", "model.rope_scaling: factor 'two' in 'yarn:two' is not a number"),
        ("bigger", "model.rope_scaling: 'bigger' is not auto, none, 'TYPE:FACTOR'"),
        (
            {"type": "linear", "factor": 2, "beta_fast": 8},
            "model.rope_scaling.beta_fast: does not apply to type linear",
        ),
    ],
)
def test_bad_rope_values_are_one_line_errors(value, message):
    with pytest.raises(ConfigError) as info:
        validate(config_from_dict({"model": {"rope_scaling": value}}), check_paths=False)
    assert str(info.value).startswith(message), str(info.value)


def test_rope_config_round_trips_through_yaml(tmp_path):
    config = config_from_dict(
        {
            "model": {"rope_theta": 2e5, "rope_scaling": {"type": "yarn", "factor": 4}},
            "train": {
                "schedule": [
                    {"name": "A", "max_seq_length": 4096, "token_fraction": 0.5, "rope_theta": 1e6},
                    {"name": "B", "max_seq_length": 8192, "token_fraction": 0.5, "rope_scaling": "linear:2"},
                ]
            },
        }
    )
    for with_help in (False, True):
        path = tmp_path / f"c{with_help}.yaml"
        path.write_text(config_to_yaml(config, with_help=with_help))
        again = load_config(path, check_paths=False)
        assert again.model.rope_scaling == RopeScalingConfig(type="yarn", factor=4.0)
        assert again.model.rope_theta == 2e5 and again.train.schedule[0].rope_theta == 1e6
        assert again.train.schedule[1].rope_scaling == "linear:2"


@pytest.mark.parametrize("spec", ["linear:2", "dynamic:2", "yarn:2", "llama3:2"])
def test_applied_rope_equals_plain_transformers_loading_with_the_recorded_kwargs(short_window_model_dir, spec):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(short_window_model_dir).eval()
    ids = torch.randint(0, 300, (1, 256))
    with torch.no_grad():
        before = model(ids).logits
        setting, _ = resolve_rope(model_rope(model.config), None, spec, 256)
        assert apply_rope(model, setting)
        scaled = model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(short_window_model_dir, **setting.scaling_kwargs()).eval()
        assert model_rope(plain.config).same_as(setting)
        assert torch.allclose(scaled, plain(ids).logits, atol=1e-5)
        assert not torch.allclose(scaled, before, atol=1e-4)  # it did change the positions
        apply_rope(model, RopeSetting({"rope_type": "default", "rope_theta": 1e6}, 128))
        assert torch.allclose(model(ids).logits, before, atol=1e-6)  # and changes back


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory, short_window_model_dir, synthetic_corpus):
    """A three-phase run (64 / 128 / 256) with rope_scaling auto on a model whose window is 128."""
    tmp = tmp_path_factory.mktemp("auto_rope_run")
    cfg = small_run_config(short_window_model_dir, [synthetic_corpus], tmp / "run", total_tokens=2048)
    cfg["model"]["rope_scaling"] = "auto"
    cfg["lora"].update(train_embeddings=True, train_norms=True)
    cfg["data"]["cache_dir"] = str(tmp / "cache")
    path = write_config(tmp / "c.yaml", cfg)
    assert main(["train", "--config", str(path)]) == 0
    return tmp / "run"


def test_the_trained_rope_is_recorded_in_every_adapter_folder(auto_run):
    assert read_rope_record(auto_run / "Phase_1a_Short").rope_type == "default"
    assert read_rope_record(auto_run / "Phase_1b_Medium").rope_type == "default"  # 128 fits the native window
    final = read_rope_record(auto_run / "final_256_model")
    assert final.rope_type == "yarn" and final.parameters["factor"] == 2.0 and final.max_position_embeddings == 256
    assert read_rope_record(auto_run / "Phase_1c_Long").same_as(final)
    checkpoint = sorted((auto_run / "checkpoints").glob("step-*"))[-1]
    assert read_rope_record(checkpoint).same_as(final)
    readme = (auto_run / "final_256_model" / "README.md").read_text()
    assert "rope_parameters=" in readme and "'rope_type': 'yarn'" in readme and "max_position_embeddings=256" in readme
    assert f'PeftModel.from_pretrained(base, "{auto_run / "final_256_model"}")' in readme  # the folder, not a temp name


def test_plain_transformers_and_peft_with_the_record_equal_fathoms_loading(auto_run, short_window_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fathom.model.adapter import load_for_inference

    final = auto_run / "final_256_model"
    kwargs = json.loads((final / "fathom_rope.json").read_text())["from_pretrained_kwargs"]
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(short_window_model_dir, **kwargs), str(final)
    )
    ours, _, _ = load_for_inference(str(short_window_model_dir), str(final))
    ids = torch.randint(0, 300, (1, 256))
    with torch.no_grad():
        assert torch.allclose(plain.eval()(ids).logits, ours(ids).logits, atol=1e-5)
    assert model_rope(ours.config).rope_type == "yarn"


def test_loading_an_adapter_into_a_base_with_another_rope_warns(auto_run, short_window_model_dir, caplog):
    from transformers import AutoModelForCausalLM

    from fathom.model.adapter import load_for_inference

    base = AutoModelForCausalLM.from_pretrained(short_window_model_dir)  # no scaling: the classic mistake
    with caplog.at_level(logging.WARNING, logger="fathom"):
        assert warn_if_mismatch(base, auto_run / "final_256_model")
    assert "was trained with yarn x2" in caplog.text and "rope_parameters=" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fathom"):
        load_for_inference(str(short_window_model_dir), str(auto_run / "final_256_model"), rope="linear:2")
    assert "was trained with yarn x2" in caplog.text and "runs with linear x2 (128 -> 256)" in caplog.text


def test_merge_equals_base_plus_adapter_and_carries_the_rope(auto_run, short_window_model_dir, tmp_path, capsys):
    """The adapter trains embeddings (tied to the output layer) and norms too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fathom.model.adapter import load_for_inference

    final = auto_run / "final_256_model"
    out = tmp_path / "merged"
    assert main(["merge", "--base", str(short_window_model_dir), "--adapter", str(final), "--out", str(out),
                 "--max-shard-size", "200KB"]) == 0  # fmt: skip
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    assert not list(out.glob("*.bin")) and not list(tmp_path.glob(".tmp-*"))
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    config = json.loads((out / "config.json").read_text())
    assert config["rope_parameters"]["rope_type"] == "yarn" and config["max_position_embeddings"] == 256
    ours, _, _ = load_for_inference(str(short_window_model_dir), str(final))
    ids = torch.randint(0, 300, (2, 256))
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, ours(ids).logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out)("ship")["input_ids"]
    # an existing folder is never overwritten
    before = sorted(p.name for p in out.iterdir())
    assert main(["merge", "--base", str(short_window_model_dir), "--adapter", str(final), "--out", str(out)]) != 0
    assert "already exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_merge_to_bf16(auto_run, short_window_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "bf16"
    args = ["merge", "--base", str(short_window_model_dir), "--adapter", str(auto_run / "Phase_1a_Short")]
    assert main([*args, "--out", str(out), "--dtype", "bf16"]) == 0
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    assert main([*args, "--out", str(tmp_path / "x"), "--dtype", "int3"]) != 0
    assert "--dtype: 'int3' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_plan_shows_the_rope_of_each_phase(short_window_model_dir, tmp_path, capsys):
    cfg = small_run_config(short_window_model_dir, [tmp_path], tmp_path / "run")
    cfg["model"]["rope_scaling"] = "auto"
    cfg["train"]["schedule"][0]["rope_theta"] = 2e6
    path = write_config(tmp_path / "c.yaml", cfg)
    assert main(["plan", "--config", str(path), "--json"]) == 0
    phases = json.loads(capsys.readouterr().out)["phases"]
    assert [p["rope"]["rope_parameters"]["rope_type"] for p in phases] == ["default", "default", "yarn"]
    assert phases[0]["rope"]["rope_parameters"]["rope_theta"] == 2e6
    assert phases[2]["rope"]["description"].startswith("yarn x2 (128 -> 256)")


def test_eval_runs_each_adapter_with_its_own_rope(auto_run, short_window_model_dir):
    from fathom.eval.runner import evaluate_models

    adapters = [str(auto_run / "Phase_1a_Short"), str(auto_run / "final_256_model")]
    results = evaluate_models(str(short_window_model_dir), adapters, [256], [0.5], 1, ["passkey"], [])
    types = [m["rope"]["rope_parameters"]["rope_type"] for m in results["models"]]
    assert types == ["default", "default", "yarn"]
    forced = evaluate_models(
        str(short_window_model_dir), adapters[1:], [256], [0.5], 1, ["passkey"], [], rope="linear:2"
    )
    assert [m["rope"]["rope_parameters"]["rope_type"] for m in forced["models"]] == ["linear", "linear"]


def test_qwen25_7b_is_known_to_be_trained_on_32k_whatever_its_config_says(tmp_path, capsys):
    from transformers import Qwen2Config

    from fathom.estimate import native_rope

    native = native_rope("Qwen/Qwen2.5-7B")
    assert native.max_position_embeddings == 131_072 and native.window == 32_768
    setting, why = resolve_rope(native, None, "auto", 65_536)
    assert setting.parameters["rope_type"] == "yarn" and setting.parameters["factor"] == 2.0
    assert setting.parameters["original_max_position_embeddings"] == 32_768
    assert setting.max_position_embeddings == 65_536
    assert why == "auto: 65,536 > native 32,768 (trained; its config says 131,072), so yarn x2"
    fits, _ = resolve_rope(native, None, "auto", 32_768)  # within it: the config is left as it is
    assert not fits.scaled and fits.max_position_embeddings == 131_072 and fits.same_as(native)
    explicit, _ = resolve_rope(native, None, "yarn:4", 131_072)  # yarn without a window: over the trained one
    assert explicit.parameters["original_max_position_embeddings"] == 32_768 and explicit.covers(131_072)
    plain, _ = resolve_rope(native, None, None, 65_536)
    assert not plain.covers(65_536) and plain.covers(32_768)
    # overridable, and read from a live config by its model_type
    assert native_rope("Qwen/Qwen2.5-7B", native_context=131_072).covers(131_072)
    config = Qwen2Config(max_position_embeddings=131_072, rope_theta=1e6)
    assert model_rope(config).window == 32_768 and model_rope(config, 65_536).window == 65_536
    assert model_rope(Qwen2Config(max_position_embeddings=32_768)).trained_window is None  # 0.5B / 3B: as said

    # the plan: a 64K phase on Qwen2.5-7B picks YaRN under auto, and is flagged without scaling
    cfg = {
        "model": {"name_or_path": "Qwen/Qwen2.5-7B", "rope_scaling": "auto"},
        "data": {"paths": [str(tmp_path)]},
        "train": {"total_tokens": 1_000_000, "schedule": [{"name": "P64k", "max_seq_length": 65_536}]},
        "output_dir": str(tmp_path / "out"),
    }
    assert main(["plan", "--config", str(write_config(tmp_path / "c.yaml", cfg)), "--json"]) == 0
    rope = json.loads(capsys.readouterr().out)["phases"][0]["rope"]
    assert rope["description"].startswith("yarn x2 (32,768 -> 65,536)")
    cfg["model"]["rope_scaling"] = None
    assert main(["plan", "--config", str(write_config(tmp_path / "c.yaml", cfg)), "--json"]) == 0
    rope = json.loads(capsys.readouterr().out)["phases"][0]["rope"]
    assert rope["description"].endswith("(! 65,536 > trained window 32,768)")
