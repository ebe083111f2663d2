"""Writing the benchmark: mp4 encoding, the rendering worker processes, the manifest and
:func:`generate_synthetic`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...output_guard import check_output_dir
from .annotations import build_annotations
from .audio import audio_features, synthesize_waveform
from .config import ANNOTATION_NAME, GENERATOR_VERSION, MANIFEST_NAME, SyntheticConfig, SyntheticOutputExistsError
from .render import render_group_frames

logger = logging.getLogger("modeling_mckd.data_prep.synthetic")

# ----------------------------------------------------------------------------------------------


def write_mp4(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: int,
    crf: int = 18,
    waveform: np.ndarray | None = None,
    sample_rate: int = 8000,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 as H.264 (libx264, yuv420p) into an mp4 at ``path``.

    One encoder thread: x264 output is then a pure function of the frames (deterministic).
    ``waveform`` (2, N) float32 is muxed as an AAC stereo stream when given.
    """
    import av

    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        audio_stream = None
        if waveform is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate, layout="stereo")
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            audio_frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(waveform, dtype=np.float32), format="fltp", layout="stereo"
            )
            audio_frame.sample_rate = sample_rate
            audio_frame.pts = 0
            for packet in audio_stream.encode(audio_frame):
                container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)


def _render_group(task: tuple[dict, list[dict], str, str]) -> list[str]:
    """Worker: render, encode and save every clip of one group."""
    config_dict, clips, videos_dir, audio_dir = task
    config = SyntheticConfig(**config_dict)
    frames_of = render_group_frames(clips, config)
    for clip in clips:
        waveform = synthesize_waveform(clip["scene"], config, clip["render_seed"])
        write_mp4(
            Path(videos_dir) / f"{clip['video_id']}.mp4",
            frames_of[clip["video_id"]],
            config.fps,
            config.crf,
            waveform if config.mux_audio else None,
            config.audio_sample_rate,
        )
        np.save(Path(audio_dir) / f"{clip['video_id']}.npy", audio_features(waveform, config), allow_pickle=False)
    return [clip["video_id"] for clip in clips]


# ----------------------------------------------------------------------------------------------
# the benchmark plan (annotations) and its generation
# ----------------------------------------------------------------------------------------------

def _read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_manifest(output_dir: Path, config: SyntheticConfig, complete: bool, **extra: Any) -> None:
    manifest = {
        "generator": "dataset_scripts/synthetic.py",
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
        "complete": complete,
        **extra,
    }
    path = output_dir / MANIFEST_NAME
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def is_complete(output_dir: str | os.PathLike, config: SyntheticConfig) -> bool:
    """Whether ``output_dir`` holds a complete benchmark generated with ``config`` (reusable as is)."""
    output_dir = Path(output_dir)
    manifest = _read_manifest(output_dir)
    return (
        manifest is not None
        and manifest.get("complete") is True
        and manifest.get("config_hash") == config.config_hash()
        and (output_dir / ANNOTATION_NAME).is_file()
        and (output_dir / "dataset" / "dataset_dict.json").is_file()
    )


_OWN_ENTRIES = ("videos", "audio", ANNOTATION_NAME, "dataset", MANIFEST_NAME)


def _prepare_output_dir(output_dir: Path, config: SyntheticConfig, overwrite: bool) -> None:
    """Empty our own entries of ``output_dir``, refusing to clobber anything we did not write.

    ``overwrite`` regenerates a synthetic benchmark folder of another config; it never makes a folder that
    holds no manifest (the current directory, a user's folder) ours to empty."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SyntheticOutputExistsError(f"{output_dir}: exists and is not a directory")
    check_output_dir(output_dir, is_own=lambda folder: _read_manifest(folder) is not None,
                     expected=f"an empty folder or a synthetic benchmark folder (with {MANIFEST_NAME})")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        manifest = _read_manifest(output_dir)
        if manifest.get("complete") is True and manifest.get("config_hash") != config.config_hash():
            old = manifest.get("config") or {}
            changed = sorted(key for key, value in config.to_dict().items() if old.get(key) != value)
            raise SyntheticOutputExistsError(
                f"{output_dir}: holds a synthetic benchmark of another config (hash {manifest.get('config_hash')}, "
                f"this config {config.config_hash()}; differing fields: {', '.join(changed) or 'generator version'}); "
                "pass --overwrite (overwrite=True) to regenerate it, or choose another --output_dir"
            )
        # Ours, of this config, but interrupted (complete: false) or damaged: safe to redo.
    for name in _OWN_ENTRIES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate_synthetic(
    output_dir: str | os.PathLike,
    config: SyntheticConfig | None = None,
    *,
    overwrite: bool = False,
    workers: int = 2,
    push_to_hub: str | None = None,
    **overrides: Any,
):
    """Generate the synthetic benchmark into ``output_dir`` and return its ``DatasetDict``.

    Writes ``videos/<id>.mp4``, ``audio/<id>.npy`` (float32 (audio_frames, audio_bins)),
    ``MSRVTT_data.json`` and ``dataset/`` (built by :func:`modeling_mckd.data_prep.msrvtt.build_msrvtt`,
    official protocol), plus ``synthetic_manifest.json`` with the config hash. ``overrides`` replace
    fields of ``config`` (e.g. ``num_train=100``). A folder already holding a complete benchmark of
    the same config is reused without regenerating; one of another config raises
    :class:`SyntheticOutputExistsError` unless ``overwrite``. ``workers`` processes render the clips
    (the output does not depend on it).
    """
    from datasets import load_from_disk

    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    output_dir = Path(output_dir).resolve()
    dataset_dir = output_dir / "dataset"
    if not overwrite and is_complete(output_dir, config):
        dataset = load_from_disk(str(dataset_dir))
        first_split = next(iter(dataset.values()), None)
        paths_valid = first_split is None or len(first_split) == 0 or Path(first_split[0]["video"]).is_file()
        if paths_valid:
            logger.info("reusing the synthetic benchmark in %s (config %s)", output_dir, config.config_hash())
            if push_to_hub:
                from ..common import push_dataset_dict

                push_dataset_dict(dataset, push_to_hub, source=str(dataset_dir), media_root=output_dir,
                                  benchmark="synthetic", embed_media=True)
            return dataset
        # The folder was moved: the absolute paths are stale, only the DatasetDict is rebuilt.
        logger.info("%s was moved; rebuilding its DatasetDict with the new paths", output_dir)
        return _build_dataset(output_dir, push_to_hub)
    _prepare_output_dir(output_dir, config, overwrite)
    started = time.perf_counter()
    annotations, tasks = build_annotations(config)
    videos_dir, audio_dir = output_dir / "videos", output_dir / "audio"
    videos_dir.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(output_dir, config, complete=False)
    config_dict = config.to_dict()
    total = sum(len(clips) for clips in tasks)
    logger.info("rendering %d synthetic clips with %d worker(s) into %s", total, workers, output_dir)
    if workers <= 1 or len(tasks) < 8:
        for clips in tasks:
            _render_group((config_dict, clips, str(videos_dir), str(audio_dir)))
    else:
        _render_in_subprocesses(tasks, config_dict, output_dir, workers)
    annotation_path = output_dir / ANNOTATION_NAME
    annotation_path.write_text(json.dumps(annotations, indent=1) + "\n", encoding="utf-8")
    dataset = _build_dataset(output_dir, push_to_hub)
    seconds = time.perf_counter() - started
    counts = {split: len(dataset[split]) for split in dataset}
    _write_manifest(output_dir, config, complete=True, counts=counts, seconds=round(seconds, 1))
    logger.info("synthetic benchmark written to %s in %.1f s (%s)", output_dir, seconds, counts)
    return dataset


def _render_in_subprocesses(tasks: list[list[dict]], config_dict: dict, output_dir: Path, workers: int) -> None:
    """Render the groups in ``workers`` fresh Python processes, groups dealt round-robin.

    Plain subprocesses rather than a multiprocessing pool: a spawn pool re-imports the caller's
    ``__main__`` (it fails, and the pool then respawns workers forever, for ``python -`` / ``-c``
    callers and re-runs unguarded scripts), and fork is unsafe in a parent that holds threads
    (torch). A worker that fails stops the generation with its stderr.
    """
    import subprocess
    import tempfile

    environment = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])  # makes `modeling_mckd` importable from a source checkout
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, environment.get("PYTHONPATH")]))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[name] = "1"  # one core per worker
    command = "import sys; from modeling_mckd.data_prep.synthetic.writer import _worker_main; _worker_main(sys.argv[1])"
    with tempfile.TemporaryDirectory(prefix=".render-", dir=output_dir) as scratch:
        running = []
        try:
            for index in range(workers):
                shard = tasks[index::workers]
                if not shard:
                    continue
                job = Path(scratch) / f"shard{index}.json"
                payload = {
                    "config": config_dict,
                    "groups": shard,
                    "videos_dir": str(output_dir / "videos"),
                    "audio_dir": str(output_dir / "audio"),
                }
                job.write_text(json.dumps(payload), encoding="utf-8")
                log = open(Path(scratch) / f"shard{index}.log", "wb")  # noqa: SIM115 (closed below)
                process = subprocess.Popen([sys.executable, "-c", command, str(job)], env=environment, stderr=log)
                running.append((index, process, log))
            failures = []
            for index, process, log in running:
                code = process.wait()
                log.close()
                if code != 0:
                    tail = (Path(scratch) / f"shard{index}.log").read_text(errors="replace")[-2000:]
                    failures.append(f"worker {index} exited with {code}: {tail}")
            if failures:
                raise RuntimeError("synthetic rendering failed; " + "\n".join(failures))
        finally:
            for _index, process, log in running:  # interrupted: leave no orphan behind
                if process.poll() is None:
                    process.kill()
                    process.wait()
                log.close()


def _worker_main(job_path: str) -> None:
    """Entry point of a rendering subprocess: render every group listed in ``job_path``."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    for clips in job["groups"]:
        _render_group((job["config"], clips, job["videos_dir"], job["audio_dir"]))


def _build_dataset(output_dir: Path, push_to_hub: str | None):
    from ..common import push_dataset_dict
    from ..msrvtt import build_msrvtt

    dataset = build_msrvtt(
        annotations=output_dir / ANNOTATION_NAME,
        protocol="official",
        output_dir=output_dir / "dataset",
        videos_dir=output_dir / "videos",
        audio_dir=output_dir / "audio",
        missing="error",  # every clip was just written: a missing one is a bug, not data
    )
    if push_to_hub:
        # The clips are ours to redistribute: the pushed copy embeds them (and the small audio
        # arrays), so it trains anywhere without a media folder.
        push_dataset_dict(
            dataset, push_to_hub, source=f"{output_dir / 'dataset'} (written completely)",
            media_root=output_dir, benchmark="synthetic", embed_media=True,
        )
    return dataset
