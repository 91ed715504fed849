"""The quality bench's parts (bench/quality.py): arms at equal tokens, the held-out split, the intervals, the report.

The bench itself trains and evaluates for hours; these check what its numbers rest on, without a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from fathom.config import load_config
from fathom.eval.stats import paired_difference, wilson_interval
from fathom.schedule import plan_phases, pretrain_plans

BENCH = Path(__file__).resolve().parent.parent / "bench" / "quality.py"


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = module
    spec.loader.exec_module(module)
    return module


def _plans(quality, scale, arm, out):
    config = load_config(None, [], check_paths=False)
    data = quality.arm_config(scale, arm, out)
    overrides = [f"train.total_tokens={data['train']['total_tokens']}"]
    overrides += [
        f"train.micro_batch_size={scale.micro_batch}",
        f"train.gradient_accumulation_steps={scale.grad_accum}",
    ]
    config = load_config(_write_yaml(out / f"{arm.name}.yaml", data), overrides, check_paths=False)
    return plan_phases(config)


def _write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("scale_name", ["cpu", "gpu"])
def test_every_arm_trains_the_same_tokens(quality, scale_name, tmp_path):
    scale = quality.SCALES[scale_name]
    arms = quality.arms(scale)
    assert set(arms) == {"base", "short", "direct", "progressive", "short+qa", "direct+qa", "progressive+qa", "qa-only"}
    phase1 = {}
    for name in ("short", "direct", "progressive"):
        plans = pretrain_plans(_plans(quality, scale, arms[name], tmp_path))
        phase1[name] = sum(p.trained_tokens for p in plans)
        assert [p.max_seq_length for p in plans][-1] in scale.lengths
    # rounding to whole micro-batches leaves under one micro-batch of the longest rows per phase
    slack = 3 * scale.lengths[-1] * scale.micro_batch
    assert all(abs(tokens - scale.phase1_tokens) <= slack for tokens in phase1.values()), phase1
    assert [p.max_seq_length for p in pretrain_plans(_plans(quality, scale, arms["progressive"], tmp_path))] == list(
        scale.lengths
    )
    assert arms["progressive"].schedule == tuple(zip(scale.lengths, (0.6, 0.3, 0.1), strict=True))
    phase2 = {}
    for name in ("short+qa", "direct+qa", "progressive+qa", "qa-only"):
        data = quality.arm_config(scale, arms[name], tmp_path)
        assert data["train"]["schedule"] == [] and data["sft"]["total_tokens"] == scale.phase2_tokens
        phase2[name] = data["sft"].get("init_adapter")
    assert phase2["qa-only"] is None  # Phase 2 from the base
    for name in ("short", "direct", "progressive"):  # each Phase 2 continues its own Phase-1 adapter
        assert phase2[f"{name}+qa"] == str(quality.adapter_dir(scale, arms[name], tmp_path))


def test_the_gpu_scale_lets_the_planner_keep_every_activation_on_an_h100(quality, tmp_path, capsys):
    """The device run is rare and timed: its arms must not recompute what fits. The CPU arms keep
    checkpointing off as they were measured."""
    from fathom.cli import main

    gpu, cpu = quality.SCALES["gpu"], quality.SCALES["cpu"]
    for name in ("progressive", "progressive+qa"):
        data = quality.arm_config(gpu, quality.arms(gpu)[name], tmp_path)
        assert data["model"]["gradient_checkpointing"] is None and "memory" not in data["train"]
        config = _write_yaml(tmp_path / f"{name}.yaml", data)
        assert main(["plan", "--config", str(config), "--json", "--gpu", "h100-80gb"]) == 0
        (hw,) = json.loads(capsys.readouterr().out)["hardware"]
        assert hw["phases"] and all(p["verdict"] == "fits" for p in hw["phases"]), hw["phases"]
        assert {p["memory"]["short"].split(" (")[0] for p in hw["phases"]} == {"recompute none"}
    cpu_arm = quality.arm_config(cpu, quality.arms(cpu)["progressive"], tmp_path)
    assert cpu_arm["model"]["gradient_checkpointing"] is False


def _flat(config: dict) -> dict:
    return {
        f"{section}.{key}": value
        for section, fields in config.items()
        if isinstance(fields, dict)
        for key, value in fields.items()
    }


def test_each_probe_changes_only_its_settings_of_the_arm_it_varies_and_loads_as_a_config(quality, tmp_path):
    scale = quality.SCALES["cpu"]
    arms = quality.arms(scale)
    probes = quality.probes(scale)
    assert len(probes) >= 4 and all(p.longest_only and p.phase2_from is not None for p in probes.values())
    assert {name.split("--")[0] for name in probes} == {"qa-only", "progressive+qa", "direct+qa", "short+qa"}
    assert sum(len(p.overrides) == 1 for p in probes.values()) >= 4  # most vary one setting alone
    for name, probe in probes.items():
        varied = arms[name.split("--")[0]]
        assert probe.phase2_from == varied.phase2_from and probe.schedule == varied.schedule, name
        config = quality.arm_config(scale, probe, tmp_path)
        before = _flat(quality.arm_config(scale, varied, tmp_path))
        changed = {k: v for k, v in _flat(config).items() if before.get(k) != v and k != "output_dir"}
        builder = quality.builder_settings(probe)  # its settings: Phase 2 reads the questions built with them
        expected = {"sft.paths": [str(tmp_path / quality.training_questions_name(**builder))]} if builder else {}
        for key, value in probe.overrides:
            if not key.startswith("qa."):
                expected |= {key: value} | ({"lora.alpha": 2 * value} if key == "lora.r" else {})
        assert changed == expected, name
        load_config(_write_yaml(tmp_path / f"{name}.yaml", config), [], check_paths=False)  # a valid config


def test_an_arm_is_asked_in_the_prompt_it_trained_on(quality, tmp_path, monkeypatch):
    """A probe that moves the question (before the document too) must be asked that way, every other arm
    in the default user turn: asked otherwise, its score would measure the mismatch."""
    from fathom.config import DEFAULT_PROMPT_TEMPLATE
    from fathom.data.instruct import QaPrompt

    scale = quality.SCALES["smoke"]
    twice = quality.probes(scale)["progressive+qa--best+question-twice"]
    trained = quality.arm_config(scale, twice, tmp_path)["sft"]["prompt_template"]
    assert trained == quality.QUESTION_TWICE_TEMPLATE and trained.count("{question}") == 2
    asked = {}

    def evaluate_models(*args, qa_prompt=None, **kwargs):
        asked[len(asked)] = qa_prompt
        return {"models": [{}]}

    monkeypatch.setattr("fathom.eval.runner.evaluate_models", evaluate_models)
    for arm in (twice, quality.arms(scale)["progressive+qa"]):
        quality.evaluate_arm(scale, arm, tmp_path, [], [])
    assert asked == {0: QaPrompt(trained), 1: QaPrompt(DEFAULT_PROMPT_TEMPLATE)}


def test_held_out_documents_never_overlap_the_training_ones(quality, real_tokenizer, tmp_path):
    texts = quality.corpus_texts()  # the real corpus from ../shared, else the synthetic one
    assert quality.overlapping(texts) == []
    assert texts == quality.corpus_texts()  # the same split on every machine
    assert min(len(texts[s]) for s in ("train", "like", "unseen")) >= 5
    names = {s: {n for n, _ in texts[s]} for s in texts}
    assert not names["train"] & names["like"] and not names["train"] & names["unseen"]
    manifest = quality.write_corpus(tmp_path, texts)
    trained = {d["sha256"] for d in manifest["train"]}
    assert all(d["sha256"] not in trained for split in ("like", "unseen") for d in manifest[split])
    for split in texts:  # what the folders hold is what the manifest says
        for i, entry in enumerate(manifest[split]):
            text = (tmp_path / "corpus" / split / f"{i:04d}.md").read_bytes()
            assert hashlib.sha256(text).hexdigest() == entry["sha256"]
    scale = quality.SCALES["smoke"]
    questions, _ = quality.eval_questions(scale, texts, real_tokenizer.load())
    trained_texts = [t for _, t in texts["train"]]
    assert questions and all(not any(q["answer"] in t for t in trained_texts) for q in questions)
    assert {q["group"] for q in questions} == {"like", "unseen"}


def test_without_the_shared_corpus_the_unseen_kind_is_the_synthetic_engine_logs(quality, tmp_path):
    texts = quality.corpus_texts(tmp_path)  # no ../shared here: the synthetic corpus
    assert min(len(texts[s]) for s in ("train", "like", "unseen")) >= 5 and quality.overlapping(texts) == []
    assert all("engine_log" in name for name, _ in texts["unseen"])
    assert not any("engine_log" in name for split in ("train", "like") for name, _ in texts[split])


def test_a_scale_that_caps_phase_1s_draws_tops_its_corpus_up_real_text_first(quality, tmp_path):
    """The GPU scale's 20M Phase-1 tokens would show the training chapters ~67 times: the filler (a long real
    text, then synthetic logs and reports) must bring every draw under the cap, stay out of the questions and
    the held-out documents, and reach Phase 1 through the arm's config."""
    from fathom.schedule import MANY_DRAWS

    assert quality.SCALES["gpu"].max_draws == MANY_DRAWS and quality.SCALES["cpu"].max_draws is None
    (tmp_path / "corpus" / "long").mkdir(parents=True)
    (tmp_path / "corpus" / "long" / "book.txt").write_text("Call me Ishmael. " * 2000, encoding="utf-8")
    scale = dataclasses.replace(quality.SCALES["smoke"], phase1_tokens=2_000_000, max_draws=4.0)
    count = len  # a token per character: the sizes in the test are exact
    texts = quality.corpus_texts(tmp_path, scale, count)
    filler = texts["filler"]
    assert filler[0] == ("long/book.txt", "Call me Ishmael. " * 2000)  # real text before synthetic
    assert all(name.startswith("synthetic/") and "engine_log" not in name for name, _ in filler[1:])
    phase1 = sum(count(t) for _, t in quality.phase1_texts(texts))
    assert scale.phase1_tokens / phase1 <= scale.max_draws  # and no document more than needed (2% for specials):
    assert phase1 - count(filler[-1][1]) < 1.02 * scale.phase1_tokens / scale.max_draws <= phase1
    assert quality.overlapping(texts) == [] and texts == quality.corpus_texts(tmp_path, scale, count)
    assert "filler" not in quality.corpus_texts(tmp_path, quality.SCALES["smoke"], count)  # no cap, no filler

    arm = quality.arms(scale)["progressive"]
    assert quality.arm_config(scale, arm, tmp_path / "out")["data"]["paths"] == [str(tmp_path / "out/corpus/train")]
    quality.write_corpus(tmp_path / "out", texts)
    paths = quality.arm_config(scale, arm, tmp_path / "out")["data"]["paths"]
    assert paths == [str(tmp_path / "out/corpus/train"), str(tmp_path / "out/corpus/filler")]
    assert len(list((tmp_path / "out/corpus/filler").iterdir())) == len(filler)
    assert quality.read_corpus(tmp_path / "out") == texts  # later arms read it back instead of making it again
    (tmp_path / "out/corpus/filler/0001.md").write_text("changed", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"filler/0001.md: missing or not what .*manifest.json says"):
        quality.read_corpus(tmp_path / "out")

    held_out = texts["like"][0][1]  # a held-out document's text in the filler: the check names it
    texts["filler"] = [*filler, ("synthetic/copy", held_out)]
    assert quality.overlapping(texts) == [f"like: {texts['like'][0][0]}"]


def test_the_gpu_scales_phase_2_is_the_one_the_cpu_probes_found_teaching(quality, tmp_path, monkeypatch):
    """The device run is rare: its Phase 2 trains as the CPU scale's best+tokens-x8 (4x the rate, whole
    answers), not the eight CPU arms' Phase 2 that taught too little to tell the schedules apart."""
    cpu, gpu = quality.SCALES["cpu"], quality.SCALES["gpu"]
    best = dict(quality.probes(cpu)["progressive+qa--best+tokens-x8"].overrides)
    assert gpu.phase2_learning_rate == best["sft.learning_rate"] and gpu.phase2_answer_chars == best["qa.answer_chars"]
    for scale, questions in ((gpu, "qa_train-answers300.jsonl"), (cpu, "qa_train.jsonl")):
        for name in ("progressive+qa", "qa-only"):
            config = quality.arm_config(scale, quality.arms(scale)[name], tmp_path)
            assert config["sft"]["paths"] == [str(tmp_path / questions)], (scale.name, name)
            assert config["sft"]["learning_rate"] == scale.phase2_learning_rate

    built = []  # prepare_questions builds the file those configs read

    def prepare_training_questions(scale, out, texts, answer_chars=None, **settings):
        built.append(answer_chars)
        path = out / quality.training_questions_name(answer_chars, **settings)
        path.write_text("{}\n", encoding="utf-8")
        return path

    monkeypatch.setattr(quality, "prepare_training_questions", prepare_training_questions)
    monkeypatch.setattr(quality, "_base_tokenizer", lambda: None)
    monkeypatch.setattr(quality, "eval_questions", lambda *a: ([], 0))
    quality.prepare_questions(gpu, tmp_path, {})
    assert built == [300] and (tmp_path / "qa_train-answers300.jsonl").is_file()


def test_the_overlap_check_finds_a_held_out_document_that_was_trained_on(quality):
    texts = {"train": [("a", "one"), ("b", "two")], "like": [("c", "two")], "unseen": [("d", "three")]}
    assert quality.overlapping(texts) == ["like: c"]


def test_uscode_chapters_keep_each_heading_once(quality):
    text = (
        "# Title 46\n## Subtitle I\n### CHAPTER 1\n#### § 101. Agency\n\nBody one.\n\n"
        "# Title 46\n## Subtitle I\n### CHAPTER 1\n#### § 102. Barge\n###### (a) In General .\n\nBody two.\n\n"
        "# Title 46\n## Subtitle I\n### CHAPTER 1\n#### § 102. Barge\n###### (b) More .\n\nBody three.\n\n"
        "# Title 46\n## Subtitle II\n### CHAPTER 3\n#### § 301. Other\n\nBody four.\n"
    )
    chapters = dict(quality._uscode_chapters(text))
    assert list(chapters) == ["CHAPTER 1", "CHAPTER 3"]
    one = chapters["CHAPTER 1"]
    assert one.count("# Title 46") == 1 and one.count("#### § 102. Barge") == 1
    assert one.index("(a) In General") < one.index("(b) More") and "Body three." in one
    assert "## Subtitle II" in chapters["CHAPTER 3"] and "Body four." in chapters["CHAPTER 3"]


def test_intervals():
    low, high = wilson_interval(30, 100)
    assert (round(low, 4), round(high, 4)) == (0.2189, 0.3958)  # Wilson's score interval, z = 1.96
    assert wilson_interval(0, 300)[0] == 0.0 and wilson_interval(0, 300)[1] < 0.013
    assert wilson_interval(300, 300)[1] == 1.0
    # at 300 questions the widest 95% interval (p = 0.5) is within +-5.7 points
    low, high = wilson_interval(150, 300)
    assert high - low < 0.114
    same = paired_difference([True, False] * 50, [True, False] * 50)
    assert same["difference"] == 0 and same["low"] == 0 == same["high"]
    better = paired_difference([True] * 50 + [False] * 50, [False] * 100)
    assert better["difference"] == 0.5 and 0.39 < better["low"] < 0.5 < better["high"] < 0.61
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([True], [True, False])


def test_report_reads_the_results_into_a_table_and_a_figure(quality, tmp_path):
    scale = quality.SCALES["cpu"]
    results = tmp_path / "results"
    results.mkdir()

    def model(rate_long: float) -> dict:
        items = [
            {
                "contains": i < rate_long * 100,
                "length": 2048,
                "group": "like" if i % 3 else "unseen",
                "depth": "0-20%" if i < 50 else "80-100%",
                "question": 'What does paragraph (c) of "Rule 9" say?' if i % 2 else 'What does the section "9" say?',
            }
            for i in range(100)
        ]
        short = {"length": 512, "group": "like", "depth": "0-20%", "question": "?"}
        items += [short | {"contains": i < 50} for i in range(100)]
        hits = sum(i["contains"] for i in items if i["length"] == 2048)
        return {
            "qa": {
                "contains_by_length": {"512": 0.5, "2048": rate_long},
                "contains_interval_by_length": {
                    "512": list(wilson_interval(50, 100)),
                    "2048": list(wilson_interval(hits, 100)),
                },
                "items": items,
            },
            "needle": {"passkey": {"2048": {"0.5": 1.0}}},
            "perplexity_by_position": {"buckets": {"0-1K": {"perplexity": 9.0}, "1K-2K": {"perplexity": 8.0}}},
            "short_perplexity": {"perplexity": 10.0 * (1 + rate_long / 10)},
        }

    for name, rate in (("base", 0.05), ("progressive+qa", 0.45), ("qa-only", 0.30), ("qa-only--lr-x4", 0.40)):
        (results / f"{name}.json").write_text(json.dumps({"model": model(rate)}), encoding="utf-8")
    figure = tmp_path / "figure.png"
    table = quality.report(scale, results, figure)
    lines = table.splitlines()
    assert lines[0].startswith("| arm | QA <=512 | QA <=1,024 | QA <=2,048 |")
    base_row = next(line for line in lines if line.startswith("| base |"))
    assert "5% [2%, 11%]" in base_row and "| - |" in base_row  # no questions at 1K: a dash, not 0%
    best = next(line for line in lines if line.startswith("| progressive+qa |"))
    assert "45% [36%, 55%]" in best and "(+4.0%)" in best  # short perplexity against the base's
    assert any(line.startswith("- progressive+qa minus base at <=2,048 tokens: +40.0% [") for line in lines)
    assert "| arm (QA at <=2,048 by answer depth) | 0-20% | 80-100% |" in lines
    assert "| progressive+qa | 90% (n=50) | 0% (n=50) |" in lines  # its 45 answers are the first 45 questions
    probe = next(line for line in lines if line.startswith("| qa-only--lr-x4 |")).split(" | ")
    assert probe[2].startswith("40% [") and probe[3].startswith("+10.0% [") and probe[4].startswith("+35.0% [")
    assert probe[5] == "39% / 41%"  # like / unseen at the longest: 26 of 66 and 14 of 34
    kinds = "| arm (answered, by kind of question) | like: section | like: (a)-(b) | like: (c) on | unseen: section |"
    assert next(line for line in lines if line.startswith(kinds))
    # the first 45 questions answered: like, odd i (paragraph "(c)") are 15 of 33, even (sections) 15 of 33
    assert "| progressive+qa | 15 of 33 | - | 15 of 33 | 8 of 17 | - | 7 of 17 |" in lines
    assert figure.stat().st_size > 10_000


def test_the_teacher_probe_trains_on_the_builders_questions_and_the_teachers(
    quality, real_tokenizer, tmp_path, monkeypatch
):
    from fathom.data import teacher as teacher_module
    from fathom.data.qa import Fact
    from fathom.model import load as load_module

    scale = quality.SCALES["smoke"]
    probe = quality.probes(scale)["progressive+qa--teacher"]
    assert probe.phase2_from == "progressive" and quality.builder_settings(probe) == {"teacher": True}
    paths = quality.arm_config(scale, probe, tmp_path)["sft"]["paths"]
    assert paths == [str(tmp_path / "qa_train-teacher.jsonl")]  # not the builder's own qa_train.jsonl

    passage = "The master shall log every drill.\n\n"
    text = "# Rule 1\n\n(a) Every vessel shall keep a proper look-out at all times.\n\n" + passage + "Filler. " * 80
    texts = {"train": [("rule", text)], "like": [], "unseen": []}
    asked = []

    def teacher_facts(train, teacher, per_document, seed=0):
        asked.append(teacher.model)
        fact = Fact("Who logs every drill?", "The master", passage.strip(), text.index(passage), "teacher")
        return {0: [fact]}, teacher_module.TeacherReport(passages=1, proposed=2, kept=1)

    monkeypatch.setattr(teacher_module, "teacher_facts", teacher_facts)
    monkeypatch.setattr(load_module, "load_configured_tokenizer", lambda _: real_tokenizer.load())
    teacher = teacher_module.Teacher("http://127.0.0.1:9/v1", "teacher-7b")
    path = quality.prepare_training_questions(scale, tmp_path, texts, teacher=teacher)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert {r["kind"] for r in records} == {"paragraph", "teacher"}  # the builder's questions and the teacher's
    assert sum(r["kind"] == "teacher" for r in records) == len(scale.qa_contexts)  # asked at every length
    made_by = json.loads(path.with_suffix(".teacher.json").read_text(encoding="utf-8"))
    assert made_by["model"] == "teacher-7b" and made_by["kept"] == 1 and "127.0.0.1" not in json.dumps(made_by)
    assert quality.prepare_training_questions(scale, tmp_path, texts, teacher=teacher) == path and asked == [
        "teacher-7b"
    ]
    other = teacher_module.Teacher("http://127.0.0.1:9/v1", "another")
    with pytest.raises(SystemExit, match="holds teacher teacher-7b's questions, not another's"):
        quality.prepare_training_questions(scale, tmp_path, texts, teacher=other)
    monkeypatch.setattr(quality, "corpus_texts", lambda **_: texts)
    monkeypatch.setattr(quality, "prepare_questions", lambda *a: [])
    with pytest.raises(SystemExit, match="pass --teacher-url and --teacher-model"):
        quality.run_arm(scale, "progressive+qa--teacher", tmp_path / "run", tmp_path / "results")


def _training_questions_of_one_rule(quality, scale, real_tokenizer, out, monkeypatch):
    """A builder of the bench's Phase-2 questions (answers cut past 300 characters) about one rule of
    twelve inline-labelled paragraphs and filler, with the real tokenizer: ``build(**settings)`` -> records."""
    from fathom.model import load as load_module

    paragraphs = "".join(f"({chr(97 + i)}) A vessel of class {i} keeps a look-out at all times.\n\n" for i in range(12))
    texts = {"train": [("rule", "# Rule 1\n\n" + paragraphs + "Filler text. " * 200)], "like": [], "unseen": []}
    monkeypatch.setattr(load_module, "load_configured_tokenizer", lambda _: real_tokenizer.load())

    def build(**settings) -> list[dict]:
        path = quality.prepare_training_questions(scale, out, texts, 300, **settings)
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    return build


def test_the_longest_probe_trains_as_many_questions_all_at_the_longest_context(
    quality, real_tokenizer, tmp_path, monkeypatch
):
    """Phase 2's mix of lengths, varied alone: the same documents give about as many training questions
    (three times the facts per document), every one in a context of the longest length."""
    scale = quality.SCALES["smoke"]
    probe = quality.probes(scale)["progressive+qa--best+longest"]
    assert quality.builder_settings(probe) == {"answer_chars": 300, "longest": True}
    paths = quality.arm_config(scale, probe, tmp_path)["sft"]["paths"]
    assert paths == [str(tmp_path / "qa_train-answers300-longest.jsonl")]
    build = _training_questions_of_one_rule(quality, scale, real_tokenizer, tmp_path, monkeypatch)
    spread, longest = build(), build(longest=True)
    assert {r["context_tokens"] for r in spread} == set(scale.qa_contexts)
    assert {r["context_tokens"] for r in longest} == {scale.qa_contexts[-1]}
    # every fact asked once; spread over the lengths, a context too short for a fact's heading drops it
    assert len({r["question"] for r in longest}) == len(longest) == 12 >= len(spread) >= 9


def test_the_relabel_probe_trains_on_the_same_questions_half_with_labels_in_the_other_layout(
    quality, real_tokenizer, tmp_path, monkeypatch
):
    """Labels in both layouts, varied alone: the same questions as best's, about half of their contexts
    relabelled, each still holding its answer."""
    scale = quality.SCALES["smoke"]
    probe = quality.probes(scale)["progressive+qa--best+relabel-half"]
    assert quality.builder_settings(probe) == {"answer_chars": 300, "relabel_share": 0.5}
    paths = quality.arm_config(scale, probe, tmp_path)["sft"]["paths"]
    assert paths == [str(tmp_path / "qa_train-answers300-relabel50.jsonl")]
    build = _training_questions_of_one_rule(quality, scale, real_tokenizer, tmp_path, monkeypatch)
    plain, mixed = build(), build(relabel_share=0.5)
    assert [r["question"] for r in mixed] == [r["question"] for r in plain]
    moved = [r for r in mixed if r.get("relabelled")]
    assert 0 < len(moved) < len(mixed)
    assert all("###### (" in r["document"] and r["answer"] in r["document"] for r in moved)
    assert all(r in plain for r in mixed if not r.get("relabelled"))


def test_running_every_probe_skips_the_teachers_unless_one_is_named(quality, tmp_path, monkeypatch, capsys):
    commands = []
    monkeypatch.setattr(quality.subprocess, "run", lambda command, check: commands.append(command))
    monkeypatch.setattr(quality, "report", lambda *a: "the table")
    base = ["quality.py", "--scale", "smoke", "--arm", "probes", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", base)
    assert quality.main() == 0
    run = [c[c.index("--arm") + 1] for c in commands]
    assert run == [name for name in quality.probes(quality.SCALES["smoke"]) if name != "progressive+qa--teacher"]
    assert "progressive+qa--teacher: skipped, it needs a teacher" in capsys.readouterr().out
    commands.clear()
    monkeypatch.setattr(sys, "argv", [*base, "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t"])
    assert quality.main() == 0
    (teacher,) = [c for c in commands if "progressive+qa--teacher" in c]
    assert teacher[-6:] == [
        "--teacher-url",
        "http://127.0.0.1:9/v1",
        "--teacher-model",
        "t",
        "--teacher-api-key-env",
        "OPENAI_API_KEY",
    ]


def test_the_report_says_whether_a_wrong_answer_copies_another_passage_of_its_context(quality, tmp_path):
    """A miss that quotes the context read the document and picked the wrong paragraph; one that does not
    invented its answer. The two call for different fixes, so the report counts them per group, with the
    look-alike paragraphs a context holds (labels inline and as headings alike) and the kinds of question."""
    scale = quality.SCALES["smoke"]
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    out.mkdir()
    longest = scale.qa_contexts[-1]
    context = "---\ntitle: Rule 12\n---\n(a) Every vessel shall at all times maintain a proper look-out.\n\n"
    context += "###### (b) Sailing\n\nA sailing vessel shall keep clear."
    q1, q2 = 'What does paragraph (b) of "Rule 12" say?', 'What does the section "Rule 12" say?'
    held_out = [
        {
            "question": q1,
            "answer": "A sailing vessel shall keep clear",
            "document": context,
            "context_tokens": longest,
        },
        {
            "question": q2,
            "answer": "A sailing vessel shall keep clear",
            "document": context,
            "context_tokens": longest,
        },
        {
            "question": 'What does paragraph (a) of "Rule 5" say?',
            "answer": "Every vessel shall",
            "document": "(a) Every vessel shall",
            "context_tokens": longest,
        },
        {"question": q1, "answer": "ignored: a shorter context", "document": "", "context_tokens": 96},
    ]
    (out / "qa_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out), encoding="utf-8")
    length = str(quality._buckets(scale)[-1])
    items = [
        # the wrong paragraph, quoted from the context; an invented answer; a hit
        {"question": q1, "reference": held_out[0]["answer"], "answer": "Every vessel shall at all times maintain"},
        {"question": q2, "reference": held_out[1]["answer"], "answer": "The master must sound the horn twice"},
        {"question": held_out[2]["question"], "reference": held_out[2]["answer"], "answer": "Every vessel shall"},
    ]
    groups = ("like", "like", "unseen")
    model = {
        "qa": {
            "contains_by_length": {length: 1 / 3},
            "contains_interval_by_length": {length: [0.0, 1.0]},
            "items": [
                i | {"contains": i["answer"] == i["reference"], "length": length, "group": g, "depth": "0-20%"}
                for i, g in zip(items, groups, strict=True)
            ],
        },
        "needle": {},
    }
    (results / "qa-only.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    lines = quality.report(scale, results, None, out).splitlines()
    assert (
        "Labelled paragraphs per context at the longest length: like 2.0, unseen 1.0; "
        "the asked label per context: like 1.0, unseen 1.0."
    ) in lines
    # the "(b)" miss quotes paragraph (a), the opening of the section it names: found the rule, not the label
    assert "| qa-only | 1 of 2 (1 the asked section's opening) | 0 of 0 (0 the asked section's opening) |" in lines
    # like: a section question and a "(b)" one, both missed; unseen: an "(a)" one answered
    assert "| qa-only | 0 of 1 | 0 of 1 | - | - | 1 of 1 | - |" in lines
    assert not any("copying" in line for line in quality.report(scale, results, None).splitlines())  # no contexts


def test_relabelling_moves_each_paragraph_label_to_the_other_layout_and_keeps_the_words(quality):
    """The relabel probe asks whether a model reads a label or where its training documents put labels:
    inline labels become heading lines, heading labels become inline; nothing else of the text moves."""
    text = "title: Rule 9\n---\n(a) A vessel proceeding.\n\n(b) A vessel (i) shall.\n\n"
    text += "###### (c) In General .\n\nThe text.\n(1) Numbered items stay."
    assert quality.relabelled(text) == (
        "title: Rule 9\n---\n###### (a)\n\nA vessel proceeding.\n\n###### (b)\n\nA vessel (i) shall.\n\n"
        "(c) In General .\n\nThe text.\n(1) Numbered items stay."
    )


def test_the_report_sets_an_arm_asked_with_labels_relabelled_against_its_own_answers(quality, tmp_path):
    scale = quality.SCALES["smoke"]
    results = tmp_path / "results"
    results.mkdir()
    length = str(quality._buckets(scale)[-1])

    def model(hits: list[bool]) -> dict:
        items = [
            {"question": f"q{i}", "reference": "r", "answer": "a", "contains": hit, "length": int(length)}
            | {"group": "like" if i < 4 else "unseen", "depth": "0-20%"}
            for i, hit in enumerate(hits)
        ]
        # the same questions at a shorter context, answered the other way: not the questions compared
        items += [i | {"length": 128, "contains": not i["contains"]} for i in items]
        qa = {"contains_by_length": {}, "contains_interval_by_length": {}, "items": items}
        return {"model": {"qa": qa, "needle": {}}}

    as_asked, relabelled = [True, True, False, False, False, False], [True, False, False, False, True, True]
    (results / "qa-only.json").write_text(json.dumps(model(as_asked)), encoding="utf-8")
    (results / "qa-only--relabelled.json").write_text(json.dumps(model(relabelled)), encoding="utf-8")
    lines = quality.report(scale, results, None).splitlines()
    assert "| arm (QA at <=512: as asked -> labels in the other layout) | like | unseen |" in lines
    row = next(line for line in lines if line.startswith("| qa-only | 2 -> 1 of 4, -25.0% ["))
    assert "| 0 -> 2 of 2, +100.0% [" in row


def test_relabelling_an_arm_that_has_not_run_says_to_run_it(quality, tmp_path):
    with pytest.raises(SystemExit, match=r"--relabel: qa-only has no adapter .* run --arm qa-only first"):
        quality.relabel_arm(quality.SCALES["smoke"], "qa-only", tmp_path / "out", tmp_path / "results")
