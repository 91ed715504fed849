"""Experiment trackers besides TensorBoard: Weights & Biases, MLflow, Trackio (``train.report_to``).

Each is a thin adapter from fathom's four calls (scalars, text, image, file) to the library's own
API, so that every tracker receives exactly what TensorBoard receives, on the same global-step
axis. They are fed from one place (:class:`fathom.train.tracking.Tracking`), on rank 0 only.

A run keeps its tracker run ids in ``<output_dir>/trackers.json``, so ``--resume`` continues the
same W&B / MLflow / Trackio run instead of starting a new one. Steps a crashed run logged after its
last checkpoint are logged again on resume: TensorBoard drops the old ones (``purge_step``); W&B
and MLflow keep both points (their histories are append-only).

Offline use: ``WANDB_MODE=offline`` writes W&B's run under ``<output_dir>/wandb`` (``wandb sync``
uploads it later); MLflow defaults to a SQLite store in the output folder
(``sqlite:///<output_dir>/mlflow.db``, artifacts in ``<output_dir>/mlflow-artifacts``) unless
``MLFLOW_TRACKING_URI`` names another; Trackio writes its local database (``TRACKIO_DIR``, by
default ``~/.cache/huggingface/trackio``).
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import io
import json
import logging
import time
import uuid
from pathlib import Path

from fathom.config import ConfigError, FathomConfig
from fathom.fsutil import atomic_write_text

logger = logging.getLogger("fathom")

TRACKER_IDS_FILE = "trackers.json"

# tracker -> (module to import, the extra that installs it)
EXTRAS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}


def check_trackers_installed(report_to: list[str]) -> None:
    """One line per tracker asked for but not installed, before any work is done."""
    missing = [name for name in report_to if name in EXTRAS and importlib.util.find_spec(EXTRAS[name][0]) is None]
    if missing:
        extras = ",".join(EXTRAS[name][1] for name in missing)
        raise ConfigError(
            f"train.report_to: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; "
            f"pip install 'fathom[{extras}]' (or remove {'it' if len(missing) == 1 else 'them'} from train.report_to)"
        )


def flat_params(config: FathomConfig, plans: list[dict]) -> dict[str, object]:
    """The resolved config as ``section.field`` parameters plus the plan per phase, for the run's parameters."""
    params: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for i, inner in enumerate(value):
                walk(f"{prefix}.{i}", inner)  # MLflow keys allow no brackets
        else:
            params[prefix] = value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)

    walk("", config.to_dict())
    for plan in plans:
        for key in ("max_seq_length", "tokens", "rows", "steps", "kind", "learning_rate"):
            params[f"plan.{plan['name']}.{key}"] = plan[key]
    return params


class RunIds:
    """``<output_dir>/trackers.json``: each tracker's run id, so a resumed run logs into the same run."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / TRACKER_IDS_FILE
        try:
            self.ids: dict[str, str] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.ids = {}

    def get(self, tracker: str) -> str | None:
        value = self.ids.get(tracker)
        return value if isinstance(value, str) else None

    def set(self, tracker: str, run_id: str) -> None:
        self.ids[tracker] = run_id
        atomic_write_text(self.path, json.dumps(self.ids, indent=2))


class WandbTracker:
    """Weights & Biases: one run per output folder; ``global_step`` is the x axis of every chart."""

    name = "wandb"

    def __init__(self, project: str, run_name: str, output_dir: Path, params: dict, ids: RunIds) -> None:
        import wandb

        self.wandb = wandb
        run_id = ids.get(self.name) or uuid.uuid4().hex[:8]  # W&B's own ids look the same
        self.run = wandb.init(
            project=project or None,
            name=run_name,
            id=run_id,
            resume="allow",
            dir=str(output_dir),
            config=params,
            reinit="create_new",
        )
        # Steps may repeat on resume (see the module docstring), which W&B's own step refuses.
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        ids.set(self.name, run_id)
        mode = self.run.settings.mode
        run_dir = Path(self.run.dir).parent
        where = f"offline in {run_dir}; upload with: wandb sync {run_dir}" if mode == "offline" else self.run.url
        logger.info("wandb: run %s (%s)", run_id, where)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "global_step": step})

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.log({tag: self.wandb.Html(f"<pre>{html.escape(text)}</pre>"), "global_step": step})

    def image(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(path)), "global_step": step})

    def file(self, path: Path) -> None:
        self.run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, ending: str) -> None:
        self.run.finish(exit_code=1 if ending == "failed" else 0)


class MlflowTracker:
    """MLflow through its client: metrics by step, the config and plan as parameters, files as artifacts."""

    name = "mlflow"

    def __init__(self, project: str, run_name: str, output_dir: Path, params: dict, ids: RunIds) -> None:
        import os

        from mlflow.tracking import MlflowClient

        root = output_dir.resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        with _quiet_alembic():
            self.client = MlflowClient(tracking_uri=self.uri)
        experiment = project or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "fathom"
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            own_store = "MLFLOW_TRACKING_URI" not in os.environ
            location = (root / "mlflow-artifacts").as_uri() if own_store else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run_id = ids.get(self.name)
        if run_id is None:
            run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            self._log_params(run_id, params)
            ids.set(self.name, run_id)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        logger.info("mlflow: run %s in experiment %r at %s", run_id, experiment, self.uri)

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        # MLflow caps a parameter value at 6,000 characters and a batch at 100 parameters
        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def scalars(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def text(self, tag: str, text: str, step: int) -> None:
        self.client.log_text(self.run_id, text, f"{tag}/step-{step:07d}.md")
        self.client.set_tag(self.run_id, tag, text[:5000])

    def image(self, tag: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), f"{tag}/step-{step:07d}")

    def file(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def close(self, ending: str) -> None:
        status = {"complete": "FINISHED", "stopped": "KILLED"}.get(ending, "FAILED")
        self.client.set_terminated(self.run_id, status=status)


class TrackioTracker:
    """Trackio (Hugging Face's local-first tracker): its module-level run, resumed by name."""

    name = "trackio"

    def __init__(self, project: str, run_name: str, output_dir: Path, params: dict, ids: RunIds) -> None:
        import trackio

        self.trackio = trackio
        self.project = project or "fathom"
        name = ids.get(self.name) or run_name
        with contextlib.redirect_stdout(io.StringIO()):  # trackio prints its banner on stdout
            self.run = trackio.init(project=self.project, name=name, config=params, resume="allow", embed=False)
        ids.set(self.name, name)
        logger.info("trackio: run %s in project %r; view with: trackio show --project %s", name, *[self.project] * 2)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(dict(values), step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.log({tag: self.trackio.Markdown(text)}, step=step)

    def image(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.trackio.Image(str(path))}, step=step)

    def file(self, path: Path) -> None:
        pass  # trackio keeps metrics and media, not files

    def close(self, ending: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.run.finish()


@contextlib.contextmanager
def _quiet_alembic():
    """MLflow logs each schema migration of a new SQLite store at INFO through alembic: not the user's concern."""
    loggers = [logging.getLogger(name) for name in ("alembic", "mlflow.store.db.utils", "mlflow")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


TRACKERS = {"wandb": WandbTracker, "mlflow": MlflowTracker, "trackio": TrackioTracker}
