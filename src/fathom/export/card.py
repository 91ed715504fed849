"""The folder ``fathom push`` uploads: the model's files, a model card, and nothing of the user's data.

The card (``README.md``, with the Hub's YAML metadata) says what a newcomer needs: the base, the
phases with their lengths and token budgets, what the corpus was as counts and formats (never its
text or file names), the RoPE setting with the exact loading code for transformers 5 and 4.x, the
serving command, and the evaluation when one is given (``fathom eval``'s report and heatmaps).

The user's folder is only read: files are copied into a new folder, and the few that name local
paths (``fathom_config.yaml``, ``adapter_config.json``'s base, ``fathom_merge.json``) are written
there with those paths replaced.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import yaml

from fathom.config import ConfigError
from fathom.data.instruct import QaPrompt
from fathom.export.folder import ModelFolder
from fathom.export.scrub import private_paths, scrub_folder
from fathom.export.serve import vllm_command
from fathom.fsutil import atomic_dir, is_empty_dir, read_json
from fathom.model.adapter import ADAPTER_CONFIG, CONFIG_FILE, MERGE_RECORD

logger = logging.getLogger("fathom")

# what is never uploaded: training state and anything that would be unpickled on loading
_NEVER = re.compile(r"^(optimizer\..*|rng\..*|.*\.(bin|pt|pth|pkl|pickle|ckpt))$")
_REWRITTEN = {"README.md", CONFIG_FILE, ADAPTER_CONFIG, MERGE_RECORD, "fathom_rope.json"}


def stage_upload(
    model: ModelFolder, repo_id: str, out: Path, license_id: str | None = None, eval_dir: Path | None = None
) -> Path:
    """Write the folder to upload to ``out`` (new or empty), atomically; returns ``out``."""
    if out.exists() and not is_empty_dir(out):
        raise ConfigError(f"--out: {out} already exists and is not empty; choose a new folder (nothing was changed)")
    if model.kind == "adapter" and model.base_hub_id is None:
        logger.warning(
            "the adapter's base is the local folder %s: the card and adapter_config.json can only give its folder's "
            "name, which others cannot load; pass --base-id ORG/NAME (the base's Hub id)",
            model.base_model,
        )
    with atomic_dir(out) as tmp:
        skipped = _copy_files(model.folder, tmp)
        _write_sanitized(model, tmp)
        figures = _copy_eval(eval_dir, tmp) if eval_dir is not None else []
        card = model_card(model, repo_id, license_id, _eval_report(eval_dir, figures))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        base_forms = private_paths([model.base_model])
        scrub_folder(tmp, private_paths(_local_paths(model, eval_dir)), dict.fromkeys(base_forms, _public_base(model)))
    if skipped:
        logger.info("not uploaded: %s (training state, or formats that unpickle)", ", ".join(skipped))
    return out


def _copy_files(source: Path, target: Path) -> list[str]:
    skipped = []
    for path in sorted(source.iterdir()):
        if path.is_dir() or path.name.startswith(".") or path.name in _REWRITTEN:
            continue
        if _NEVER.match(path.name):
            skipped.append(path.name)
            continue
        shutil.copy2(path, target / path.name)
    return skipped


def _write_sanitized(model: ModelFolder, target: Path) -> None:
    """The files that name local paths, with the base's Hub id and without the user's folders."""
    base = _public_base(model)
    folder = model.folder
    if model.kind == "adapter":
        peft = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        peft["base_model_name_or_path"] = base
        (target / ADAPTER_CONFIG).write_text(json.dumps(peft, indent=2), encoding="utf-8")
        rope_record = folder / "fathom_rope.json"
        if rope_record.is_file():
            record = json.loads(rope_record.read_text(encoding="utf-8")) | {"base_model": base}
            (target / rope_record.name).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if (folder / MERGE_RECORD).is_file():
        record = json.loads((folder / MERGE_RECORD).read_text(encoding="utf-8"))
        record |= {"base_model": base, "base_source": base, "adapter": Path(record.get("adapter") or "").name}
        (target / MERGE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if model.run_config and (folder / CONFIG_FILE).is_file():
        (target / CONFIG_FILE).write_text(yaml.safe_dump(_public_config(model), sort_keys=False), encoding="utf-8")


def _local_paths(model: ModelFolder, eval_dir: Path | None) -> list:
    """Every path of this machine the staged files might name: the folders read, the run's, home."""
    config = model.run_config or {}
    data, sft = config.get("data") or {}, config.get("sft") or {}
    return [
        model.folder,
        model.folder.parent,
        model.base_model,
        eval_dir,
        config.get("output_dir"),
        data.get("cache_dir"),
        *(data.get("paths") or []),
        *(sft.get("paths") or []),
        *(sft.get("short_instruction_paths") or []),
        sft.get("init_adapter"),
        Path.cwd(),
        Path.home(),
    ]


def _public_base(model: ModelFolder) -> str:
    """The base as the uploaded files name it: its Hub id, else only its folder's name (never a local path)."""
    return model.base_hub_id or Path(model.base_model).name


def _public_config(model: ModelFolder) -> dict:
    """The run's config without the user's paths (data, instruction files, cache, output folder)."""
    config = json.loads(json.dumps(model.run_config))  # a deep copy of plain data
    config["output_dir"] = "."
    config.setdefault("model", {})["name_or_path"] = _public_base(model)
    data = config.get("data") or {}
    for section, key in (
        (data, "paths"),
        (config.get("sft") or {}, "paths"),
        (config.get("sft") or {}, "short_instruction_paths"),
    ):
        if section.get(key):
            section[key] = [f"<{len(section[key])} local path(s), not published>"]
    if data.get("cache_dir"):
        data["cache_dir"] = None
    if (config.get("sft") or {}).get("init_adapter"):
        config["sft"]["init_adapter"] = "<a local adapter folder, not published>"
    return config


def _copy_eval(eval_dir: Path, target: Path) -> list[str]:
    if not (eval_dir / "report.md").is_file():
        raise ConfigError(f"--eval: {eval_dir} has no report.md; give the --out folder of fathom eval")
    (target / "eval").mkdir()
    figures = []
    for png in sorted(eval_dir.glob("*.png")):
        shutil.copy2(png, target / "eval" / png.name)
        figures.append(png.name)
    if (eval_dir / "results.json").is_file():
        shutil.copy2(eval_dir / "results.json", target / "eval" / "results.json")
    return figures


def _eval_report(eval_dir: Path | None, figures: list[str]) -> str | None:
    """fathom eval's report.md, its headings one level down and its images pointing into eval/."""
    if eval_dir is None:
        return None
    text = (eval_dir / "report.md").read_text(encoding="utf-8")
    text = re.sub(r"^# .*\n", "", text, count=1)
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.MULTILINE)
    for name in figures:
        text = text.replace(f"]({name})", f"](eval/{name})")
    return text.strip()


def model_card(model: ModelFolder, repo_id: str, license_id: str | None, eval_report: str | None = None) -> str:
    """The README.md of the uploaded folder: Hub metadata, then what was trained, on what, and how to use it."""
    base = _public_base(model)
    meta = {
        "base_model": model.base_hub_id,
        "library_name": "peft" if model.kind == "adapter" else "transformers",
        "license": license_id,
        "pipeline_tag": "text-generation",
        "tags": ["fathom", "long-context", *(["lora", "peft"] if model.kind == "adapter" else ["merged-lora"])],
    }
    header = "---\n" + yaml.safe_dump({k: v for k, v in meta.items() if v}, sort_keys=False) + "---\n"
    what = "A LoRA adapter for" if model.kind == "adapter" else "A merged model (LoRA folded in) from"
    base_link = f"[{base}](https://huggingface.co/{base})" if model.base_hub_id else f"`{base}`"
    length = f" to rows of {model.trained_length:,} tokens" if model.trained_length else ""
    sections = [
        f"# {repo_id.split('/')[-1]}",
        f"{what} {base_link}, trained with fathom to read long documents whole: "
        f"progressive long-context continual pretraining with LoRA{length}"
        + (", then instruction tuning on questions about long documents." if _has_sft(model) else "."),
        *_training_section(model),
        *_data_section(model),
        *_rope_section(model),
        *_use_section(model, repo_id),
        *_ask_section(model),
        *_serve_section(model, repo_id),
    ]
    if eval_report:
        sections += ["## Evaluation", eval_report]
    return header + "\n" + "\n\n".join(sections) + "\n"


def _has_sft(model: ModelFolder) -> bool:
    return isinstance((model.run_config or {}).get("sft"), dict)


def _run_folder(model: ModelFolder) -> Path | None:
    """The run's output folder when ``model`` sits in it (an adapter folder, or the adapter a merge recorded)."""
    folder = model.folder if model.kind == "adapter" else None
    if model.kind == "merged":
        adapter = read_json(model.folder / MERGE_RECORD).get("adapter")
        folder = Path(adapter) if adapter else None
    if folder is None:
        return None
    parent = folder.resolve().parent
    return parent if (parent / CONFIG_FILE).is_file() else None


def _training_section(model: ModelFolder) -> list[str]:
    config = model.run_config
    if not config:
        return ["## Training", "The run's configuration was not found beside this model."]
    train, lora = config.get("train") or {}, config.get("lora") or {}
    run = _run_folder(model)
    total = int(train.get("total_tokens") or 0)
    rows = [
        "| phase | kind | rows of (tokens) | token budget | tokens trained | optimizer steps |",
        "|---|---|---|---|---|---|",
    ]
    phases = [
        (p["name"], "continual pretraining", p["max_seq_length"], int(total * p["token_fraction"]))
        for p in train.get("schedule") or []
    ]
    if _has_sft(model):
        sft = config["sft"]
        budget = sft.get("total_tokens") or f"{sft.get('epochs', 1):g} epoch(s)"
        phases.append((sft["name"], "instruction tuning", sft["max_seq_length"], budget))
    for name, kind, length, budget in phases:
        state = read_json(run / name / "trainer_state.json") if run else {}
        trained = f"{state['phase_tokens_seen']:,}" if "phase_tokens_seen" in state else "-"
        steps = f"{state['phase_step']:,}" if "phase_step" in state else "-"
        budget_text = f"{budget:,}" if isinstance(budget, int) else str(budget)
        rows.append(f"| {name} | {kind} | {length:,} | {budget_text} | {trained} | {steps} |")
    targets = lora.get("target_modules")
    lora_line = (
        f"LoRA r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, on "
        f"{targets if isinstance(targets, str) else ', '.join(targets or [])}"
        + (f"; trained whole: {', '.join(model.whole_modules)}" if model.whole_modules else "")
        + f". Peak learning rate {train.get('learning_rate')}, {train.get('lr_scheduler', 'cosine')} decay, "
        f"{train.get('micro_batch_size')} x {train.get('gradient_accumulation_steps')} rows per step per device."
    )
    return ["## Training", "\n".join(rows), lora_line]


def _data_section(model: ModelFolder) -> list[str]:
    run = _run_folder(model)
    summary = read_json(run / "data_summary.json") if run else {}
    if not summary:
        return ["## Data", "No data summary was recorded with this run (runs before fathom wrote data_summary.json)."]
    lines = []
    corpus = summary.get("corpus")
    if corpus:
        formats = ", ".join(f"{n:,} {kind}" for kind, n in corpus.get("formats", {}).items())
        lines.append(
            f"Continual pretraining read {corpus['documents']:,} documents ({corpus['tokens']:,} tokens; "
            f"{corpus['training_documents']:,} trained on, {corpus['held_out_documents']:,} held out for evaluation), "
            f"median {corpus['median_tokens']:,} and longest {corpus['longest_tokens']:,} tokens; formats: {formats}."
        )
        histogram = corpus.get("length_histogram") or {}
        if histogram:
            lines.append("Documents by length: " + ", ".join(f"{k}: {v:,}" for k, v in histogram.items()) + ".")
    instructions = summary.get("instructions")
    if instructions:
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in instructions.get("by_format", {}).items())
        lines.append(
            f"Instruction tuning: {instructions['examples']:,} examples ({kinds}), "
            f"{instructions['supervised_tokens']:,} supervised tokens, "
            f"longest {instructions['longest_tokens']:,} tokens."
        )
    lines.append("The documents themselves are not published; these are counts only.")
    return ["## Data", *lines]


def _rope_section(model: ModelFolder) -> list[str]:
    if model.rope is None:
        return []
    if not model.scaled_rope:
        return ["## RoPE", f"Trained with the base model's own RoPE ({model.rope.describe()})."]
    base = model.base_rope.describe() if model.base_rope else "unknown"
    return [
        "## RoPE",
        f"Trained with **{model.rope.describe()}**; the base model's own is {base}. The model must run with the same "
        "setting, or every position past the base's native window is read wrongly: the code below and the serving "
        "commands apply it.",
    ]


def _use_section(model: ModelFolder, repo_id: str) -> list[str]:
    if model.kind == "merged":
        code = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", dtype="auto")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
        )
        return [
            "## Use it",
            "The RoPE setting is in config.json; transformers 5 and 4.x load it as it is:",
            f"```python\n{code}```",
        ]
    base = _public_base(model)
    v5 = model.rope.scaling_kwargs() if model.scaled_rope else {}
    v4 = model.rope.legacy_scaling_kwargs() if model.scaled_rope else {}
    return [
        "## Use it",
        "transformers 5:",
        f"```python\n{_adapter_code(base, repo_id, v5, 'dtype')}```",
        "transformers 4.x:",
        f"```python\n{_adapter_code(base, repo_id, {k: v for k, v in v4.items() if v is not None}, 'torch_dtype')}```",
    ]


def _ask_section(model: ModelFolder) -> list[str]:
    """How to ask a Phase-2 model about a document: the turns it was taught (sft.prompt_template after
    sft.system, both already in the published fathom_config.yaml), as text and as code. A model asked in
    another form answers less well, and nothing else tells a reader of the card the form."""
    if not _has_sft(model):
        return []
    prompt = QaPrompt.of(model.run_config["sft"])
    system = f" after the system prompt {prompt.system!r}" if prompt.system else ""
    head = f"    {{'role': 'system', 'content': {prompt.system!r}}},\n" if prompt.system else ""
    code = (
        'document = open("report.md", encoding="utf-8").read()\n'
        'question = "What does paragraph (b) of Rule 19 say?"\n'
        f"template = {prompt.template!r}\n"
        "messages = [\n"
        f"{head}"
        "    {'role': 'user', 'content': template.format(document=document, question=question)},\n"
        "]\n"
        "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', "
        "return_dict=True)\n"
        "output = model.generate(**inputs, max_new_tokens=256, do_sample=False)\n"
        "print(tokenizer.decode(output[0, inputs['input_ids'].shape[1]:], skip_special_tokens=True))\n"
    )
    return [
        "## Ask it",
        "Instruction tuning taught it to answer from a document given whole in one user turn of the chat template, "
        f"in this form (`sft.prompt_template`){system}; ask it the same way, through transformers or a server's "
        "chat endpoint, since a question asked in another form is answered less well:",
        f"```text\n{prompt.template}\n```",
        f"```python\n{code}```",
    ]


def _adapter_code(base: str, repo_id: str, kwargs: dict, dtype_arg: str) -> str:
    """Loading code; ``dtype_arg``: transformers 5's ``dtype`` or 4.x's ``torch_dtype``."""
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    dtype = f'{dtype_arg}="auto"'
    return (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base}", {dtype}{extra})\n'
        f'model = PeftModel.from_pretrained(base, "{repo_id}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")\n'
    )


def _serve_section(model: ModelFolder, repo_id: str) -> list[str]:
    served = repo_id if model.kind == "merged" else _public_base(model)  # never the local base folder
    command, notes = vllm_command(model, served=served)
    if model.kind == "adapter":
        command = command.replace(f"fathom={model.folder}", f"fathom={repo_id}")
    return ["## Serve it", "vLLM:", f"```bash\n{command}\n```", *notes]
