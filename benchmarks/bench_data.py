"""Data-loading benchmark (issue 16): how fast training items come out of real-like clips.

Generates H.264 clips with PyAV into a temporary folder (30 fps, 320x240 and 640x360, 10 s; with --full also
20 s and 30 s, and more clips), then measures, in one process so the ratios compare like with like:

  (a) today's path: decode every frame, then sample (what ClipStore did before issue 16)
  (b) sampled decoding: ClipStore counts frames once and decodes only the sampled ones
  (c) the frame cache (modeling_mckd.frame_cache), built at the student's image size

each through a DataLoader of RetrievalTrainSet items (the default student's processor: 8 frames, 32 px) with
0, 1 and 2 workers: clips/s, and peak traced memory per clip (tracemalloc, in-process, by clip length). Then
the ratio of data time to step time for the default student and teacher (configs/synthetic_*.yaml, random
init, a few steps of a contrastive training step on CPU).

    python benchmarks/bench_data.py            # 8 clips, about 2-3 minutes on 2 cores
    python benchmarks/bench_data.py --full     # 24 clips, 10-30 s
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
import yaml
from datasets import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from modeling_mckd import MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
from modeling_mckd.data import ClipStore, InputSpec, RetrievalTrainSet, TrainCollator
from modeling_mckd.frame_cache import build_frame_cache
from modeling_mckd.video_io import read_frames

ROOT = Path(__file__).resolve().parents[1]


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


class FullDecodeStore(ClipStore):
    """Today's path before issue 16: decode every frame of the clip, then index the sampled ones."""

    def frame_count(self, index):
        return len(read_frames(self.video_paths[index]))

    def frames(self, index, indices):
        return read_frames(self.video_paths[index])[np.asarray(indices)]


def student_processor(num_frames=8, size=32):
    video = MCKDVideoProcessor(num_frames=num_frames, size=size, crop_size=size)
    return MCKDProcessor(video_processor=video, tokenizer=build_word_tokenizer(["a clip"]))


def loader_rate(store, processor, num_workers: int, repeats: int = 1) -> float:
    videos = Dataset.from_dict({"captions": [["a clip"]] * len(store)})
    inputs = {"student": InputSpec(processor, 8)}
    dataset = RetrievalTrainSet(videos, store, inputs, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=num_workers,
                                         collate_fn=TrainCollator(inputs), persistent_workers=False)
    start = time.perf_counter()
    for epoch in range(repeats):
        dataset.use_epoch(epoch)
        for _ in loader:
            pass
    return len(store) * repeats / (time.perf_counter() - start)


def peak_bytes_per_clip(store, processor) -> int:
    """Peak traced memory while making one training item (in-process)."""
    videos = Dataset.from_dict({"captions": [["a clip"]] * len(store)})
    dataset = RetrievalTrainSet(videos, store, {"student": InputSpec(processor, 8)}, seed=0)
    tracemalloc.start()
    dataset[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def step_time(config_path: Path, batch_size: int, steps: int = 3) -> tuple[float, int, int]:
    """Seconds per training step (forward, symmetric InfoNCE, backward, AdamW) of a config, random init."""
    from modeling_mckd.arguments import DataArguments, ModelArguments
    from modeling_mckd.runner import build_model_and_processor

    settings = yaml.safe_load(config_path.read_text())
    # the generated clips have no audio track: the teacher is timed on frames and text (no audio tower)
    overrides = dict(settings.get("model_overrides", {}))
    overrides.pop("extra_modalities", None)
    overrides.pop("fuse_modalities", None)
    settings["model_overrides"] = overrides
    model_args = ModelArguments(model_preset=settings["model_preset"],
                                model_overrides=json.dumps(settings.get("model_overrides", {})),
                                image_size=settings.get("image_size", 64))
    videos = Dataset.from_dict({"video_id": ["v"], "captions": [["a red ball moves left"]]})
    model, processor = build_model_and_processor(model_args, DataArguments(), videos)
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
    return float(np.median(times[1:])), vp.num_frames, vp.crop_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="24 clips of 10-30 s instead of 8 of 10 s")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--batch_size", type=int, default=64, help="the configs' per-device train batch")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per loader: the other is the step's
    lengths = [10, 20, 30] if args.full else [10]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        start = time.perf_counter()
        paths = []
        for seconds in lengths:
            for width, height in ((320, 240), (640, 360)):
                for k in range(4):
                    paths.append(write_clip(folder / f"c{seconds}_{width}_{k}.mp4", seconds, width, height, seed=k))
        print(f"{len(paths)} clips generated in {time.perf_counter() - start:.0f} s "
              f"({', '.join(f'{s} s' for s in lengths)}; 320x240 and 640x360, 30 fps, H.264)")
        videos = Dataset.from_dict({"video_id": [p.stem for p in paths], "video": [str(p) for p in paths],
                                    "captions": [["a clip"]] * len(paths)})
        processor = student_processor()
        start = time.perf_counter()
        build_frame_cache([str(p) for p in paths], folder / "cache", size=32, progress=False)
        build_seconds = time.perf_counter() - start
        stores = {
            "(a) full decode, then sample": lambda: FullDecodeStore(videos, "pixels", frame_cache=False),
            "(b) sampled decoding": lambda: ClipStore(videos, "pixels", frame_cache=False),
            "(c) frame cache (32 px)": lambda: ClipStore(videos, "pixels", frame_cache=folder / "cache"),
        }
        rates = {}
        print(f"\nframe cache built in {build_seconds:.1f} s ({build_seconds / len(paths):.2f} s/clip)\n")
        print("| path | workers | clips/s | vs (a), same workers |")
        print("|---|---|---|---|")
        for name, make in stores.items():
            for workers in args.workers:
                rates[name, workers] = loader_rate(make(), processor, workers)
                base = rates["(a) full decode, then sample", workers]
                print(f"| {name} | {workers} | {rates[name, workers]:.2f} | {rates[name, workers] / base:.1f}x |",
                      flush=True)
        print("\n| path | clip | peak traced memory per item |")
        print("|---|---|---|")
        for name, make in stores.items():
            for seconds in lengths:
                for width, height in ((320, 240), (640, 360)):
                    clip = [p for p in paths if p.stem.startswith(f"c{seconds}_{width}_")][:1]
                    one = Dataset.from_dict({"video_id": ["c"], "video": [str(clip[0])], "captions": [["a clip"]]})
                    kind = {"(a)": FullDecodeStore, "(b)": ClipStore, "(c)": ClipStore}[name[:3]]
                    cache = folder / "cache" if name.startswith("(c)") else False
                    peak = peak_bytes_per_clip(kind(one, "pixels", frame_cache=cache), processor)
                    print(f"| {name} | {seconds} s {width}x{height} | {peak / 2**20:.1f} MiB |", flush=True)
        print("\n| model | batch | step (s) | data (s/batch, cache, 0 workers) | data / step |")
        print("|---|---|---|---|---|")
        cache_rate = rates["(c) frame cache (32 px)", 0]
        for role in ("student", "teacher"):
            seconds, frames, size = step_time(ROOT / "configs" / f"synthetic_{role}.yaml", args.batch_size)
            data = args.batch_size / cache_rate
            print(f"| {role} ({frames} frames, {size} px) | {args.batch_size} | {seconds:.3f} | {data:.3f} | "
                  f"{100 * data / seconds:.0f} % |", flush=True)


if __name__ == "__main__":
    main()
