"""Data-loading benchmark (issue 16): how fast training items come out of real-like clips.

Generates H.264 clips with PyAV into a temporary folder (30 fps, 320x240 and 640x360, 10 s; with --full also
20 s and 30 s), then measures, in one process so the ratios compare like with like:

  (a) the path before issue 16: decode every frame, then sample
  (b) sampled decoding: ClipStore counts frames once and decodes only the sampled ones
  (c) the frame cache (modeling_mckd.frame_cache), built at the teacher's image size (64 px; it serves both)

Items are made for each data path of the default job (configs/synthetic_*.yaml): the student's training
items (8 frames, 32 px), the teacher's (8 frames, 64 px, plus its audio features from .npy files) and the
distillation items (student and teacher inputs from the same sampled frames), through a DataLoader with 0, 1
and 2 workers. Then:

  - peak memory of making one item: traced Python allocations (tracemalloc) and, in a fresh process per
    measurement, the growth of the process's resident set over its peak (VmHWM after clear_refs), which
    also counts FFmpeg's own buffers; by clip length (10 s, with --full 20 s and 30 s)
  - the ratio of data time (cache, 0 workers) to step time for the default student and teacher
  - the default run itself (the synthetic benchmark's 64 px, 16-frame clips, cache_frames as it resolves
    there, 3 epochs): the path before issue 16 (whole clips decoded once and kept) against today's

    python benchmarks/bench_data.py            # 8 clips of 10 s, about 5 minutes on 2 idle cores
    python benchmarks/bench_data.py --full     # also 20 s and 30 s clips, about 22 minutes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import Dataset, load_from_disk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_step, beside this file, however it is loaded

from modeling_mckd import data as data_module
from modeling_mckd.data import ClipStore, InputSpec, RetrievalTrainSet, TrainCollator, choose_cache
from modeling_mckd.frame_cache import build_frame_cache
from modeling_mckd.video_io import read_frames

from bench_step import _reset_peak_rss, _status_kib  # noqa: E402  (the same /proc reading)

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("student", "teacher")
# What each data path of the default job feeds: a student or teacher being trained, and distillation
# (the student's and the teacher's inputs from one draw of frames, as distill.py's batches hold them).
ITEM_KINDS = {"student": ("student",), "teacher": ("teacher",), "distillation": ("student", "teacher")}


def write_clip(path: Path, seconds: float, width: int, height: int, fps: int = 30, seed: int = 0) -> Path:
    """A real-like H.264 clip: moving gradients and noise (so the encoder cannot skip), keyframe every 2 s."""
    import av

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28", "x264-params": f"keyint={2 * fps}:bframes=2"}
        noise = rng.integers(0, 24, size=(height, width, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            base = ((x + 2 * i) // 8 * 16 + (y + i) // 8 * 8) % 256
            image = (np.stack([base, (base + 3 * i) % 256, (x * 255) // width], axis=-1) + np.roll(noise, i, 1)) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio(path: Path, seconds: float, seed: int = 0) -> Path:
    """Audio features as the teacher reads them: one 128-d row per second (VGGish-like), float32 .npy."""
    np.save(path, np.random.default_rng(seed).standard_normal((max(1, int(seconds)), 128)).astype(np.float32))
    return path


class FullDecodeStore(ClipStore):
    """The path before issue 16: decode every frame of the clip, then index the sampled ones. With ``cache``
    (what cache_frames gave the default run) the whole decoded clip was kept."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._whole: dict[str, np.ndarray] = {}

    def _decoded(self, index):
        path = self.video_paths[index]
        if path in self._whole:
            return self._whole[path]
        clip = read_frames(path)
        if self.cache:
            self._whole[path] = clip
        return clip

    def frame_count(self, index):
        return len(self._decoded(index))

    def frames(self, index, indices):
        return self._decoded(index)[np.asarray(indices)]


def default_models():
    """The default job's student and teacher (configs/synthetic_*.yaml, random init) and their processors."""
    from modeling_mckd.arguments import DataArguments, ModelArguments
    from modeling_mckd.runner import build_model_and_processor

    models = {}
    for role in ROLES:
        settings = yaml.safe_load((ROOT / "configs" / f"synthetic_{role}.yaml").read_text())
        # the processor does not depend on the audio tower; the step is timed on frames and text
        overrides = {k: v for k, v in settings.get("model_overrides", {}).items()
                     if k not in ("extra_modalities", "fuse_modalities")}
        model_args = ModelArguments(model_preset=settings["model_preset"], model_overrides=json.dumps(overrides),
                                    image_size=settings.get("image_size", 64))
        videos = Dataset.from_dict({"video_id": ["v"], "captions": [["a red ball moves left"]]})
        model, processor = build_model_and_processor(model_args, DataArguments(), videos)
        models[role] = (model, processor, settings.get("captions_per_video", 1))
    return models


def item_inputs(models, kind: str) -> dict[str, InputSpec]:
    # the teacher is fed its audio features (configs/synthetic_teacher.yaml fuses audio), the student none
    return {role: InputSpec(models[role][1], models[role][0].config.max_text_length, with_audio=role == "teacher")
            for role in ITEM_KINDS[kind]}


def train_set(videos, store, models, kind: str) -> RetrievalTrainSet:
    captions = max(models[role][2] for role in ITEM_KINDS[kind])
    return RetrievalTrainSet(videos, store, item_inputs(models, kind), captions_per_video=captions, seed=0)


def loader_epochs(dataset, num_workers: int, epochs: int = 1, batch_size: int = 2) -> list[float]:
    """Seconds per epoch of a DataLoader over ``dataset`` (every item made and collated)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=TrainCollator(dataset.inputs), persistent_workers=False)
    seconds = []
    for epoch in range(epochs):
        dataset.use_epoch(epoch)
        start = time.perf_counter()
        for _ in loader:
            pass
        seconds.append(time.perf_counter() - start)
    return seconds


def _one_item_peaks(store_kind: str, video: str, audio: str, cache_dir: str | None, kind: str) -> tuple[int, int]:
    """(traced peak, resident-set growth) in bytes of making one item, after one warm-up item (imports,
    the frame count), so neither counts start-up."""
    models = default_models()
    one = Dataset.from_dict({"video_id": ["c"], "video": [video], "audio": [audio], "captions": [["a clip"]]})
    store_class = FullDecodeStore if store_kind == "(a)" else ClipStore
    dataset = train_set(one, store_class(one, "pixels", frame_cache=cache_dir or False), models, kind)
    dataset[0]
    dataset.use_epoch(1)  # other frames than the warm-up's
    before = _reset_peak_rss()  # bytes, or None where the kernel does not allow resetting the peak
    tracemalloc.start()
    dataset[0]
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    resident = _status_kib("VmHWM") * 1024 - before if before is not None else -1
    return traced, resident


def one_item_peaks(*args) -> tuple[int, int]:
    """`_one_item_peaks` in a fresh process: one process's resident set is not another measurement's leftover."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_one_item_peaks, args)


def step_time(model, processor, batch_size: int, steps: int = 3) -> float:
    """Seconds per training step (forward, symmetric InfoNCE, backward, AdamW) of a model, random init."""
    vp = processor.video_processor
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels = torch.randn(batch_size, vp.num_frames, 3, vp.crop_size, vp.crop_size)
    mask = torch.ones(batch_size, vp.num_frames, dtype=torch.long)
    tokens = processor.tokenizer(["a red ball moves left"] * batch_size, padding=True, return_tensors="pt")
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        video = model.get_video_features(pixel_values_videos=pixels, video_mask=mask)
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        logits = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(video, dim=-1).T / 0.05
        labels = torch.arange(batch_size)
        loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def default_run_check(folder: Path, models, epochs: int) -> None:
    """The default job's clips (the synthetic generator's, at its defaults) through the path before issue 16
    and today's, with cache_frames resolved as the default run resolves it, over several epochs."""
    from modeling_mckd.data_prep.synthetic.cli import main as generate

    start = time.perf_counter()
    generate(["--output_dir", str(folder / "synthetic"), "--num_train", "64", "--num_val", "8", "--num_test", "8",
              "--workers", "1"])
    train = load_from_disk(str(folder / "synthetic" / "dataset"))["train"]
    print(f"\n64 synthetic training clips generated in {time.perf_counter() - start:.0f} s (the default run's "
          f"clips: 16 frames, 64x64, 8 fps)\n")
    print("| item | path | cache_frames | epoch 1 (s) | later epochs, mean (s) | all epochs vs before |")
    print("|---|---|---|---|---|---|")
    for kind in ("teacher", "distillation"):
        totals = {}
        for name, store_class in (("before issue 16", FullDecodeStore), ("today", ClipStore)):
            data_module._FRAME_COUNTS.clear()
            data_module._DECODED_FRAMES.clear()
            store = store_class(train, "pixels", frame_cache=False)
            store.cache = choose_cache(ClipStore(train, "pixels", frame_cache=False), "auto")
            seconds = loader_epochs(train_set(train, store, models, kind), 0, epochs=epochs, batch_size=16)
            totals[name] = sum(seconds)
            ratio = totals["before issue 16"] / totals[name]
            print(f"| {kind} | {name} | {'yes' if store.cache else 'no'} | {seconds[0]:.2f} | "
                  f"{np.mean(seconds[1:]):.2f} | {ratio:.2f}x |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="also 20 s and 30 s clips (24 clips instead of 8)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2], help="DataLoader workers to measure")
    parser.add_argument("--batch_size", type=int, default=64, help="the configs' per-device train batch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the default-run check")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per loader: the other is the step's
    lengths = [10, 20, 30] if args.full else [10]
    models = default_models()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        start = time.perf_counter()
        paths, audio = [], []
        for seconds in lengths:
            for width, height in ((320, 240), (640, 360)):
                for k in range(4):
                    paths.append(write_clip(folder / f"c{seconds}_{width}_{k}.mp4", seconds, width, height, seed=k))
                    audio.append(write_audio(folder / f"c{seconds}_{width}_{k}.npy", seconds, seed=k))
        print(f"{len(paths)} clips generated in {time.perf_counter() - start:.0f} s "
              f"({', '.join(f'{s} s' for s in lengths)}; 320x240 and 640x360, 30 fps, H.264), each with audio features")
        videos = Dataset.from_dict({"video_id": [p.stem for p in paths], "video": [str(p) for p in paths],
                                    "audio": [str(a) for a in audio], "captions": [["a clip"]] * len(paths)})
        cache_size = max(models[role][1].video_processor.size for role in ROLES)
        start = time.perf_counter()
        build_frame_cache([str(p) for p in paths], folder / "cache", size=cache_size, progress=False)
        build_seconds = time.perf_counter() - start
        stores = {
            "(a) full decode, then sample": lambda: FullDecodeStore(videos, "pixels", frame_cache=False),
            "(b) sampled decoding": lambda: ClipStore(videos, "pixels", frame_cache=False),
            f"(c) frame cache ({cache_size} px)": lambda: ClipStore(videos, "pixels", frame_cache=folder / "cache"),
        }
        rates = {}
        print(f"\nframe cache built at {cache_size} px in {build_seconds:.1f} s ({build_seconds / len(paths):.2f} s/clip)\n")
        print("| item | path | workers | clips/s | vs (a), same item and workers |")
        print("|---|---|---|---|---|")
        for kind in ITEM_KINDS:
            for name, make in stores.items():
                for workers in args.workers:
                    seconds = loader_epochs(train_set(videos, make(), models, kind), workers)[0]
                    rates[kind, name[:3], workers] = len(paths) / seconds
                    base = rates[kind, "(a)", workers]
                    print(f"| {kind} | {name} | {workers} | {rates[kind, name[:3], workers]:.2f} | "
                          f"{rates[kind, name[:3], workers] / base:.1f}x |", flush=True)

        print("\n| item | path | clip | peak traced memory per item | peak resident-set growth per item |")
        print("|---|---|---|---|---|")
        for kind in ("student", "distillation"):
            for name in stores:
                for seconds in lengths:
                    for width in (320, 640):
                        clip = next(i for i, p in enumerate(paths) if p.stem.startswith(f"c{seconds}_{width}_"))
                        cache = str(folder / "cache") if name.startswith("(c)") else None
                        traced, resident = one_item_peaks(name[:3], str(paths[clip]), str(audio[clip]), cache, kind)
                        shown = f"{resident / 2**20:.1f} MiB" if resident >= 0 else "n/a (no /proc)"
                        print(f"| {kind} | {name} | {seconds} s {width}x{240 if width == 320 else 360} | "
                              f"{traced / 2**20:.1f} MiB | {shown} |", flush=True)

        workers = 0 if 0 in args.workers else args.workers[0]
        print(f"\n| model | batch | step (s) | data (s/batch, cache, {workers} workers) | data / step |")
        print("|---|---|---|---|---|")
        for role in ROLES:
            model, processor, _ = models[role]
            seconds = step_time(model, processor, args.batch_size)
            data = args.batch_size / rates[role, "(c)", workers]
            vp = processor.video_processor
            print(f"| {role} ({vp.num_frames} frames, {vp.crop_size} px) | {args.batch_size} | {seconds:.3f} | "
                  f"{data:.3f} | {100 * data / seconds:.0f} % |", flush=True)

        default_run_check(folder, models, args.epochs)


if __name__ == "__main__":
    main()
