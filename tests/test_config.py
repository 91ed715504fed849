from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fathom.config import ConfigError, FathomConfig, config_from_dict, config_to_yaml, load_config, validate
from fathom.schedule import plan_phases

REPO = Path(__file__).resolve().parent.parent
SHIPPED_7B = REPO / "configs" / "qwen2.5-7b-maritime-32k.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _base(tmp_path: Path, **train) -> dict:
    (tmp_path / "docs").mkdir(exist_ok=True)
    data = {"data": {"paths": [str(tmp_path / "docs")]}, "train": dict(train)}
    return data


def test_defaults_match_the_guide():
    config = FathomConfig()
    assert config.model.name_or_path == "Qwen/Qwen2.5-7B"
    assert [(p.name, p.max_seq_length, p.token_fraction) for p in config.train.schedule] == [
        ("Phase_1a_Short", 4096, 0.60),
        ("Phase_1b_Medium", 16384, 0.30),
        ("Phase_1c_Long", 32768, 0.10),
    ]
    assert config.train.total_tokens == 500_000_000
    assert config.output_dir == "qwen-maritime-longcontext-cpt"
    # the guide checkpoints every layer; train.memory auto does so wherever the card needs it (the
    # guide's 24 GB cards), and recomputes less where the activations fit
    assert config.model.gradient_checkpointing is None and config.train.memory == "auto"
    assert config.data.ocr == "auto"
    assert config.model.trust_remote_code is False


def test_every_field_has_help():
    import dataclasses

    from fathom.config import DataConfig, LoraConfig, ModelConfig, PhaseConfig, TrainConfig

    for cls in (FathomConfig, ModelConfig, LoraConfig, DataConfig, PhaseConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_shipped_7b_config_plans_300m_150m_50m():
    config = load_config(SHIPPED_7B, check_paths=False)
    assert config.model.name_or_path == "Qwen/Qwen2.5-7B"
    assert [p.tokens for p in plan_phases(config)] == [300_000_000, 150_000_000, 50_000_000]
    assert [p.max_seq_length for p in plan_phases(config)] == [4096, 16384, 32768]


def test_yaml_and_overrides_map_onto_types(tmp_path):
    path = _write(tmp_path, _base(tmp_path, learning_rate=1e-4))
    config = load_config(
        path,
        [
            "train.micro_batch_size=2",
            "model.load_in_8bit=true",
            "lora.target_modules=[q_proj, v_proj]",
            "train.total_tokens=1e6",
            f"data.paths={tmp_path}",
        ],
    )
    assert config.train.learning_rate == 1e-4
    assert config.train.micro_batch_size == 2
    assert config.model.load_in_8bit is True
    assert config.lora.target_modules == ["q_proj", "v_proj"]
    assert config.train.total_tokens == 1_000_000
    assert config.data.paths == [str(tmp_path)]


def test_a_bare_off_is_off_though_yaml_reads_it_as_false(tmp_path):
    path = _write(tmp_path, _base(tmp_path))
    config = load_config(path, ["data.ocr=off"])
    assert config.data.ocr == "off"
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(config), encoding="utf-8")
    assert load_config(again).data.ocr == "off"  # what fathom writes reads back the same


def test_schedule_override_and_phase_skipping(tmp_path):
    path = _write(tmp_path, _base(tmp_path))
    config = load_config(
        path,
        [
            "train.schedule=[{name: A, max_seq_length: 4096, token_fraction: 0.7}, "
            "{name: B, max_seq_length: 16384, token_fraction: 0.3}]"
        ],
    )
    assert [p.name for p in config.phases()] == ["A", "B"]


def test_progressive_false_trains_one_phase_at_the_longest_length(tmp_path):
    config = load_config(_write(tmp_path, _base(tmp_path, progressive=False)))
    phases = config.phases()
    assert len(phases) == 1
    assert phases[0].max_seq_length == 32768 and phases[0].token_fraction == 1.0
    assert plan_phases(config)[0].tokens == 500_000_000


@pytest.mark.parametrize(
    ("train", "message"),
    [
        (
            {
                "schedule": [
                    {"name": "A", "max_seq_length": 4096, "token_fraction": 0.6},
                    {"name": "B", "max_seq_length": 16384, "token_fraction": 0.3},
                ]
            },
            "train.schedule: token_fraction values sum to 0.9",
        ),
        (
            {"schedule": [{"name": "A", "max_seq_length": 0, "token_fraction": 1.0}]},
            "train.schedule[0].max_seq_length: must be > 0",
        ),
        (
            {"schedule": [{"name": "A", "max_seq_length": -5, "token_fraction": 1.0}]},
            "train.schedule[0].max_seq_length: must be > 0",
        ),
        (
            {
                "schedule": [
                    {"name": "A", "max_seq_length": 8192, "token_fraction": 0.5},
                    {"name": "B", "max_seq_length": 4096, "token_fraction": 0.5},
                ]
            },
            "train.schedule[1].max_seq_length: 4096 is shorter than the phase before it (8192)",
        ),
        (
            {
                "schedule": [
                    {"name": "A", "max_seq_length": 4096, "token_fraction": 0.5},
                    {"name": "A", "max_seq_length": 8192, "token_fraction": 0.5},
                ]
            },
            "train.schedule[1].name: duplicate phase name 'A'",
        ),
        ({"schedule": []}, "train.schedule: needs at least one phase"),
        (
            {"schedule": [{"name": "A", "max_seq_length": 4096, "token_fraction": 1.5}]},
            "train.schedule[0].token_fraction: must be in (0, 1]",
        ),
        ({"total_tokens": 0}, "train.total_tokens: must be > 0"),
        ({"micro_batch_size": 0}, "train.micro_batch_size: must be > 0"),
        ({"learning_rate": -1.0}, "train.learning_rate: must be > 0"),
        (
            {"lr_scheduler": "cosin"},
            "train.lr_scheduler: 'cosin' is not one of cosine, linear, constant (did you mean 'cosine'?)",
        ),
        ({"learnig_rate": 1e-4}, "train.learnig_rate: unknown key (did you mean 'learning_rate'?)"),
        (
            {"schedule": [{"name": "A", "max_seq_len": 4096, "token_fraction": 1.0}]},
            "train.schedule[0].max_seq_len: unknown key (did you mean 'max_seq_length'?)",
        ),
        ({"micro_batch_size": "two"}, "train.micro_batch_size: expected an integer, got 'two'"),
        (
            {"schedule": [{"name": "checkpoints", "max_seq_length": 64, "token_fraction": 1.0}]},
            "train.schedule[0].name: 'checkpoints' is reserved",
        ),
        ({"strategy": "fdsp"}, "train.strategy: 'fdsp' is not one of auto, ddp, fsdp (did you mean 'fsdp'?)"),
        ({"strategy": "ddp", "fsdp_cpu_offload": True}, "train.fsdp_cpu_offload: only applies to train.strategy"),
    ],
)
def test_validation_errors_name_the_field(tmp_path, train, message):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, _base(tmp_path, **train)))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)  # one wrong value, one line


def test_every_wrong_value_is_reported_at_once_a_line_each(tmp_path):
    path = _write(tmp_path, _base(tmp_path, learning_rate=-1, lr_scheduler="cosin", warmup_ratio=2))
    with pytest.raises(ConfigError) as info:
        load_config(path, ["lora.dropout=1.5", "model.dtype=fp8"])
    assert str(info.value).splitlines() == [
        "model.dtype: 'fp8' is not one of auto, bfloat16, float16, float32",
        "lora.dropout: must be in [0, 1), got 1.5",
        "train.learning_rate: must be > 0, got -1.0",
        "train.lr_scheduler: 'cosin' is not one of cosine, linear, constant (did you mean 'cosine'?)",
        "train.warmup_ratio: must be in [0, 1), got 2.0",
    ]


def test_unknown_top_level_and_section_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"^modle: unknown key \(did you mean 'model'\?\)"):
        config_from_dict({"modle": {}})
    with pytest.raises(ConfigError, match=r"^model.load_in_8bits: unknown key \(did you mean 'load_in_8bit'\?\)"):
        config_from_dict({"model": {"load_in_8bits": True}})
    with pytest.raises(ConfigError, match=r"^train.learnig_rate: unknown key \(did you mean 'learning_rate'\?\)"):
        load_config(None, ["train.learnig_rate=1e-4"], check_paths=False)


def test_missing_data_path_is_named(tmp_path):
    path = _write(tmp_path, {"data": {"paths": [str(tmp_path / "docs"), str(tmp_path / "nope")]}})
    (tmp_path / "docs").mkdir()
    with pytest.raises(ConfigError, match=r"^data.paths\[1\]: .*nope does not exist"):
        load_config(path)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"^--config: file .*absent.yaml does not exist"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--config: .*bad.yaml line \d+ is not valid YAML"):
        load_config(bad)


def test_8bit_and_4bit_together_is_an_error():
    config = config_from_dict({"model": {"load_in_8bit": True, "load_in_4bit": True}})
    with pytest.raises(ConfigError, match=r"^model\.load_in_4bit: load_in_8bit and load_in_4bit are both true"):
        validate(config, check_paths=False)


def test_fsdp_with_a_quantized_base_is_refused():
    config = config_from_dict({"model": {"load_in_4bit": True}, "train": {"strategy": "fsdp"}})
    with pytest.raises(ConfigError, match=r"^train\.strategy: fsdp shards full-precision weights"):
        validate(config, check_paths=False)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match=r"must look like section\.field=value"):
        load_config(None, ["train.learning_rate"], check_paths=False)
    with pytest.raises(ConfigError, match=r"^train\.learning_rate: is a float, it has no field 'x'"):
        load_config(None, ["train.learning_rate.x=1"], check_paths=False)


def test_a_corpus_folder_where_an_override_goes_is_pointed_to_data_paths(tmp_path):
    folder = tmp_path / "manuals"
    folder.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(None, [str(folder)], check_paths=False)
    assert str(caught.value) == (
        f"{folder}: an override must look like section.field=value, e.g. train.learning_rate=1e-4; "
        f"to read this folder, pass data.paths=[{folder}]"
    )
    with pytest.raises(ConfigError, match=r"e\.g\. train\.learning_rate=1e-4$"):  # not a path: no hint
        load_config(None, [str(tmp_path / "missing")], check_paths=False)


def test_yaml_with_help_round_trips(tmp_path):
    config = load_config(None, ["train.learning_rate=3e-4", "lora.r=8"], check_paths=False)
    text = config_to_yaml(config, with_help=True)
    assert "# Peak learning rate of the LoRA weights." in text
    again = config_from_dict(yaml.safe_load(text))
    assert again == config
    assert config_from_dict(yaml.safe_load(config_to_yaml(config))) == config


def test_the_sft_section_is_optional_set_by_overrides_and_validated():
    config = load_config(None, ["sft.paths=[qa.jsonl]", "sft.epochs=1", "data.paths=[x]"], check_paths=False)
    assert config.sft.paths == ["qa.jsonl"] and config.sft.epochs == 1.0 and config.sft.name == "Phase_2_Instruct"
    assert [p.name for p in config.phase_configs()][-1] == "Phase_2_Instruct"
    assert load_config(None, ["data.paths=[x]"], check_paths=False).sft is None
    with pytest.raises(ConfigError) as info:
        load_config(
            None,
            [
                "sft.paths=[]",
                "sft.replay_fraction=1",
                "sft.name=Phase_1a_Short",
                "sft.prompt_template=Question {question}",
            ],
            check_paths=False,
        )
    assert str(info.value).splitlines() == [
        "sft.paths: give at least one file or folder of instruction data",
        "sft.name: 'Phase_1a_Short' is also a train.schedule phase; phase names must be unique",
        "sft.replay_fraction: must be in [0, 1), got 1.0",
        "sft.prompt_template: must contain {document}, got 'Question {question}'",
    ]
    with pytest.raises(ConfigError, match=r"train.schedule: needs at least one phase \(or an sft section"):
        load_config(None, ["train.schedule=[]"], check_paths=False)
    alone = load_config(None, ["train.schedule=[]", "sft.paths=[qa]", "sft.replay_fraction=0"], check_paths=False)
    assert alone.phases() == [] and not alone.needs_corpus()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rate=.inf", "train.learning_rate: must be a finite number, got inf"),
        ("train.learning_rate=.nan", "train.learning_rate: must be a finite number, got nan"),
        ("train.learning_rate=1e6", "train.learning_rate: 1e+06 is beyond any sensible value; at most 1"),
        ("train.micro_batch_size=1e12", "train.micro_batch_size: 1e+12 is beyond any sensible value; at most 4096"),
        ("train.max_grad_norm=.nan", "train.max_grad_norm: must be a finite number, got nan"),
        ("train.warmup_ratio=.nan", "train.warmup_ratio: must be in [0, 1), got nan"),
    ],
)
def test_non_finite_and_absurd_numbers_are_refused(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], check_paths=False)
    assert str(info.value) == message


def test_phase_2_over_merged_weights_is_refused_where_it_cannot_work():
    base = ["sft.paths=[qa]", "sft.lora_init=merged"]
    with pytest.raises(ConfigError) as info:
        load_config(None, [*base, "model.load_in_4bit=true", "train.strategy=fsdp"], check_paths=False)
    lines = str(info.value).splitlines()
    assert any(line.startswith("sft.lora_init: merged would fold the LoRA into 8-/4-bit weights") for line in lines)
    assert any(line.startswith("sft.lora_init: merged needs whole weights, and fsdp shards them") for line in lines)
    with pytest.raises(ConfigError, match=r"sft\.init_adapter names another; choose one"):
        load_config(None, [*base, "sft.init_adapter=somewhere"], check_paths=False)
    with pytest.raises(ConfigError, match=r"train\.schedule has no Phase 1"):
        load_config(None, [*base, "train.schedule=[]", "sft.replay_fraction=0"], check_paths=False)
    with pytest.raises(ConfigError, match=r"sft\.lora_init: 'fresh' is not one of continue, merged"):
        load_config(None, ["sft.paths=[qa]", "sft.lora_init=fresh"], check_paths=False)
    assert load_config(None, base, check_paths=False).sft.lora_init == "merged"
    with pytest.raises(ConfigError, match=r"sft\.optimizer_state: 'keep' is not one of fresh, continue"):
        load_config(None, ["sft.paths=[qa]", "sft.optimizer_state=keep"], check_paths=False)
