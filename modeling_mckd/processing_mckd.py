"""MCKDProcessor: the tokenizer plus `MCKDVideoProcessor` (frame sampling, resize, crop, normalise).

`save_pretrained` copies this file and `video_io.py` next to the checkpoint, so
`AutoProcessor.from_pretrained(dir, trust_remote_code=True)` works without this package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from .video_io import BACKENDS, read_video, sample_frame_indices

INPUT_MODES = ("pixels", "features")
TRAINING_CROPS = ("center", "random")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _make_rng(rng: np.random.Generator | None, seed: int | None) -> np.random.Generator | None:
    if rng is not None and seed is not None:
        raise ValueError("Pass either `rng` or `seed`, not both.")
    return np.random.default_rng(seed) if seed is not None else rng


def pad_and_stack_sequences(items: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad tensors (T_i, ...) with zeros to `length` (default: the longest) -> (B, length, ...), mask (B, length) long."""
    if len(items) == 0:
        raise ValueError("Nothing to stack: the batch is empty.")
    trailing = tuple(items[0].shape[1:])
    for index, item in enumerate(items):
        if tuple(item.shape[1:]) != trailing:
            raise ValueError(
                f"Item {index} has per-step shape {tuple(item.shape[1:])}, item 0 has {trailing}; they must agree."
            )
        if item.shape[0] == 0:
            raise ValueError(f"Item {index} has no step (length 0).")
    longest = max(int(item.shape[0]) for item in items)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"An item has {longest} steps, more than the padded length {length}.")
    if all(item.shape[0] == length for item in items):  # nothing to pad: one copy, not a zero fill and B copies
        return torch.stack(list(items)), torch.ones(len(items), length, dtype=torch.long)
    batch = items[0].new_zeros((len(items), length, *trailing))
    mask = torch.zeros(len(items), length, dtype=torch.long)
    for index, item in enumerate(items):
        batch[index, : item.shape[0]] = item
        mask[index, : item.shape[0]] = 1
    return batch, mask


class MCKDVideoProcessor(VideoProcessorMixin):
    r"""Turns videos into model inputs: frame sampling, shortest-edge resize, crop, rescale, normalise.

    Args:
        num_frames (`int`, defaults to 8): frames per clip; shorter clips are padded and masked.
        size (`int`, *optional*, defaults to 64): resize so the shortest edge has this length (None: no resize).
        crop_size (`int`, *optional*, defaults to 64): square crop, centred for evaluation (None: no crop).
        training_crop (`str`, defaults to `"center"`): `"center"` or `"random"` crop position in training.
        image_mean, image_std (`list[float]`, default 0.5 each): per-channel normalisation.
        do_rescale (`bool`, defaults to `True`), rescale_factor (`float`, defaults to 1/255).
        do_normalize (`bool`, defaults to `True`).
        input_mode (`str`, defaults to `"pixels"`): what `videos=` items are: frames/files
            (`"pixels"`) or frame-feature arrays / `.npy` files (`"features"`).
        backend (`str`, defaults to `"pyav"`): decoder for file paths (`"pyav"`, `"torchcodec"`, `"decord"`).
    """

    model_input_names = ["pixel_values_videos", "video_mask"]

    def __init__(
        self,
        num_frames: int = 8,
        size: int | None = 64,
        crop_size: int | None = 64,
        training_crop: str = "center",
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        input_mode: str = "pixels",
        backend: str = "pyav",
        **kwargs,
    ):
        kwargs.pop("video_processor_type", None)  # written by to_dict, not a setting
        super().__init__(**kwargs)
        _check_positive_int("num_frames", num_frames)
        if size is not None:
            _check_positive_int("size", size)
        if crop_size is not None:
            _check_positive_int("crop_size", crop_size)
            if size is not None and crop_size > size:
                raise ValueError(f"`crop_size` ({crop_size}) cannot exceed `size` ({size}), the resized shortest edge.")
        if training_crop not in TRAINING_CROPS:
            raise ValueError(f"`training_crop` must be one of {list(TRAINING_CROPS)}, got {training_crop!r}.")
        if input_mode not in INPUT_MODES:
            raise ValueError(f"`input_mode` must be one of {list(INPUT_MODES)}, got {input_mode!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
        image_mean, image_std = [float(v) for v in image_mean], [float(v) for v in image_std]
        if len(image_mean) != len(image_std):
            raise ValueError(f"`image_mean` ({len(image_mean)} values) and `image_std` ({len(image_std)}) must match.")
        if any(s <= 0 for s in image_std):
            raise ValueError(f"`image_std` values must be > 0, got {image_std}.")
        self.num_frames = num_frames
        self.size = size
        self.crop_size = crop_size
        self.training_crop = training_crop
        self.image_mean = image_mean
        self.image_std = image_std
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.input_mode = input_mode
        self.backend = backend

    # ------------------------------------------------------------------ pieces (used by the trainer)
    def sample_indices(self, num_total: int, training: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """Frame indices for a clip of `num_total` frames: segment centres (eval) or random in-segment (training)."""
        return sample_frame_indices(num_total, self.num_frames, training=training, rng=rng)

    def preprocess_frames(
        self, frames: np.ndarray, training: bool = False, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """uint8 frames (T, H, W, C) -> float32 (T, C, H', W'): resize, crop (one position per clip), normalise."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != len(self.image_mean):
            raise ValueError(
                f"frames must be (T, H, W, {len(self.image_mean)}) uint8, got shape {frames.shape}."
            )
        # (T, C, H, W) as a channels-last view of the frames: uint8 frames are resized as uint8 (torch's
        # vectorised channels-last path, about 3x faster than in float32, rounded to whole levels as PIL
        # and torchvision do), and only the smaller result is converted to float
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        if pixels.dtype != torch.uint8:
            pixels = pixels.float()
        height, width = pixels.shape[-2:]
        if self.size is not None and min(height, width) != self.size:
            scale = self.size / min(height, width)
            new_size = (max(self.size, round(height * scale)), max(self.size, round(width * scale)))
            pixels = F.interpolate(pixels, size=new_size, mode="bilinear", align_corners=False, antialias=True)
            height, width = new_size
        pixels = pixels.contiguous().float()
        if self.crop_size is not None:
            if height < self.crop_size or width < self.crop_size:
                raise ValueError(
                    f"Frames of {height}x{width} are smaller than `crop_size`={self.crop_size}; set `size` to resize them."
                )
            if training and self.training_crop == "random":
                rng = rng if rng is not None else np.random.default_rng()
                top = int(rng.integers(0, height - self.crop_size + 1))
                left = int(rng.integers(0, width - self.crop_size + 1))
            else:
                top, left = (height - self.crop_size) // 2, (width - self.crop_size) // 2
            pixels = pixels[:, :, top : top + self.crop_size, left : left + self.crop_size]
        if self.do_rescale:
            pixels = pixels * self.rescale_factor
        if self.do_normalize:
            mean = torch.tensor(self.image_mean).view(1, -1, 1, 1)
            std = torch.tensor(self.image_std).view(1, -1, 1, 1)
            pixels = (pixels - mean) / std
        return pixels.contiguous()

    def preprocess_clips(
        self, clips: Sequence[np.ndarray], training: bool = False, rng: np.random.Generator | None = None
    ) -> list[torch.Tensor]:
        """Many clips of uint8 frames (T_i, H, W, C) -> a list of float32 (T_i, C, H', W'), each exactly as
        `preprocess_frames` makes it. Clips of the same shape go through one batched resize and normalise,
        which is what makes a small model's preprocessing cheap. Random training crops differ per clip, so
        those clips are done one by one."""
        if training and self.training_crop == "random" and self.crop_size is not None:
            return [self.preprocess_frames(clip, training, rng) for clip in clips]
        clips = [np.asarray(clip) for clip in clips]
        out: list[torch.Tensor | None] = [None] * len(clips)
        groups: dict[tuple, list[int]] = {}
        for position, clip in enumerate(clips):
            groups.setdefault(clip.shape, []).append(position)
        for shape, positions in groups.items():
            if len(shape) != 4:  # preprocess_frames names the problem
                for position in positions:
                    out[position] = self.preprocess_frames(clips[position], training, rng)
                continue
            frames = np.stack([clips[position] for position in positions]).reshape(-1, *shape[1:])
            pixels = self.preprocess_frames(frames, training, rng)
            for position, clip in zip(positions, pixels.view(len(positions), shape[0], *pixels.shape[1:])):
                out[position] = clip
        return out

    def pad_and_stack(self, items: Sequence[torch.Tensor], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack per-clip tensors (T_i, ...) into (B, num_frames, ...) with a (B, num_frames) long mask (1 = real)."""
        return pad_and_stack_sequences(items, self.num_frames if length is None else length)

    def sample_features(
        self, features, training: bool = False, rng: np.random.Generator | None = None
    ) -> torch.Tensor:
        """Frame features (T, D) -> float32 (min(T, num_frames), D), sampled like frames."""
        array = np.asarray(features, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] == 0:
            raise ValueError(f"Video features must be a (T, D) array with T >= 1, got shape {array.shape}.")
        indices = self.sample_indices(array.shape[0], training=training, rng=rng)
        return torch.from_numpy(np.ascontiguousarray(array[indices]))

    def load_frames(self, video, training: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
        """A file path -> sampled uint8 frames (N, H, W, 3); a decoded (T, H, W, 3) array -> its sampled frames."""
        if isinstance(video, (str, os.PathLike)):
            return read_video(video, self.num_frames, training=training, rng=rng, backend=self.backend)
        frames = np.asarray(video)
        if frames.ndim != 4:
            raise ValueError(f"A decoded video must be a (T, H, W, 3) uint8 array, got shape {frames.shape}.")
        return frames[self.sample_indices(frames.shape[0], training=training, rng=rng)]

    # ------------------------------------------------------------------ batch API
    def __call__(
        self,
        videos=None,
        video_features=None,
        training: bool = False,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Process a batch: `videos` (paths or (T, H, W, 3) uint8 arrays; feature arrays or `.npy` paths in
        features mode) or `video_features` ((T, D) arrays). Returns `pixel_values_videos` (B, T, C, H, W)
        float32 or `video_features` (B, T, D) float32, and `video_mask` (B, T) long."""
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for MCKDVideoProcessor.")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"`return_tensors` must be 'pt' (PyTorch tensors), got {return_tensors!r}.")
        rng = _make_rng(rng, seed)
        if training and rng is None:
            rng = np.random.default_rng()
        data = {}
        if videos is not None and video_features is not None:
            raise ValueError("Pass `videos` or `video_features`, not both.")
        if videos is not None and self.input_mode == "pixels":
            clips = self.preprocess_clips([self.load_frames(v, training, rng) for v in _as_list(videos, 4)], training, rng)
            data["pixel_values_videos"], data["video_mask"] = self.pad_and_stack(clips)
        else:
            items = video_features if video_features is not None else videos
            if items is not None:
                sampled = [self.sample_features(_load_feature_array(f), training, rng) for f in _as_list(items, 2)]
                data["video_features"], data["video_mask"] = self.pad_and_stack(sampled)
        return BatchFeature(data=data)

    preprocess = __call__


def _as_list(items, item_ndim: int) -> list:
    """Accept one item or a list of items (a path, or an array of `item_ndim` dimensions, is one item)."""
    if isinstance(items, (str, os.PathLike)):
        return [items]
    if isinstance(items, (np.ndarray, torch.Tensor)):
        if items.ndim == item_ndim:
            return [items]
        if items.ndim == item_ndim + 1:
            return list(items)
        raise ValueError(f"Expected arrays of {item_ndim} dimensions (or a batch of them), got shape {tuple(items.shape)}.")
    items = list(items)
    if not items:
        raise ValueError("Empty batch.")
    return items


def load_feature_file(path: str | os.PathLike, feature_dim: int | None = None, what: str = "audio features") -> np.ndarray:
    """A ``.npy`` file of per-time-step features -> float32 (T, D) with T >= 1 (and D == ``feature_dim`` if given).

    The one reader of audio (and other per-clip) feature files for the package: datasets, search, the
    processor and the probes. Never unpickles (the file may be untrusted); a bad file is a ValueError that
    names it and says what was expected.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{what} file {str(path)!r}: expected a .npy array (T, D)")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:  # pickled objects, truncated or not .npy at all
        raise ValueError(f"{what} file {str(path)!r} is not a readable numeric .npy array: {error}") from error
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{what} file {str(path)!r} has shape {array.shape}, expected (T, D) with T >= 1")
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise ValueError(f"{what} file {str(path)!r} has shape {array.shape}, expected (T, {feature_dim})")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{what} file {str(path)!r} holds {array.dtype} values, expected real numbers")
    return np.ascontiguousarray(array, dtype=np.float32)


def _load_feature_array(item) -> np.ndarray:
    if isinstance(item, (str, os.PathLike)):
        return load_feature_file(item, what="feature")
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().float().numpy()
    return np.asarray(item)


class MCKDProcessor(ProcessorMixin):
    r"""Tokenizer + [`MCKDVideoProcessor`], so that `model(**processor(text=..., videos=...))` works.

    Args:
        video_processor ([`MCKDVideoProcessor`]): frame sampling and pixel preprocessing.
        tokenizer ([`PreTrainedTokenizerBase`]): e.g. from `modeling_mckd.build_word_tokenizer` or an HF backbone.
    """

    def __init__(self, video_processor=None, tokenizer=None, **kwargs):
        super().__init__(video_processor, tokenizer, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        # transformers resolves the expected video class through its torchvision-only video
        # mappings; check ours directly so the processor works without torchvision.
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"`video_processor` must be an MCKDVideoProcessor, got {type(argument).__name__}.")
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # ProcessorMixin would load the video processor through AutoVideoProcessor, which insists on
        # torchvision; ours needs only torch, so rebuild it from its entry in processor_config.json.
        video_dict = (processor_dict or {}).get("video_processor")
        if not isinstance(video_dict, dict):
            raise ValueError(
                f"{pretrained_model_name_or_path!s}: processor_config.json has no 'video_processor' entry; "
                "was it saved by MCKDProcessor.save_pretrained?"
            )
        subfolder = kwargs.pop("subfolder", "")
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        return [MCKDVideoProcessor.from_dict(video_dict), tokenizer]

    def __call__(
        self,
        text=None,
        videos=None,
        video_features=None,
        audio_features=None,
        return_tensors: str | None = "pt",
        padding=True,
        truncation=True,
        max_length: int | None = None,
        training: bool = False,
        rng: np.random.Generator | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Tokenize `text` and process `videos` / `video_features` / `audio_features` into one BatchFeature.

        Keys: `input_ids`, `attention_mask`; `pixel_values_videos` (B, T, C, H, W) or `video_features`
        (B, T, D) with `video_mask` (B, T); `audio_features` (B, T_a, D_a) with `audio_mask`.
        `training=True` samples frames at random within their segments (seed it with `seed` or `rng`).
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)} for MCKDProcessor.")
        if text is None and videos is None and video_features is None and audio_features is None:
            raise ValueError("Give at least one of `text`, `videos`, `video_features`, `audio_features`.")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"`return_tensors` must be 'pt' (PyTorch tensors), got {return_tensors!r}.")
        data = {}
        if text is not None:
            encoded = self.tokenizer(
                text, padding=padding, truncation=truncation, max_length=max_length, return_tensors="pt"
            )
            # the model reads only these two; BERT-style token_type_ids are all zero for single sentences
            data["input_ids"] = encoded["input_ids"]
            data["attention_mask"] = encoded["attention_mask"]
        if videos is not None or video_features is not None:
            rng = _make_rng(rng, seed)
            data.update(
                self.video_processor(videos=videos, video_features=video_features, training=training, rng=rng)
            )
        if audio_features is not None:
            tracks = [torch.from_numpy(np.ascontiguousarray(_load_feature_array(a), dtype=np.float32)) for a in _as_list(audio_features, 2)]
            for index, track in enumerate(tracks):
                if track.ndim != 2:
                    raise ValueError(f"`audio_features[{index}]` must be (T, D), got shape {tuple(track.shape)}.")
            data["audio_features"], data["audio_mask"] = pad_and_stack_sequences(tracks)
        return BatchFeature(data=data)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "video_features", "video_mask", "audio_features", "audio_mask"]


__all__ = ["MCKDProcessor", "MCKDVideoProcessor", "load_feature_file", "pad_and_stack_sequences"]
