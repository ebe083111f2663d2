"""From a per-video ``DatasetDict`` to model-ready batches, for training and evaluation.

One dataset item is one *video* with ``captions_per_video`` of its captions. The item is processed
for every model that needs it (the student, and the teacher when its embeddings are not cached), so
both see the same frames of the same clip. All randomness (which captions, which frames) comes from
a generator seeded by ``(seed, epoch, index)``: a resumed run, or a run sharded over several
processes, draws exactly what an uninterrupted single-process run draws.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from .processing_mckd import load_feature_file, pad_and_stack_sequences
from .video_io import FrameIndex, VideoDecodeError, frame_index, read_frames


logger = logging.getLogger(__name__)

# Past this estimate the frame cache would compete with the model for memory, so "auto" decodes on the
# fly instead (sampled decoding makes that cheap).
AUTO_CACHE_LIMIT_BYTES = 2 * 1024**3
# With the cache on, a clip of at most this many times the frames first asked of it is decoded whole, once.
WHOLE_CLIP_FACTOR = 4

# Shared by every store of the process, keyed by file: a script that trains several models on one benchmark
# (benchmarks/reproduce.py) counts and decodes each clip once, not once per model. Frame counts are always
# kept (a few bytes each); decoded frames only with `cache`, and only the frames that were sampled.
_FRAME_COUNTS: dict[str, tuple[int, FrameIndex | None]] = {}
_DECODED_FRAMES: dict[str, dict[int, np.ndarray]] = {}
_FEATURES: dict[str, np.ndarray] = {}

FRAME_CACHE_ENV = "MCKD_FRAME_CACHE"


class ClipStore:
    """Reads each video's raw inputs: sampled frames (pixels) or pre-extracted features, plus audio.

    Pixels are never decoded whole: `frame_count` counts a clip's frames once (demuxing, cached), and
    `frames` decodes only the requested ones (`video_io.read_frames` seeks to the keyframe before each),
    bit-identical to decoding every frame and indexing them. With ``cache=True`` the decoded frames are kept
    in memory (uint8), per clip and frame index, so a frame drawn again is not decoded again: evaluation's
    uniform frames after the first pass, and in training the frames drawn so far. Only a short clip, at most
    ``WHOLE_CLIP_FACTOR`` times the frames first asked of it, is decoded whole (one pass, no seeks).
    With a ``frame_cache`` (`modeling_mckd.frame_cache.FrameCache`, or its folder; default: the folder in
    the ``MCKD_FRAME_CACHE`` environment variable; False for none) clips it holds are read from it instead of the source:
    frames already resized, at its rate.
    """

    def __init__(self, videos, input_mode: str, cache: bool = False, feature_loader=None, frame_cache=None):
        self.video_paths = list(videos["video"]) if "video" in videos.column_names else [None] * len(videos)
        self.feature_refs = list(videos["features"]) if "features" in videos.column_names else [None] * len(videos)
        self.audio_paths = list(videos["audio"]) if "audio" in videos.column_names else [None] * len(videos)
        self.video_ids = list(videos["video_id"])
        self.input_mode = input_mode
        self.cache = cache
        self._feature_loader = feature_loader
        self._audio: dict[int, np.ndarray] = {}
        if input_mode == "pixels" and any(path is None for path in self.video_paths):
            missing = sum(path is None for path in self.video_paths)
            raise ValueError(
                f"{missing} of {len(self.video_paths)} rows have no `video` path but the model reads pixels: "
                "prepare the dataset with --videos_dir, or use a features model"
            )
        if input_mode == "features" and any(ref is None for ref in self.feature_refs):
            raise ValueError("the model reads pre-extracted features but some rows have no `features` reference")
        if frame_cache is None and input_mode == "pixels":
            frame_cache = os.environ.get(FRAME_CACHE_ENV) or None
        if isinstance(frame_cache, (str, os.PathLike)):
            from .frame_cache import FrameCache

            frame_cache = FrameCache.open(frame_cache)
        self.frame_cache = frame_cache or None  # False: none, whatever the environment says

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def has_audio(self) -> bool:
        return any(path is not None for path in self.audio_paths)

    def check_frame_cache_serves(self, processor, who: str) -> None:
        """Refuse a frame cache smaller than what ``who``'s processor resizes to: its frames would be upsampled
        from the cache's, silently blurrier than the source (a 64 px teacher fed from a 32 px student cache)."""
        if self.frame_cache is None or self.input_mode != "pixels":
            return
        video_processor = processor.video_processor
        needed = video_processor.size or video_processor.crop_size
        if needed is None:
            raise ValueError(f"frame cache {self.frame_cache.root} holds frames resized to {self.frame_cache.size} px, "
                             f"but {who}'s processor keeps frames at their source size (size and crop_size None)")
        if self.frame_cache.size < needed:
            raise ValueError(
                f"frame cache {self.frame_cache.root} holds frames resized to a shortest side of "
                f"{self.frame_cache.size} px, but {who}'s processor needs {needed} px: build a cache at --size {needed} "
                "or more (`python -m modeling_mckd.frame_cache`), or run without one"
            )

    def _cached_entry(self, index: int):
        return self.frame_cache.entry(self.video_paths[index]) if self.frame_cache is not None else None

    def frame_count(self, index: int) -> int:
        """Number of frames of video ``index`` (rows of its features in features mode)."""
        if self.input_mode != "pixels":
            return int(self.clip(index).shape[0])
        entry = self._cached_entry(index)
        if entry is not None:
            return entry.num_frames
        return self._count(self.video_paths[index])[0]

    @staticmethod
    def _count(path: str) -> tuple[int, FrameIndex | None]:
        if path not in _FRAME_COUNTS:
            index = frame_index(path)
            # a stream without timestamps: only a sequential decode can count its frames
            count = len(index) if index is not None else len(read_frames(path))
            _FRAME_COUNTS[path] = (count, index)
        return _FRAME_COUNTS[path]

    def frames(self, index: int, indices) -> np.ndarray:
        """Frames ``indices`` (in that order, repeats allowed) of video ``index`` -> (N, H, W, 3) uint8."""
        if self.input_mode != "pixels":
            raise ValueError("frames() reads pixels; this store holds pre-extracted features (use clip())")
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        entry = self._cached_entry(index)
        if entry is not None:
            return entry.frames(indices)
        path = self.video_paths[index]
        if not self.cache:
            return read_frames(path, indices, index=self._count(path)[1])
        kept = _DECODED_FRAMES.setdefault(path, {})
        missing = np.unique([i for i in indices.tolist() if i not in kept])
        if missing.size:
            count, frame_positions = self._count(path)
            if not kept and count <= WHOLE_CLIP_FACTOR * missing.size:
                # A short clip (the synthetic default's 16 frames, 8 drawn): one pass decodes all of it for
                # about the cost of seeking to the drawn frames, and later epochs' other draws come from
                # memory instead of seeking again (bench_data.py, "the default run").
                kept.update(enumerate(read_frames(path, index=frame_positions)))
                # a frame the whole decode did not give goes through the sampled path, which names the file
                missing = np.asarray([i for i in missing.tolist() if i not in kept], dtype=np.int64)
            if missing.size:
                decoded = read_frames(path, missing, index=frame_positions)
                kept.update(zip(missing.tolist(), decoded))
        return np.stack([kept[i] for i in indices.tolist()])

    def clip(self, index: int) -> np.ndarray:
        """All frames (T, H, W, 3) uint8, or all feature rows (T, D) float32, of video ``index``.

        For pixels this decodes the whole clip (a reference for tests and tools; the loaders use `frames`)."""
        if self.input_mode == "pixels":
            return self.frames(index, np.arange(self.frame_count(index)))
        key = self.feature_refs[index]
        if key in _FEATURES:
            return _FEATURES[key]
        if self._feature_loader is None:
            from .feature_store import load_feature_ref

            self._feature_loader = load_feature_ref
        clip = np.asarray(self._feature_loader(key), dtype=np.float32)
        if self.cache:
            _FEATURES[key] = clip
        return clip

    def audio(self, index: int) -> np.ndarray | None:
        path = self.audio_paths[index]
        if path is None:
            return None
        if index not in self._audio:
            self._audio[index] = load_feature_file(path)
        return self._audio[index]

    def estimated_cache_bytes(self) -> int:
        """Rough size of caching every frame of every clip (training can draw any frame), from the first
        readable clip; one frame is decoded to measure it."""
        for index in range(min(len(self), 4)):
            try:
                if self.input_mode != "pixels":
                    return int(self.clip(index).nbytes) * len(self)
                count = self.frame_count(index)
                return int(self.frames(index, [0]).nbytes) * count * len(self)
            except VideoDecodeError:
                continue
        return 0


def choose_cache(store: ClipStore, policy: str) -> bool:
    if policy not in {"auto", "yes", "no"}:
        raise ValueError(f"cache_frames must be auto, yes or no, got {policy!r}")
    if policy != "auto":
        return policy == "yes"
    return store.estimated_cache_bytes() <= AUTO_CACHE_LIMIT_BYTES


class EpochShuffleSampler(Sampler[int]):
    """A permutation seeded by ``(seed, epoch)``: reproducible after a resume and across ranks."""

    def __init__(self, length: int, seed: int, shuffle: bool = True):
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    # Not `set_epoch`: Accelerate calls that with its own iteration counter, which restarts at 0
    # on the loader that skips the batches already done after a resume.
    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.length))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())


def caption_offsets(captions: Sequence[Sequence[str]]) -> np.ndarray:
    """Index of each video's first caption in the flattened caption list (length V + 1)."""
    return np.concatenate([[0], np.cumsum([len(c) for c in captions])]).astype(np.int64)


@dataclass(frozen=True)
class InputSpec:
    """What one model of a training batch (``"student"``, ``"teacher"``) is fed: its processor's frames and tokens
    (cut to ``max_text_length``, the model's ``config.max_text_length``), and the clip's audio if ``with_audio``."""

    processor: Any
    max_text_length: int
    with_audio: bool = False


class RetrievalTrainSet(TorchDataset):
    """Training items: one video, some of its captions, its clip processed for each model of ``inputs``."""

    def __init__(self, videos, store: ClipStore, inputs: Mapping[str, InputSpec], *, captions_per_video: int = 1,
                 seed: int = 0):
        if captions_per_video < 1:
            raise ValueError(f"captions_per_video must be >= 1, got {captions_per_video}")
        self.captions = [list(c) for c in videos["captions"]]
        for row, captions in enumerate(self.captions):
            if not captions:
                raise ValueError(f"video {store.video_ids[row]!r} (row {row}) has no captions")
        self.offsets = caption_offsets(self.captions)
        self.store = store
        self.inputs = dict(inputs)
        for name, spec in self.inputs.items():
            store.check_frame_cache_serves(spec.processor, f"the {name}")
        self.captions_per_video = captions_per_video
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        captions = self.captions[index]
        replace = len(captions) < self.captions_per_video
        chosen = rng.choice(len(captions), size=self.captions_per_video, replace=replace)
        item = {
            "video_index": index,
            "caption_indices": [int(self.offsets[index] + c) for c in chosen],
            "captions": [captions[c] for c in chosen],
            "inputs": {},
        }
        frame_seed = rng.integers(2**32)
        try:
            sampled = self._sample(index, frame_seed)
        except VideoDecodeError as error:
            logger.warning("skipping training clip: %s", error)
            item["failed"] = True
            return item
        # The audio track is read only if some model is fed it (one with an audio tower).
        audio = self.store.audio(index) if any(spec.with_audio for spec in self.inputs.values()) else None
        for name, spec in self.inputs.items():
            frames, frame_rng = sampled[name]
            item["inputs"][name] = process_sampled(
                spec.processor, frames, audio if spec.with_audio else None, training=True, rng=frame_rng
            )
        return item

    def _sample(self, index: int, frame_seed) -> dict[str, tuple[np.ndarray, np.random.Generator]]:
        """Each model's sampled frames (feature rows) and the generator that drew them, which goes on to
        draw its crop. The same seed for every model: teacher and student see the same frames. The frames
        of all models are decoded together, each once."""
        if self.store.input_mode != "pixels":
            clip = self.store.clip(index)
            if clip.ndim != 2 or clip.shape[0] == 0:
                raise ValueError(f"Video features of {self.store.video_ids[index]!r} must be a (T, D) array with T >= 1, "
                                 f"got shape {clip.shape}.")
            out = {}
            for name, spec in self.inputs.items():
                frame_rng = np.random.default_rng(frame_seed)
                out[name] = (clip[spec.processor.video_processor.sample_indices(len(clip), True, frame_rng)], frame_rng)
            return out
        total = self.store.frame_count(index)
        drawn = {}
        for name, spec in self.inputs.items():
            frame_rng = np.random.default_rng(frame_seed)
            drawn[name] = (spec.processor.video_processor.sample_indices(total, True, frame_rng), frame_rng)
        wanted = np.unique(np.concatenate([indices for indices, _ in drawn.values()]))
        frames = self.store.frames(index, wanted)
        return {name: (frames[np.searchsorted(wanted, indices)], frame_rng)
                for name, (indices, frame_rng) in drawn.items()}


class RetrievalVideoSet(TorchDataset):
    """Evaluation items: every video once, uniformly sampled. A clip that cannot be decoded is
    replaced by a blank one and counted, so the gallery keeps its indices."""

    def __init__(self, store: ClipStore, processor, indices: Sequence[int] | None = None, with_audio: bool = False):
        store.check_frame_cache_serves(processor, "the model being evaluated")
        self.store = store
        self.processor = processor
        self.with_audio = with_audio
        self.indices = list(range(len(store))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        index = self.indices[position]
        video_processor = self.processor.video_processor
        frames, failed = None, False
        try:
            if video_processor.input_mode == "pixels":
                # uniform frames, decoded alone
                frames = self.store.frames(index, video_processor.sample_indices(self.store.frame_count(index)))
            else:
                clip = self.store.clip(index)
        except VideoDecodeError as error:
            logger.warning("evaluation clip replaced by a blank one: %s", error)
            clip, failed = None, True
        # The audio is read only for a model that fuses it into its video embedding.
        audio = self.store.audio(index) if self.with_audio else None
        if video_processor.input_mode == "pixels":
            # VideoCollator preprocesses the batch's frames at once (one resize for the whole batch)
            inputs = {"frames": frames if frames is not None else sample_frames(self.processor, None, training=False,
                                                                                rng=None)}
            if audio is not None:
                inputs["audio"] = torch.from_numpy(audio)
        else:
            inputs = process_clip(self.processor, clip, audio, training=False, rng=None)
        return {"video_index": index, "failed": failed, "inputs": {"model": inputs}}


def sample_frames(processor, clip: np.ndarray | None, *, training: bool, rng) -> np.ndarray:
    """One clip's sampled uint8 frames for a pixels-mode processor; a blank frame for a clip that failed."""
    video_processor = processor.video_processor
    if clip is None:
        # A blank stand-in for a clip that failed to decode, so the gallery keeps its indices.
        side = video_processor.crop_size or video_processor.size or 1
        clip = np.zeros((1, side, side, 3), dtype=np.uint8)
    return clip[video_processor.sample_indices(len(clip), training=training, rng=rng)]


def process_clip(processor, clip: np.ndarray | None, audio: np.ndarray | None, *, training: bool, rng) -> dict:
    """Sample and preprocess one whole clip (all its frames or feature rows) for one model's processor
    (tensors without a batch axis)."""
    video_processor = processor.video_processor
    if video_processor.input_mode == "pixels":
        frames = sample_frames(processor, clip, training=training, rng=rng)
        return process_sampled(processor, frames, audio, training=training, rng=rng)
    if clip is None:
        raise VideoDecodeError("<features>", "pre-extracted features could not be read")
    out = {"clip": video_processor.sample_features(clip, training=training, rng=rng)}
    if audio is not None:
        out["audio"] = torch.from_numpy(audio)
    return out


def process_sampled(processor, sampled: np.ndarray, audio: np.ndarray | None, *, training: bool, rng) -> dict:
    """Preprocess one clip's already-sampled frames (or feature rows) for one model's processor; ``rng`` is the
    generator that drew them (it goes on to draw the training crop), as in `process_clip`."""
    video_processor = processor.video_processor
    if video_processor.input_mode == "pixels":
        tensor = video_processor.preprocess_frames(sampled, training=training, rng=rng)
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(sampled, dtype=np.float32))
    out = {"clip": tensor}
    if audio is not None:
        out["audio"] = torch.from_numpy(audio)
    return out


def model_inputs(processor, processed: list[dict], texts: list[str] | None, max_text_length: int) -> dict:
    """Batch the processed clips (and tokenise the texts) for one model."""
    out = {}
    if texts is not None:
        tokens = processor.tokenizer(
            texts, padding=True, truncation=True, max_length=max_text_length, return_tensors="pt"
        )
        out["input_ids"] = tokens["input_ids"]
        out["attention_mask"] = tokens["attention_mask"]
    if processed:
        video_processor = processor.video_processor
        clips, mask = video_processor.pad_and_stack([p["clip"] for p in processed])
        key = "pixel_values_videos" if video_processor.input_mode == "pixels" else "video_features"
        out[key] = clips
        out["video_mask"] = mask
        if all("audio" in p for p in processed):
            out["audio_features"], out["audio_mask"] = pad_and_stack_sequences([p["audio"] for p in processed])
    return out


class TrainCollator:
    """Batches training items; captions are flattened (k per video) and point at their video."""

    def __init__(self, inputs: Mapping[str, InputSpec]):
        self.inputs = dict(inputs)

    def __call__(self, items: list[dict]) -> dict:
        failed = sum(bool(item.get("failed")) for item in items)
        items = [item for item in items if not item.get("failed")]
        batch = {"num_failed": torch.tensor(failed), "num_items": torch.tensor(len(items) + failed)}
        if not items:
            return batch
        texts = [caption for item in items for caption in item["captions"]]
        per_video = len(items[0]["captions"])
        batch["video_index"] = torch.tensor([item["video_index"] for item in items])
        batch["caption_index"] = torch.tensor([c for item in items for c in item["caption_indices"]])
        # Row of each caption's video inside this batch, to align video rows with caption rows.
        batch["text_video_position"] = torch.arange(len(items)).repeat_interleave(per_video)
        for name, spec in self.inputs.items():
            batch[name] = model_inputs(spec.processor, [item["inputs"][name] for item in items], texts,
                                       spec.max_text_length)
        return batch


class VideoCollator:
    """Batches evaluation items (RetrievalVideoSet); their sampled frames are preprocessed here, the whole batch
    at once (`MCKDVideoProcessor.preprocess_clips`), with the same values as one clip at a time."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        processed = [item["inputs"]["model"] for item in items]
        if processed and "frames" in processed[0]:
            clips = self.processor.video_processor.preprocess_clips([p["frames"] for p in processed])
            processed = [{**{k: v for k, v in p.items() if k != "frames"}, "clip": clip} for p, clip in zip(processed, clips)]
        return {
            "video_index": torch.tensor([item["video_index"] for item in items]),
            "num_failed": torch.tensor(sum(item["failed"] for item in items)),
            "model": model_inputs(self.processor, processed, None, 0),
        }


__all__ = [
    "ClipStore",
    "EpochShuffleSampler",
    "InputSpec",
    "RetrievalTrainSet",
    "RetrievalVideoSet",
    "TrainCollator",
    "VideoCollator",
    "caption_offsets",
    "choose_cache",
    "model_inputs",
    "process_clip",
    "process_sampled",
    "sample_frames",
]
