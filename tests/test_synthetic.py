"""Tests of the built-in synthetic benchmark (dataset_scripts/synthetic.py).

Tiny configs (a few clips of 8 frames at 32x32) keep the suite fast; every check runs on real
mp4 files decoded with PyAV and on the DatasetDict written through the MSR-VTT code path.
"""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling_mckd.data_prep import synthetic
from modeling_mckd.output_guard import OutputFolderError
from modeling_mckd.data_prep.synthetic import (
    COLOUR_MATERIALS,
    MATERIALS,
    COLOUR_WORDS,
    MOTION_WORDS,
    SHAPE_POLYGONS,
    SHAPE_WORDS,
    SIZE_RADIUS,
    SIZE_WORDS,
    SceneRandom,
    SyntheticConfig,
    SyntheticOutputExistsError,
    audio_features,
    build_annotations,
    caption_plan,
    generate_synthetic,
    make_caption,
    render_background,
    render_clip,
    render_group_frames,
    sample_scene,
    scene_difference,
    shape_distance,
    synthesize_waveform,
    time_reversed,
)

REPO = Path(__file__).resolve().parents[1]

TINY = dict(num_train=12, num_val=4, num_test=4, num_frames=8, frame_size=32, hard_negative_fraction=0.5)


def decode(path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])


def videos_by_id(annotations: dict) -> dict[str, dict]:
    return {video["video_id"]: video for video in annotations["videos"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny benchmark generated with the pool (2 workers); returns (folder, DatasetDict, annotations)."""
    folder = tmp_path_factory.mktemp("synthetic") / "tiny"
    dataset = generate_synthetic(folder, SyntheticConfig(seed=3, **TINY), workers=2)
    return folder, dataset, json.loads((folder / "MSRVTT_data.json").read_text())


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """Every clip in a hard-negative group, 16 frames at 48x48 (for the pixel-level checks)."""
    folder = tmp_path_factory.mktemp("synthetic") / "hard"
    config = SyntheticConfig(
        seed=11, num_train=24, num_val=0, num_test=0, num_frames=12, frame_size=48, hard_negative_fraction=1.0
    )
    generate_synthetic(folder, config, workers=1)
    return folder, config, json.loads((folder / "MSRVTT_data.json").read_text())


# ----------------------------------------------------------------------------------------------
# files, DatasetDict, determinism
# ----------------------------------------------------------------------------------------------


def test_dataset_dict_loads_with_contract_columns(tiny):
    from datasets import load_from_disk

    folder, _dataset, annotations = tiny
    loaded = load_from_disk(str(folder / "dataset"))
    assert list(loaded) == ["train", "validation", "test"]
    assert {split: len(loaded[split]) for split in loaded} == {"train": 12, "validation": 4, "test": 4}
    assert loaded["train"].column_names == ["video_id", "video", "captions", "audio", "features", "split"]
    captions = {}
    for sentence in annotations["sentences"]:
        captions.setdefault(sentence["video_id"], []).append(sentence["caption"])
    split_of = {video["video_id"]: video["split"] for video in annotations["videos"]}
    for split in loaded:
        for row in loaded[split]:
            assert row["split"] == split
            assert {"train": "train", "validation": "validate", "test": "test"}[split] == split_of[row["video_id"]]
            assert row["captions"] == captions[row["video_id"]] and len(row["captions"]) == 5
            assert Path(row["video"]) == folder.resolve() / "videos" / f"{row['video_id']}.mp4"
            assert Path(row["audio"]) == folder.resolve() / "audio" / f"{row['video_id']}.npy"
            assert row["features"] is None
    manifest = json.loads((folder / "synthetic_manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["config_hash"] == SyntheticConfig(seed=3, **TINY).config_hash()


def test_mp4_decode_to_requested_size_and_audio_shapes(tiny):
    folder, _dataset, annotations = tiny
    for video in annotations["videos"]:
        frames = decode(folder / "videos" / f"{video['video_id']}.mp4")
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
        audio = np.load(folder / "audio" / f"{video['video_id']}.npy", allow_pickle=False)
        assert audio.shape == (16, 32) and audio.dtype == np.float32 and np.isfinite(audio).all()


def test_same_seed_same_bytes_and_frames_other_seed_differs(tiny, tmp_path):
    folder, _dataset, _annotations = tiny
    # One worker this time: the output must not depend on the process split.
    again = tmp_path / "again"
    generate_synthetic(again, SyntheticConfig(seed=3, **TINY), workers=1)
    assert (again / "MSRVTT_data.json").read_bytes() == (folder / "MSRVTT_data.json").read_bytes()
    for name in sorted(path.name for path in (folder / "videos").iterdir()):
        np.testing.assert_array_equal(decode(again / "videos" / name), decode(folder / "videos" / name))
        stem = name[: -len(".mp4")]
        np.testing.assert_array_equal(
            np.load(again / "audio" / f"{stem}.npy"), np.load(folder / "audio" / f"{stem}.npy")
        )
    other = tmp_path / "other"
    generate_synthetic(other, SyntheticConfig(seed=4, **TINY), workers=1)
    assert (other / "MSRVTT_data.json").read_bytes() != (folder / "MSRVTT_data.json").read_bytes()
    differing = [
        name
        for name in sorted(path.name for path in (folder / "videos").iterdir())
        if not np.array_equal(decode(other / "videos" / name), decode(folder / "videos" / name))
    ]
    assert len(differing) == 20


def test_annotation_pure_function_of_config():
    first, _ = build_annotations(SyntheticConfig(seed=5, num_train=6, num_val=2, num_test=2))
    second, _ = build_annotations(SyntheticConfig(seed=5, num_train=6, num_val=2, num_test=2))
    assert json.dumps(first) == json.dumps(second)
    assert SyntheticConfig(seed=5).config_hash() == SyntheticConfig(seed=5).config_hash()
    assert SyntheticConfig(seed=5).config_hash() != SyntheticConfig(seed=5, pixel_noise=0.05).config_hash()


def test_reuse_overwrite_and_refusal(tiny, tmp_path):
    folder, _dataset, _annotations = tiny
    video = folder / "videos" / "synthetic00000.mp4"
    stamp = video.stat().st_mtime_ns
    reused = generate_synthetic(folder, SyntheticConfig(seed=3, **TINY))
    assert video.stat().st_mtime_ns == stamp  # nothing regenerated
    assert len(reused["train"]) == 12
    with pytest.raises(SyntheticOutputExistsError, match="differing fields: seed"):
        generate_synthetic(folder, SyntheticConfig(seed=9, **TINY))
    # Same config but damaged (its DatasetDict deleted): regenerated without --overwrite.
    small = {**TINY, "num_train": 2, "num_val": 1, "num_test": 1}
    damaged = tmp_path / "damaged"
    generate_synthetic(damaged, SyntheticConfig(**small))
    shutil.rmtree(damaged / "dataset")
    assert len(generate_synthetic(damaged, SyntheticConfig(**small))["train"]) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    # A folder the generator did not write is refused, --overwrite or not: its videos/ would be deleted.
    for overwrite in (False, True):
        with pytest.raises(OutputFolderError, match="synthetic benchmark folder"):
            generate_synthetic(foreign, SyntheticConfig(**small), overwrite=overwrite)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    # --overwrite regenerates a synthetic folder of another config, replacing only what the generator writes.
    (damaged / "notes.txt").write_text("mine")
    result = generate_synthetic(damaged, SyntheticConfig(**{**small, "num_train": 3}), overwrite=True)
    assert (damaged / "notes.txt").read_text() == "mine"
    assert len(result["train"]) == 3 and len(list((damaged / "videos").iterdir())) == 5


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_frames", 1),
        ("frame_size", 33),
        ("hard_negative_fraction", 1.5),
        ("audio_bins", 7),
        ("hard_negative_attributes", ("hue",)),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SyntheticConfig\.{field}="):
        SyntheticConfig(**{field: value})


def test_cli_help_and_run(tmp_path):
    for command in (
        [sys.executable, "dataset_scripts/synthetic.py", "--help"],
        [sys.executable, "-m", "dataset_scripts.synthetic", "--help"],
    ):
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        for flag in (
            "--output_dir",
            "--seed",
            "--num_train",
            "--hard_negative_fraction",
            "--audio_noise",
            "--overwrite",
        ):
            assert flag in result.stdout
    assert (
        synthetic.main(
            [
                "--output_dir",
                str(tmp_path / "cli"),
                "--num_train",
                "2",
                "--num_val",
                "1",
                "--num_test",
                "1",
                "--num_frames",
                "4",
                "--frame_size",
                "16",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    config = json.loads((tmp_path / "cli" / "synthetic_manifest.json").read_text())["config"]
    assert (config["num_train"], config["num_frames"], config["frame_size"]) == (2, 4, 16)
    assert decode(tmp_path / "cli" / "videos" / "synthetic00000.mp4").shape == (4, 16, 16, 3)
    assert synthetic.main(["--output_dir", str(tmp_path / "bad"), "--pixel_noise", "2"]) == 2


def test_rendering_workers_need_no_importable_main(tmp_path):
    """A caller whose __main__ is not a file (python -c / stdin / notebooks) still gets 2 workers."""
    code = (
        "from modeling_mckd.data_prep.synthetic import generate_synthetic; "
        f"ds = generate_synthetic({str(tmp_path / 'c')!r}, num_train=8, num_val=2, num_test=2, num_frames=4, "
        "frame_size=16, workers=2); print(sorted((k, len(v)) for k, v in ds.items()))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[('test', 2), ('train', 8), ('validation', 2)]" in result.stdout
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".render-")]  # scratch removed


def test_failing_worker_raises_with_its_error(tmp_path):
    config = SyntheticConfig(num_frames=4, frame_size=16)
    scene = sample_scene(SceneRandom(0), config)
    scene["objects"][0]["shape"] = "blob"  # not a shape: the worker fails while drawing it
    clip = {"video_id": "broken", "scene": scene, "render_seed": 0, "frames_reversed_from": None}
    (tmp_path / "videos").mkdir()
    (tmp_path / "audio").mkdir()
    with pytest.raises(RuntimeError, match=r"(?s)worker 0 exited with 1: .*ValueError: unknown shape 'blob'"):
        synthetic._render_in_subprocesses([[clip]], config.to_dict(), tmp_path, workers=2)


# ----------------------------------------------------------------------------------------------
# content: what the captions say is what the frames show
# ----------------------------------------------------------------------------------------------


def _object_mask(frame: np.ndarray, background: np.ndarray, rgb) -> np.ndarray:
    """Pixels nearer the object's colour than the (known, noise-free) background, and off it."""
    pixels = frame.astype(np.float64) / 255.0
    to_object = np.linalg.norm(pixels - np.asarray(rgb), axis=-1)
    to_background = np.linalg.norm(pixels - background, axis=-1)
    return (to_object < 0.35) & (to_object < to_background) & (to_background > 0.12)


def _isolated(scene: dict, obj: dict) -> bool:
    """No other object of the scene has a colour the mask could confuse with ``obj``'s."""
    others = [o for o in scene["objects"] + scene["distractors"] if o is not obj]
    return all(np.linalg.norm(np.asarray(o["rgb"]) - np.asarray(obj["rgb"])) > 0.45 for o in others)


def test_frames_show_the_described_motion(hard, tiny):
    """Centroid / area of the object's colour in the decoded mp4 follows its recorded motion."""
    checked = {"translation": 0, "size": 0, "visibility": 0}
    for folder, config, annotations in (hard, (tiny[0], SyntheticConfig(seed=3, **TINY), tiny[2])):
        size = config.frame_size
        for video in annotations["videos"]:
            scene = video["scene"]
            frames = decode(folder / "videos" / f"{video['video_id']}.mp4")
            background = render_background(scene["background"], size)
            last = config.num_frames - 1
            for obj in scene["objects"]:
                if not _isolated(scene, obj) or obj["motion"].startswith("rotate"):
                    continue
                before = int(math.floor(obj["start"] * last))
                after = int(math.ceil(obj["end"] * last))
                mask_before = _object_mask(frames[before], background, obj["rgb"])
                mask_after = _object_mask(frames[after], background, obj["rgb"])
                motion = obj["motion"]
                if motion in ("left", "right", "up", "down"):
                    if mask_before.sum() < 4 or mask_after.sum() < 4:
                        continue
                    axis = 1 if motion in ("left", "right") else 0
                    shift = np.argwhere(mask_after)[:, axis].mean() - np.argwhere(mask_before)[:, axis].mean()
                    expected = (obj["to"]["x" if axis == 1 else "y"] - obj["from"]["x" if axis == 1 else "y"]) * size
                    assert np.sign(shift) == (-1 if motion in ("left", "up") else 1), (video["video_id"], motion, shift)
                    assert abs(shift - expected) < 0.1 * abs(expected) + 1.0, (video["video_id"], shift, expected)
                    checked["translation"] += 1
                elif motion in ("grow", "shrink"):
                    ratio = (mask_after.sum() + 1) / (mask_before.sum() + 1)
                    assert ratio > 2.5 if motion == "grow" else ratio < 0.4, (video["video_id"], motion, ratio)
                    checked["size"] += 1
                else:
                    area_before, area_after = mask_before.sum(), mask_after.sum()
                    hidden, shown = (area_before, area_after) if motion == "appear" else (area_after, area_before)
                    assert shown >= 6 and hidden <= 0.1 * shown + 1, (
                        video["video_id"],
                        motion,
                        area_before,
                        area_after,
                    )
                    checked["visibility"] += 1
    assert all(count >= 2 for count in checked.values()), checked


def test_first_caption_is_complete(tiny):
    _folder, _dataset, annotations = tiny
    videos = videos_by_id(annotations)
    by_video = {}
    for sentence in annotations["sentences"]:
        by_video.setdefault(sentence["video_id"], []).append(sentence)
    for video_id, sentences in by_video.items():
        assert len(sentences) == 5 and len({s["caption"] for s in sentences}) == 5
        assert sentences[0]["partial"] is False
        caption = sentences[0]["caption"]
        for obj in videos[video_id]["scene"]["objects"]:
            for vocabulary, key in (
                (COLOUR_WORDS, "colour"),
                (SHAPE_WORDS, "shape"),
                (SIZE_WORDS, "size"),
                (MOTION_WORDS, "motion"),
            ):
                assert any(re.search(rf"\b{re.escape(word)}\b", caption) for word in vocabulary[obj[key]]), (
                    caption,
                    key,
                    obj[key],
                )


def _first_event(caption: str) -> str:
    """Which clause happens first in a complete two-event caption, read as English: the text of it."""
    text = re.sub(r"^(a video where|in this clip,|the clip shows how|we see that|here,)\s+", "", caption)
    patterns = [
        (r"^first (.+), then (.+)$", 1),
        (r"^after (.+), (.+)$", 1),
        (r"^before (.+), (.+)$", 2),
        (r"^(.+) and then (.+)$", 1),
        (r"^(.+), and afterwards (.+)$", 1),
        (r"^(.+); after that, (.+)$", 1),
        (r"^(.+), then (.+)$", 1),
        (r"^(.+) before (.+)$", 1),
        (r"^(.+) after (.+)$", 2),
    ]
    for pattern, first in patterns:
        match = re.match(pattern, text)
        if match:
            return match.group(first)
    raise AssertionError(f"no ordered reading of {caption!r}")


def _has(word: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text) is not None


def test_complete_captions_state_the_temporal_order():
    config = SyntheticConfig(synonyms=1, background_mention=0.0)
    rng = SceneRandom(0)
    for _ in range(60):
        scene = sample_scene(rng, config, two_events=True)
        first, second = sorted(scene["objects"], key=lambda obj: obj["start"])
        caption = make_caption(scene, rng, config, partial=False)
        clause = _first_event(caption)
        assert _has(first["colour"], clause) and _has(MOTION_WORDS[first["motion"]][0], clause), caption
        assert not _has(second["colour"], clause), caption


def test_partial_captions_leave_something_out():
    config = SyntheticConfig(synonyms=1, background_mention=0.0)
    rng = SceneRandom(1)
    evaluated = omitted = 0
    for _ in range(300):
        scene = sample_scene(rng, config)
        caption = make_caption(scene, rng, config, partial=True)
        objects = scene["objects"]
        if len(objects) == 2 and any(objects[0][key] == objects[1][key] for key in ("shape", "size", "motion")):
            continue  # a word shared by both objects could hide the omission
        words = [
            word
            for obj in objects
            for word in (
                COLOUR_WORDS[obj["colour"]][0],
                SHAPE_WORDS[obj["shape"]][0],
                SIZE_WORDS[obj["size"]][0],
                MOTION_WORDS[obj["motion"]][0],
            )
        ]
        missing = [word for word in words if not _has(word, caption)]
        unordered = len(objects) == 2 and not any(
            word in caption for word in (" then ", " before ", " after", "first ")
        )
        assert missing or unordered, caption
        evaluated += 1
        omitted += bool(missing)
    assert evaluated > 100 and omitted > 0.9 * evaluated


def test_caption_plan_complete_and_partial():
    config = SyntheticConfig()
    rng = SceneRandom(2)
    full = {"size", "colour", "shape", "motion"}
    for _ in range(200):
        scene = sample_scene(rng, config)
        objects, mentioned, parts, ordered = caption_plan(scene, rng, partial=False)
        assert [o["start"] for o in objects] == sorted(o["start"] for o in scene["objects"])
        assert mentioned == list(range(len(objects))) and all(p == full for p in parts) and ordered
        objects, mentioned, parts, ordered = caption_plan(scene, rng, partial=True)
        said = [parts[i] for i in mentioned]
        assert all(p & {"colour", "shape"} for p in said)  # every mentioned object can be named
        left_out = len(mentioned) < len(objects) or any(p != full for p in said) or not ordered
        assert left_out


# ----------------------------------------------------------------------------------------------
# hard negatives
# ----------------------------------------------------------------------------------------------


def test_hard_negative_groups_differ_in_exactly_the_recorded_attribute(hard, tiny):
    for _folder, _config, annotations in (hard, (None, None, tiny[2])):
        videos = videos_by_id(annotations)
        seen_attributes = set()
        for video in annotations["videos"]:
            for other_id, attribute in video["hard_negatives"].items():
                other = videos[other_id]
                assert other["split"] == video["split"]
                assert other["hard_negative_group"] == video["hard_negative_group"] is not None
                assert other["hard_negatives"][video["video_id"]] == attribute
            if video["hard_negative_of"] is not None:
                base = videos[video["hard_negative_of"]]
                assert (
                    base["hard_negative_of"] is None
                    and base["hard_negatives"][video["video_id"]] == video["differs_in"]
                )
                assert scene_difference(base["scene"], video["scene"]) == [video["differs_in"]]
                seen_attributes.add(video["differs_in"])
        if annotations is hard[2]:
            assert all(video["hard_negative_group"] is not None for video in annotations["videos"])
            assert seen_attributes == set(synthetic.HARD_NEGATIVE_ATTRIBUTES)
    counts = {}
    for video in tiny[2]["videos"]:
        counts.setdefault(video["split"], []).append(video["hard_negative_group"] is not None)
    assert {split: sum(flags) for split, flags in counts.items()} == {"train": 6, "validate": 2, "test": 2}


def test_scene_difference_on_hand_edits():
    config = SyntheticConfig()
    scene = sample_scene(SceneRandom(7), config, two_events=True)
    assert scene_difference(scene, json.loads(json.dumps(scene))) == []
    moved = json.loads(json.dumps(scene))
    moved["objects"][0]["from"]["x"] += 0.01
    assert scene_difference(scene, moved) == ["other"]
    recoloured = json.loads(json.dumps(scene))
    recoloured["objects"][1]["colour"] = "green" if scene["objects"][1]["colour"] != "green" else "red"
    recoloured["objects"][1]["shape"] = "circle" if scene["objects"][1]["shape"] != "circle" else "star"
    assert scene_difference(scene, recoloured) == ["colour", "other", "shape"]  # rgb left unchanged: "other"
    assert scene_difference(scene, time_reversed(scene)) == ["time_reversal"]


def test_time_reversed_twin_is_the_clip_backwards(hard):
    folder, config, annotations = hard
    videos = videos_by_id(annotations)
    twins = [video for video in annotations["videos"] if video["differs_in"] == "time_reversal"]
    assert twins
    for twin in twins:
        base = videos[twin["hard_negative_of"]]
        assert twin["frames_reversed_from"] == base["video_id"]
        # The twin's own scene description renders to the base's frames reversed...
        forward = render_clip(base["scene"], config.num_frames, config.frame_size).astype(int)
        backward = render_clip(twin["scene"], config.num_frames, config.frame_size).astype(int)
        assert np.abs(backward - forward[::-1]).max() <= 1
        # ...the frames written are the base's noisy frames backwards, pixel for pixel...
        clips = [
            {
                "video_id": v["video_id"],
                "scene": v["scene"],
                "render_seed": v["render_seed"],
                "frames_reversed_from": v["frames_reversed_from"],
            }
            for v in (base, twin)
        ]
        written = render_group_frames(clips, config)
        np.testing.assert_array_equal(written[twin["video_id"]], written[base["video_id"]][::-1])
        # ...and the mp4s hold them, up to H.264 coding (much closer backwards than forwards).
        decoded_twin = decode(folder / "videos" / f"{twin['video_id']}.mp4").astype(float)
        decoded_base = decode(folder / "videos" / f"{base['video_id']}.mp4").astype(float)
        backwards = np.abs(decoded_twin - decoded_base[::-1]).mean(axis=(1, 2, 3))
        forwards = np.abs(decoded_twin - decoded_base).mean(axis=(1, 2, 3))
        # How much closer depends on how much the scene moves (a near-static clip is close both ways).
        assert backwards.max() < 6 and backwards.mean() < 0.75 * forwards.mean(), (backwards, forwards)


def test_variants_render_differently(hard):
    _folder, config, annotations = hard
    videos = videos_by_id(annotations)
    for video in annotations["videos"]:
        if video["hard_negative_of"] is None:
            continue
        base = videos[video["hard_negative_of"]]
        a = render_clip(base["scene"], config.num_frames, config.frame_size).astype(int)
        b = render_clip(video["scene"], config.num_frames, config.frame_size).astype(int)
        assert np.abs(a - b).max() > 60, (video["video_id"], video["differs_in"])


# ----------------------------------------------------------------------------------------------
# shapes and audio against hand-computed references
# ----------------------------------------------------------------------------------------------


def _inside_polygon(px, py, vertices):
    """Crossing-number point-in-polygon test (brute-force reference)."""
    inside = np.zeros(px.shape, dtype=bool)
    count = len(vertices)
    for i in range(count):
        (x1, y1), (x2, y2) = vertices[i], vertices[(i + 1) % count]
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = x1 + (x2 - x1) * (py - y1) / (y2 - y1)
        inside ^= crosses & (px < x_cross)
    return inside


@pytest.mark.parametrize("shape", sorted(SHAPE_POLYGONS))
def test_shape_inside_matches_point_in_polygon(shape):
    points = np.random.default_rng(0).uniform(-1.4, 1.4, size=(2, 4000))
    angle = 23.0
    # A point is inside the shape turned by +angle iff turning it back by -angle lands inside.
    theta = math.radians(-angle)
    back_x = points[0] * math.cos(theta) - points[1] * math.sin(theta)
    back_y = points[0] * math.sin(theta) + points[1] * math.cos(theta)
    distance = shape_distance(shape, points[0][None], points[1][None], angle)[0]
    np.testing.assert_array_equal(distance < 0, _inside_polygon(back_x, back_y, SHAPE_POLYGONS[shape]))


def _scene(objects, distractors=()):
    background = {
        "pattern": "plain",
        "base": [0.3, 0.3, 0.3],
        "accent": [0.3, 0.3, 0.3],
        "period": 0.2,
        "phase": 0.0,
        "angle": 0.0,
        "texture": 0.0,
        "texture_seed": 0,
    }
    return {"background": background, "objects": list(objects), "distractors": list(distractors)}


def _object(colour="red", shape="circle", size="large", motion="grow", x=0.5, y=0.5, start=0.0, end=1.0, **to):
    state = {"x": x, "y": y, "scale": 1.0, "angle": 0.0, "alpha": 1.0}
    return {
        "shape": shape,
        "colour": colour,
        "size": size,
        "rgb": [0.9, 0.1, 0.1],
        "motion": motion,
        "start": start,
        "end": end,
        "from": dict(state),
        "to": {**state, **to},
        "audible": True,
        "material": "wood",
        "mass": 0.5,
    }


QUIET = SyntheticConfig(audio_noise=0.0, num_frames=16, fps=8)


def _energy_at(signal: np.ndarray, frequency: float, sample_rate: int, centre: float, width: float = 0.05) -> float:
    """Energy of ``signal`` at ``frequency`` within ``width`` seconds around ``centre`` seconds."""
    begin, end = int((centre - width / 2) * sample_rate), int((centre + width / 2) * sample_rate)
    t = np.arange(begin, end) / sample_rate
    chunk = signal[begin:end]
    return float(np.dot(chunk, np.sin(2 * np.pi * frequency * t)) ** 2 + np.dot(chunk, np.cos(2 * np.pi * frequency * t)) ** 2)


def test_knocks_are_locked_to_the_start_and_end_of_a_motion():
    sr = QUIET.audio_sample_rate
    mover = _object(motion="right", x=0.3, start=0.25, end=0.75)
    mover["to"]["x"] = 0.7
    waveform = synthesize_waveform(_scene([mover]), QUIET, seed=0).sum(axis=0)
    pitch = MATERIALS["wood"]["base"] * 2.0 ** -0.5  # the knock's fundamental at mass 0.5
    onset, offset = (0.25 * 15 + 0.5) / 8, (0.75 * 15 + 0.5) / 8  # seconds: frame time + half a frame
    at_onset = _energy_at(waveform, pitch, sr, onset + 0.02)
    at_offset = _energy_at(waveform, pitch, sr, offset + 0.02)
    for quiet in (0.2, 1.0, 1.9):  # before, in the middle of, and after the motion
        assert min(at_onset, at_offset) > 20 * _energy_at(waveform, pitch, sr, quiet), quiet
    # A silent object leaves only the ambience: nothing at the knock's pitch.
    silent = {**mover, "audible": False}
    hushed = synthesize_waveform(_scene([silent]), QUIET, seed=0).sum(axis=0)
    assert _energy_at(hushed, pitch, sr, onset + 0.02) < at_onset / 100


def test_touching_outlines_knock_both_objects_at_the_frame_they_meet():
    from modeling_mckd.data_prep.synthetic.audio import event_times

    mover = _object(motion="right", x=0.2, start=0.0, end=1.0)
    mover["to"]["x"] = 0.8
    still = {**_object(colour="blue", x=0.7), "motion": "drift", "material": "metal"}
    events = event_times(_scene([mover], [still]), num_frames=16)
    # Outlines touch when the centres are closer than 0.85 * (0.145 + 0.145) = 0.2465: x = 0.2 + 0.6 t
    # reaches 0.7 - 0.2465 at t = 0.4225, first seen at frame 7 (t = 7/15); frame 6 (t = 0.4) is apart.
    assert [(round(t, 4), obj["material"]) for t, obj, _ in events] == [
        (0.0, "wood"),
        (round(7 / 15, 4), "wood"),
        (round(7 / 15, 4), "metal"),
        (1.0, "wood"),
    ]


def test_colour_and_shape_never_reach_the_sound_hidden_material_does():
    base = _object(colour="red", shape="circle", motion="grow", start=0.2, end=0.8)
    base["from"]["scale"] = 0.4
    reference = synthesize_waveform(_scene([base]), QUIET, seed=3)
    recoloured = {**base, "colour": "blue", "shape": "star", "rgb": [0.1, 0.1, 0.9]}
    np.testing.assert_array_equal(synthesize_waveform(_scene([recoloured]), QUIET, seed=3), reference)
    for material in ("metal", "glass", "rubber"):
        changed = synthesize_waveform(_scene([{**base, "material": material}]), QUIET, seed=3)
        assert np.abs(changed - reference).max() > 0.05, material
    heavier = synthesize_waveform(_scene([{**base, "mass": 1.2}]), QUIET, seed=3)
    assert np.abs(heavier - reference).max() > 0.05


def test_missing_track_and_swapped_channels():
    one = _scene([_object(motion="grow", start=0.2, end=0.8, scale=1.0)])
    other = _scene([{**_object(colour="blue", motion="left", x=0.7, start=0.0, end=0.5), "material": "glass"}])
    for scene in (one, other):
        scene["microphone"] = {"present": False, "swapped": False, "gain_db": 3.0}
    # A missing track is the noise floor alone: it says nothing about the scene.
    np.testing.assert_array_equal(synthesize_waveform(one, QUIET, seed=5), synthesize_waveform(other, QUIET, seed=5))
    assert np.abs(synthesize_waveform(one, QUIET, seed=5)).max() < 0.02
    one["microphone"] = {"present": True, "swapped": False, "gain_db": 0.0}
    plain = synthesize_waveform(one, QUIET, seed=5)
    one["microphone"] = {"present": True, "swapped": True, "gain_db": 0.0}
    np.testing.assert_array_equal(synthesize_waveform(one, QUIET, seed=5), plain[::-1])


def test_material_is_a_noisy_many_to_one_function_of_colour():
    def materials_by_colour(link: float) -> dict[str, set[str]]:
        # No hard negatives: a "colour" variant keeps its base's hidden material, like everything else.
        config = SyntheticConfig(num_train=300, num_val=0, num_test=0, hard_negative_fraction=0.0, material_colour_link=link)
        annotations, _tasks = build_annotations(config)
        out: dict[str, set[str]] = {}
        for video in annotations["videos"]:
            for obj in video["scene"]["objects"] + video["scene"]["distractors"]:
                out.setdefault(obj["colour"], set()).add(obj["material"])
        return out

    assert all(found == set(COLOUR_MATERIALS[colour]) for colour, found in materials_by_colour(1.0).items())
    # At the default link every colour meets every material: a colour word never fixes the sound.
    assert all(found == set(MATERIALS) for found in materials_by_colour(0.6).values())


def test_every_generated_clip_has_its_audio_file_and_hidden_properties(tiny):
    folder, _dataset, annotations = tiny
    for video in annotations["videos"]:
        scene = video["scene"]
        assert set(scene["microphone"]) == {"present", "swapped", "gain_db"}
        assert all(obj["material"] in MATERIALS for obj in scene["objects"] + scene["distractors"])
        features = np.load(folder / "audio" / f"{video['video_id']}.npy", allow_pickle=False)
        assert features.shape == (16, 32) and features.dtype == np.float32 and np.isfinite(features).all()
