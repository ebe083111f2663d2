"""Model cards and Hub uploads for MCKD teachers and students.

``render_model_card`` fills the package's ``templates/model_card.md.jinja`` (a Jinja2 template,
shipped as package data so an installed wheel can write cards) and
returns a :class:`huggingface_hub.ModelCard` whose YAML front matter carries a ``model-index``
built from the retrieval metrics, so the Hub shows the results. ``push_folder_to_hub`` uploads
an output folder; it refuses before any network call when no token is available and never
prints, logs or raises the token.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

logger = logging.getLogger(__name__)

# Package data (pyproject's [tool.setuptools.package-data]): found by editable and wheel installs alike.
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "model_card.md.jinja"

# One task for both directions: the direction is part of each metric's name ("t2v R@1").
TASK_TYPE = "text-video-retrieval"
TASK_NAME = "Text-Video Retrieval"
PIPELINE_TAG = "feature-extraction"  # a dual encoder: texts and videos in, embeddings out
ROLES = ("teacher", "student")

# What an output folder holds besides the model that must not be uploaded: rotated training
# checkpoints, TensorBoard runs, the duplicate best_model/ copy and unfinished atomic writes.
DEFAULT_PUSH_IGNORE_PATTERNS: tuple[str, ...] = (
    "checkpoints/",
    "runs/",
    "best_model/",
    ".tmp-*",
    "*.tmp",
    "*.tmp/",
)

_METRIC_KEY = re.compile(r"^(?P<direction>[a-z]2[a-z])_(?P<metric>R@(?P<k>[1-9][0-9]*)|MdR|MnR)$")
_DIRECTION_ORDER = {"t2v": 0, "v2t": 1}
_DIRECTION_LABELS = {
    "t2v": "text → video",
    "v2t": "video → text",
    "t2a": "text → audio",
    "a2t": "audio → text",
    "v2a": "video → audio",
    "a2v": "audio → video",
}
_SECRET_KEY = re.compile(r"token|secret|password|api_key|apikey", re.IGNORECASE)

# Names of the student objective's settings in DistillArguments (modeling_mckd/arguments.py).
_STUDENT_LOSS_FIELDS = (
    "kd_weight",
    "disc_weight",
    "kd_mode",
    "kd_temperature",
    "disc_temperature",
    "disc_text_weight",
    "ranking_margin",
    "ranking_negatives",
    "ranking_warmup_epochs",
    "kd_parts",
    "kd_anchor_weight",
    "init_from_teacher",
    "freeze_from_teacher",
)
_REQUIRED_STUDENT_LOSS_FIELDS = ("kd_weight", "disc_weight", "kd_mode", "kd_temperature")


class HubAuthError(ValueError):
    """No Hugging Face token is available for an upload."""


class HubPushError(RuntimeError):
    """An upload cannot start (offline mode) or failed with a message that had to be redacted."""


# -- metrics -> model-index ------------------------------------------------------------------


def _metric_sort_key(key: str) -> tuple:
    if key == "rsum":
        return (2, 0, "", 0)
    match = _METRIC_KEY.match(key)
    assert match is not None
    direction = match["direction"]
    metric = match["metric"]
    metric_rank = (0, int(match["k"])) if match["k"] else ((1, 0) if metric == "MdR" else (1, 1))
    return (0, _DIRECTION_ORDER.get(direction, 9), direction, *metric_rank)


def _checked_metrics(split: str, metrics: Any, argument: str) -> dict[str, float]:
    """Validate one split's retrieval dict and return it as plain floats in display order."""
    if not isinstance(metrics, Mapping):
        raise ValueError(f"{argument}[{split!r}]: expected a mapping of metric name to number, got {type(metrics).__name__}")
    checked: dict[str, float] = {}
    for key, value in metrics.items():
        if key != "rsum" and not _METRIC_KEY.match(str(key)):
            raise ValueError(
                f"{argument}[{split!r}]: unknown metric {key!r}; expected 'rsum' or "
                "'<direction>_<metric>' such as 't2v_R@1', 'v2t_R@10', 't2v_MdR', 'v2t_MnR'"
            )
        if isinstance(value, (str, bytes, bool)):
            raise ValueError(f"{argument}[{split!r}][{key!r}]: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{argument}[{split!r}][{key!r}]: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{argument}[{split!r}][{key!r}]: expected a finite number, got {number}")
        checked[str(key)] = number
    return {key: checked[key] for key in sorted(checked, key=_metric_sort_key)}


def _checked_results(results: Any, argument: str) -> dict[str, dict[str, float]]:
    if not isinstance(results, Mapping):
        raise ValueError(f"{argument}: expected a mapping of split name to retrieval metrics, got {type(results).__name__}")
    return {str(split): _checked_metrics(str(split), metrics, argument) for split, metrics in results.items()}


def _metric_name(key: str) -> str:
    if key == "rsum":
        return "rsum"
    direction, metric = key.split("_", 1)
    return f"{direction} {metric}"


def build_eval_results(
    results: Mapping[str, Mapping[str, float]], dataset_name: str, dataset_type: str
) -> list[EvalResult]:
    """One :class:`EvalResult` per split x direction x metric (plus ``rsum`` per split).

    ``results`` maps a split name ("validation", "test") to the dict returned by
    ``modeling_mckd.retrieval.evaluate_retrieval``: keys ``t2v_R@1``, ``t2v_R@5``, ``t2v_R@10``,
    ``t2v_MdR``, ``t2v_MnR``, the same for ``v2t`` (or another ``x2y`` direction) and ``rsum``.
    The key becomes the metric type (so the model-index maps back to the input), its pretty
    form (``t2v R@1``) the metric name. Unknown keys and non-finite values raise ``ValueError``.
    """
    eval_results = []
    for split, metrics in _checked_results(results, "results").items():
        for key, value in metrics.items():
            eval_results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=key,
                    metric_name=_metric_name(key),
                    metric_value=value,
                )
            )
    return eval_results


# -- card rendering --------------------------------------------------------------------------


def _format_number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:g}"


def _results_table(results: dict[str, dict[str, float]]) -> dict:
    """Rows (split, direction, cells) and columns for the Markdown results table."""
    columns: list[str] = []
    per_row: dict[tuple[str, str], dict[str, float]] = {}
    rsum: dict[str, str] = {}
    for split, metrics in results.items():
        for key, value in metrics.items():
            if key == "rsum":
                rsum[split] = f"{value:.2f}"
                continue
            direction, metric = key.split("_", 1)
            per_row.setdefault((split, direction), {})[metric] = value
            if metric not in columns:
                columns.append(metric)
    columns.sort(key=lambda metric: _metric_sort_key(f"t2v_{metric}"))
    rows = [
        {
            "split": split,
            "direction": _DIRECTION_LABELS.get(direction, direction),
            "cells": [f"{values[metric]:.2f}" if metric in values else "–" for metric in columns],
        }
        for (split, direction), values in per_row.items()
    ]
    return {"columns": columns, "rows": rows, "rsum": rsum}


def _plain(value: Any, key: str = "") -> Any:
    """A YAML-safe copy of a configuration value, with secrets (tokens) redacted."""
    if key and _SECRET_KEY.search(key) and value not in (None, False, ""):
        return "<redacted>"
    if isinstance(value, Mapping):
        return {str(k): _plain(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)  # Paths, enums, dtypes: their text form is what the user typed


def _lookup(config: Mapping, key: str) -> Any:
    """Find ``key`` in a flat or nested (one dict per argument dataclass) configuration."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, Mapping):
            found = _lookup(value, key)
            if found is not None:
                return found
    return None


def _loss_settings(role: str, training_config: Mapping, loss_description: Mapping | None) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if role == "student":
        for key in _STUDENT_LOSS_FIELDS:
            value = _lookup(training_config, key)
            if value is not None:
                settings[key] = value
    settings.update(loss_description or {})
    if role == "student":
        missing = [key for key in _REQUIRED_STUDENT_LOSS_FIELDS if settings.get(key) is None]
        if missing:
            raise ValueError(
                f"student model card: loss setting(s) {missing} found neither in loss_description nor in "
                "training_config; the card must state the weights and the distillation mode actually used"
            )
    return settings


def _load_template(template_path: str | Path | None) -> str:
    path = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"model card template not found at {path}. The default template is "
            "modeling_mckd/templates/model_card.md.jinja, package data of the mckd distribution (an install "
            "that lacks it is broken: reinstall mckd); or pass template_path= to use your own template."
        )
    return path.read_text(encoding="utf-8")


def card_dataset(dataset: str | None) -> dict[str, Any]:
    """How a run's ``--dataset`` appears on its card: ``dataset_name``, ``dataset_type`` and ``datasets``.

    None: the synthetic benchmark. A folder on disk: its name with type ``local``, never its absolute
    path (which means nothing to a reader of the card and shows the author's disk). Anything else was
    loaded from the Hub by ``load_dataset``: its id, also listed in the front matter's ``datasets``
    so that the Hub links the model to it.
    """
    if not dataset:
        return {"dataset_name": "mckd-synthetic", "dataset_type": "synthetic", "datasets": None}
    path = Path(dataset).expanduser()
    if path.exists():
        return {"dataset_name": path.resolve().name or "dataset", "dataset_type": "local", "datasets": None}
    return {"dataset_name": dataset, "dataset_type": dataset, "datasets": [dataset]}


def render_model_card(
    *,
    role: str,
    model_name: str,
    results: Mapping[str, Mapping[str, float]],
    training_config: Mapping[str, Any],
    dataset_name: str = "mckd-synthetic",
    dataset_type: str = "synthetic",
    datasets: Sequence[str] | None = None,
    teacher: str | None = None,
    teacher_results: Mapping[str, Mapping[str, float]] | None = None,
    loss_description: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    template_path: str | Path | None = None,
    license: str = "apache-2.0",  # noqa: A002 - the model card field's name
) -> ModelCard:
    """Render the README.md of a trained MCKD teacher or student.

    Args:
        role: "teacher" or "student".
        model_name: the model-index name (usually the output folder or Hub repo name).
        results: split -> retrieval metrics (see :func:`build_eval_results`); goes to ``model-index``.
        training_config: the full argument dict of the run, printed as YAML (keys that look like
            secrets, e.g. ``hub_token``, are redacted). A student's loss weights are read from it
            (``kd_weight``, ``disc_weight``, ``kd_mode``, ``kd_temperature``, ...), flat or nested.
        dataset_name / dataset_type: pretty name and identifier of the evaluation data. A
            ``dataset_type`` with a "/" is taken as a Hub dataset id and listed in ``datasets``
            (see :func:`card_dataset` for a run's ``--dataset``).
        datasets: the Hub dataset ids of the front matter's ``datasets`` field (default: from ``dataset_type``).
        teacher: for a student (required), the teacher's folder or Hub id.
        teacher_results: the teacher's own metrics, shown next to the student's (not in model-index).
        loss_description: overrides/extra loss settings; for a teacher e.g.
            ``{"modality_pairs": ["video-text", "audio-text"], "temperature": 0.05}``.
        repo_id: the Hub id used in the usage snippet (a placeholder path when None).
        template_path: a Jinja2 template to use instead of the package's ``templates/model_card.md.jinja``.
        license: the card's license identifier.

    Returns:
        The rendered :class:`huggingface_hub.ModelCard` (its front matter already parsed).
    """
    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    if not isinstance(model_name, str) or not model_name.strip():
        raise ValueError(f"model_name: expected a non-empty string, got {model_name!r}")
    if not isinstance(training_config, Mapping):
        raise ValueError(f"training_config: expected a mapping, got {type(training_config).__name__}")
    if role == "teacher" and (teacher or teacher_results):
        raise ValueError("teacher/teacher_results: only a student card names a teacher")

    checked_results = _checked_results(results, "results")
    checked_teacher_results = _checked_results(teacher_results, "teacher_results") if teacher_results else {}
    loss = _loss_settings(role, training_config, loss_description)
    # A student trained with kd_weight 0 (an ablation baseline) has no teacher to name.
    if role == "student" and not teacher and float(loss["kd_weight"]) != 0:
        raise ValueError("teacher: a student model card must name the teacher it was distilled from")
    synthetic = dataset_type == "synthetic" or "synthetic" in dataset_name.lower()

    tags = ["video-text-retrieval", "mckd", "contrastive-learning", role]
    if role == "student":
        tags.append("knowledge-distillation")
    if synthetic:
        tags.append("synthetic-data")
    card_data = ModelCardData(
        model_name=model_name,
        eval_results=build_eval_results(checked_results, dataset_name, dataset_type) or None,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=tags,
        datasets=list(datasets) if datasets is not None else ([dataset_type] if "/" in dataset_type else None),
        license=license,
        language=["en"],
    )

    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,  # a misspelt variable in the template is an error, not a blank
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # Markdown, not HTML
    )
    template = environment.from_string(_load_template(template_path))
    text = template.render(
        card_data=card_data.to_yaml(),
        role=role,
        model_name=model_name,
        model_ref=repo_id or f"path/to/{model_name}",
        dataset_name=dataset_name,
        dataset_type=dataset_type,
        synthetic=synthetic,
        results=_results_table(checked_results),
        teacher=teacher,
        teacher_results=_results_table(checked_teacher_results) if checked_teacher_results else None,
        loss={key: _format_number(value) for key, value in loss.items()},
        modality_pairs=list(loss.get("modality_pairs") or []),
        kd_modes=[part.strip() for part in str(loss.get("kd_mode", "")).split("+") if part.strip()],
        training_config_yaml=yaml.safe_dump(_plain(training_config), sort_keys=False, allow_unicode=True).rstrip(),
    )
    return ModelCard(text)


def write_model_card(output_dir: str | Path, **kwargs: Any) -> Path:
    """Render the card (same keyword arguments as :func:`render_model_card`) into ``output_dir/README.md``."""
    card = render_model_card(**kwargs)
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


# -- upload ----------------------------------------------------------------------------------


# What a token or an Authorization header looks like, for text whose token is not known to the caller.
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+"),
    re.compile(r"(?i)\bbearer\s+[^\s'\",}]+"),
    re.compile(r"\bhf_[A-Za-z0-9]{8,}"),
)
REDACTED = "<redacted>"


def redact(text: str, token: str | None = None) -> str:
    """``text`` with ``token``, any Authorization header value, Bearer credential and ``hf_...`` token replaced."""
    if token:
        text = text.replace(token, REDACTED)
    text = _TOKEN_PATTERNS[0].sub(lambda m: m.group(1) + REDACTED, text)
    text = _TOKEN_PATTERNS[1].sub("Bearer " + REDACTED, text)
    return _TOKEN_PATTERNS[2].sub(REDACTED, text)


def call_hub(action: Callable[[], Any], *, failure: str, token: str | None = None,
             error_type: type[Exception] = HubPushError, wrap_all: bool = True) -> Any:
    """Run one Hub call (``action()``) so that no token can reach output through its failure.

    Any exception becomes ``error_type(f"{failure} ({type}: {message})")`` with the token redacted
    (:func:`redact`), raised outside the ``except`` block with no cause chained: a chained exception
    would print the original message, token included, in a traceback. With ``wrap_all=False`` an
    exception that carries no credential is re-raised as it is (callers that handle its type keep it).
    ``token`` None redacts the token ``huggingface_hub`` would use (``HF_TOKEN`` or the stored login).
    """
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    failed: str | None = None
    try:
        return action()
    except Exception as error:
        text = f"{type(error).__name__}: {error}"
        if not wrap_all and not _mentions(error, token) and redact(_chain_text(error), token) == _chain_text(error):
            raise
        failed = redact(text, token)
    raise error_type(f"{failure} ({failed})")


def _chain_text(error: BaseException) -> str:
    parts, seen, current = [], set(), error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{current} {current.args!r}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _mentions(error: BaseException, secret: str | None) -> bool:
    """Whether ``secret`` appears in the error or anything chained to it."""
    if not secret:
        return False
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if secret in str(current) or secret in repr(current.args):
            return True
        current = current.__cause__ or current.__context__
    return False


def check_can_push(token: str | None = None) -> str:
    """The token a push would use; raises before any network call when a push cannot work.

    Training scripts call this before training, so a missing token is reported in seconds, not
    after hours of training.
    """
    from huggingface_hub import constants, get_token

    resolved_token = token or get_token()
    if not resolved_token:
        raise HubAuthError(
            "Cannot push to the Hugging Face Hub: no token found. Log in with `hf auth login`, or set the "
            "HF_TOKEN environment variable to a token with write access, then run again."
        )
    if constants.is_offline_mode():
        raise HubPushError(
            "Cannot push to the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE=1). "
            "Unset it (or set HF_HUB_OFFLINE=0) to upload."
        )
    return resolved_token


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload MCKD model",
    revision: str | None = None,
    ignore_patterns: Sequence[str] = DEFAULT_PUSH_IGNORE_PATTERNS,
) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder`` to it in one commit; return the repo URL.

    The token is ``token`` or the one ``huggingface_hub.get_token()`` finds (``HF_TOKEN`` or
    ``hf auth login``). Without one, :class:`HubAuthError` is raised before any network call;
    with ``HF_HUB_OFFLINE=1``, :class:`HubPushError`. The token is never logged or printed, and an
    error whose text would contain it is re-raised as :class:`HubPushError` with it redacted.
    ``revision`` names a branch, created from main if missing. Files matching
    ``ignore_patterns`` (checkpoints/, runs/, best_model/, temporary files) are not uploaded.
    The Hub endpoint is ``HF_ENDPOINT`` (default https://huggingface.co).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_folder_to_hub: {folder} is not a folder")
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"hub_model_id: expected 'namespace/name' or 'name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except Exception as error:  # HFValidationError: say which argument was wrong
        raise ValueError(f"hub_model_id {repo_id!r} is not a valid Hub repository id: {error}") from None
    if token is not None and not isinstance(token, str):
        raise TypeError(f"token: expected a string or None, got {type(token).__name__}")

    resolved_token = check_can_push(token)

    api = HfApi(token=resolved_token, library_name="mckd")
    logger.info("pushing %s to %s on %s", folder, repo_id, api.endpoint)

    def upload():
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        # The Hub answers with the full id ("user/name" when only "name" was given): use it.
        full_repo_id = repo_url.repo_id
        if revision is not None and revision != constants.DEFAULT_REVISION:
            api.create_branch(full_repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=full_repo_id,
            folder_path=folder,
            repo_type="model",
            commit_message=commit_message,
            revision=revision,
            ignore_patterns=list(ignore_patterns),
        )
        return repo_url, full_repo_id, commit

    repo_url, full_repo_id, commit = call_hub(
        upload, failure=f"push to {repo_id} failed", token=resolved_token, wrap_all=False
    )
    logger.info("pushed %s as commit %s", full_repo_id, commit.oid)
    return str(repo_url)
