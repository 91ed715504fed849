"""``fathom push``: an adapter or merged folder to the Hugging Face Hub, with its model card.

The upload is ``huggingface_hub``'s (``create_repo``, ``create_branch``, ``upload_folder``; the token
from ``HF_TOKEN`` or ``hf auth login``); fathom stages the folder first (:func:`stage_upload`), so
``--dry-run`` shows exactly what would be uploaded and the user's folder is never written to.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
from pathlib import Path

import yaml

from fathom.config import ConfigError
from fathom.errors import ExportFailed
from fathom.export.card import stage_upload
from fathom.export.folder import read_model_folder

logger = logging.getLogger("fathom")

# bases whose license fathom knows without asking the Hub (the demo's, so its card is complete offline)
KNOWN_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "Qwen/Qwen2.5-7B": "apache-2.0"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclasses.dataclass
class PushRequest:
    folder: Path
    repo_id: str
    private: bool = False
    revision: str | None = None
    dry_run: bool = False
    out: Path | None = None  # where --dry-run stages (default: ./<name>-upload)
    license_id: str | None = None  # none: the base's
    eval_dir: Path | None = None  # a fathom eval --out folder for the card
    base_id: str | None = None  # the base's Hub id, when training read a local folder


def push(request: PushRequest) -> Path:
    """Stage the folder and (unless ``dry_run``) upload it; returns the staged folder of a dry run, else
    the folder that was pushed (its staged copy is temporary)."""
    if not _REPO_ID.match(request.repo_id):
        raise ConfigError(
            f"--repo: {request.repo_id!r} is not a Hub repo id; give ORG/NAME, e.g. acme/qwen-maritime-32k"
        )
    model = read_model_folder(
        request.folder, "--adapter" if (request.folder / "adapter_config.json").is_file() else "--merged"
    )
    license_id = request.license_id or base_license(model.base_model, request.base_id or model.base_hub_id)
    if request.base_id:
        model = dataclasses.replace(model, base_model=request.base_id)
    if not request.dry_run and model.kind == "adapter" and model.base_hub_id is None:
        raise ConfigError(
            f"--base-id: the adapter's base is the local folder {model.base_model}, which others cannot load; "
            "give the base's Hub id with --base-id ORG/NAME"
        )
    if request.dry_run:
        out = request.out or Path(f"{request.repo_id.split('/')[-1]}-upload")
        return stage_upload(model, request.repo_id, out, license_id, request.eval_dir)
    with tempfile.TemporaryDirectory(prefix="fathom-push-") as tmp:
        staged = stage_upload(model, request.repo_id, Path(tmp) / "upload", license_id, request.eval_dir)
        _upload(staged, request)
    return request.folder


def _upload(staged: Path, request: PushRequest) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi()
    try:
        url = api.create_repo(request.repo_id, private=request.private, exist_ok=True, repo_type="model")
        if request.revision:
            api.create_branch(request.repo_id, branch=request.revision, exist_ok=True)
        api.upload_folder(
            repo_id=request.repo_id,
            folder_path=str(staged),
            revision=request.revision,
            commit_message=f"fathom push: {request.folder.name}",
        )
    except LocalTokenNotFoundError:
        raise ExportFailed("fathom push: no Hugging Face token; run `hf auth login` or set HF_TOKEN") from None
    except (HfHubHTTPError, OSError) as exc:  # refused (401/403/409), or the Hub cannot be reached
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ExportFailed(
            f"fathom push: the upload to {request.repo_id} failed ({reason}); nothing was changed here"
        ) from None
    logger.info("pushed %s to %s%s", request.folder, url, f" (branch {request.revision})" if request.revision else "")


def base_license(base_model: str, hub_id: str | None) -> str | None:
    """The base's license id from its model card: the local folder's README.md training read, else the Hub's."""
    local = Path(base_model) / "README.md"
    found = _card_license(local.read_text(encoding="utf-8")) if local.is_file() else None
    if found or hub_id is None:
        return found
    if hub_id in KNOWN_LICENSES:
        return KNOWN_LICENSES[hub_id]
    try:
        from huggingface_hub import HfApi

        card = HfApi().model_info(hub_id, timeout=10).card_data  # one request, no retries
        return card.get("license") if card is not None else None
    except Exception as exc:  # offline, gated, no card: the license stays unset, and the user is told
        logger.warning(
            "could not read the license of %s (%s); the card has none: pass --license (e.g. apache-2.0)",
            hub_id,
            type(exc).__name__,
        )
        return None


def _card_license(text: str) -> str | None:
    match = re.match(r"^---\n(.*?)\n---", text, re.DOTALL)
    if not match:
        return None
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return meta.get("license") if isinstance(meta, dict) else None


def tree(folder: Path) -> list[str]:
    """The staged folder as ``fathom push --dry-run`` prints it: one line per file with its size."""
    lines = [f"{folder}/"]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        lines.append(f"  {path.relative_to(folder)}  ({_size(path.stat().st_size)})")
    return lines


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
