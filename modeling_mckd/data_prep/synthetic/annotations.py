"""The benchmark plan: clips of each split, hard-negative groups, captions, the annotation file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import ANNOTATION_NAME, GENERATOR_VERSION, MOTIONS, SPLIT_FIELD, SyntheticConfig
from .scenes import SceneRandom, applicable_attributes, make_captions, make_variant, sample_scene


def _group_sizes(num_hard: int, rng: SceneRandom, max_size: int) -> list[int]:
    sizes = []
    remaining = num_hard
    while remaining >= 2:
        size = min(int(rng.integers(2, max_size + 1)), remaining)
        if remaining - size == 1:  # a lone leftover cannot form a group: take it in, or leave two
            if size < max_size:
                size += 1
            elif size > 2:
                size -= 1
        sizes.append(size)
        remaining -= size
    return sizes


def _plan_split(
    split: str, count: int, rng: SceneRandom, config: SyntheticConfig, group_prefix: str
) -> list[list[dict]]:
    """Groups of clips of one split: hard-negative groups (base first) and singletons, shuffled."""
    groups: list[list[dict]] = []
    for group_index, size in enumerate(
        _group_sizes(int(round(config.hard_negative_fraction * count)), rng, config.max_group_size)
    ):
        group_id = f"{group_prefix}{group_index:04d}"
        only_order = set(config.hard_negative_attributes) == {"order"}
        base = sample_scene(rng, config, two_events=True if only_order else None)
        options = applicable_attributes(base, config)
        rng.shuffle(options)
        # Variants change distinct attributes when possible, repeating one only when too few apply.
        attributes = [options[i % len(options)] for i in range(size - 1)]
        members = [{"scene": base, "differs_in": None, "group": group_id, "base": True}]
        for attribute in attributes:
            members.append(
                {
                    "scene": make_variant(base, attribute, rng, config),
                    "differs_in": attribute,
                    "group": group_id,
                    "base": False,
                }
            )
        groups.append(members)
    num_single = count - sum(len(group) for group in groups)
    for _ in range(num_single):
        groups.append([{"scene": sample_scene(rng, config), "differs_in": None, "group": None, "base": True}])
    rng.shuffle(groups)
    return groups


def build_annotations(config: SyntheticConfig) -> tuple[dict, list[list[dict]]]:
    """The MSR-VTT-layout annotation dict and the render tasks (one list of clips per group).

    Pure function of ``config``: the same config gives the same dict (and the same JSON bytes).
    """
    rng = SceneRandom(config.seed)
    videos: list[dict] = []
    sentences: list[dict] = []
    tasks: list[list[dict]] = []
    next_index = 0
    for split, count in (("train", config.num_train), ("validation", config.num_val), ("test", config.num_test)):
        for group in _plan_split(split, count, rng, config, group_prefix=f"{SPLIT_FIELD[split]}-group"):
            render_seed = rng.seed_value()
            ids = [f"synthetic{next_index + offset:05d}" for offset in range(len(group))]
            next_index += len(group)
            base_id = ids[0]
            clips = []
            for video_id, member in zip(ids, group, strict=True):
                scene = member["scene"]
                if member["group"] is None:
                    hard_negatives = {}
                elif member["base"]:
                    hard_negatives = {
                        other_id: other["differs_in"] for other_id, other in zip(ids[1:], group[1:], strict=True)
                    }
                else:
                    hard_negatives = {base_id: member["differs_in"]}
                reversed_from = base_id if member["differs_in"] == "time_reversal" else None
                entry = {
                    "video_id": video_id,
                    "id": len(videos),
                    "split": SPLIT_FIELD[split],
                    "category": MOTIONS.index(min(scene["objects"], key=lambda obj: obj["start"])["motion"]),
                    "num_events": len(scene["objects"]),
                    "hard_negative_group": member["group"],
                    "hard_negative_of": None if member["base"] else base_id,
                    "differs_in": member["differs_in"],
                    "hard_negatives": hard_negatives,
                    "render_seed": render_seed,
                    "frames_reversed_from": reversed_from,
                    "scene": scene,
                }
                videos.append(entry)
                for caption, partial in make_captions(scene, rng, config):
                    sentences.append(
                        {"video_id": video_id, "caption": caption, "sen_id": len(sentences), "partial": partial}
                    )
                clips.append(
                    {
                        "video_id": video_id,
                        "scene": scene,
                        "render_seed": render_seed,
                        "frames_reversed_from": reversed_from,
                    }
                )
            tasks.append(clips)
    info = {
        "description": "MCKD synthetic text-video retrieval benchmark (dataset_scripts/synthetic.py)",
        "generator_version": GENERATOR_VERSION,
        "config_hash": config.config_hash(),
        "config": config.to_dict(),
    }
    return {"info": info, "videos": videos, "sentences": sentences}, tasks



def load_annotations(output_dir: str | os.PathLike) -> dict:
    """The ``MSRVTT_data.json`` of a generated folder (with the per-clip scene metadata)."""
    return json.loads((Path(output_dir) / ANNOTATION_NAME).read_text(encoding="utf-8"))


def hard_negative_subset(annotations: dict, split: str = "test") -> list[str]:
    """Ids of the clips of ``split`` (train / validate / test) that belong to a hard-negative group."""
    return [
        v["video_id"] for v in annotations["videos"] if v["split"] == split and v["hard_negative_group"] is not None
    ]


# ----------------------------------------------------------------------------------------------
