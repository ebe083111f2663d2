"""Is a dataset's co-occurring modality a shortcut, and is it informative? Linear probes, no model.

    python benchmarks/probe_modality.py /tmp/syn_default            # a generated synthetic folder
    python benchmarks/probe_modality.py DIR --modality audio --no_frames

DIR is a folder holding ``dataset/`` (a DatasetDict saved with ``save_to_disk``), or that folder
itself. Prints, as JSON lines:

- ``bag_of_words``: text-to-video retrieval from a caption's words through the modality alone
  (:func:`modeling_mckd.probes.bag_of_words_probe`). High means the modality spells out the caption.
- ``audio_to_frames``: each test clip's audio predicts its frame statistics (mean colour and
  change per cell of a 4x4 grid, per frame), ranking the test clips (:func:`cross_modal_probe`).
  Above chance means the audio is about what the frames show. Skipped with ``--no_frames``.
- ``hidden_material``: for a synthetic folder (``MSRVTT_data.json`` with scenes), accuracy of the
  first main object's material (never named by a caption) from the audio, against the majority class.

Ridge strengths are chosen on the validation split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from modeling_mckd import probes  # noqa: E402

SPLITS = ("train", "validation", "test")


def _load(folder: Path):
    from datasets import load_from_disk

    for candidate in (folder / "dataset", folder):
        if (candidate / "dataset_dict.json").is_file():
            return load_from_disk(str(candidate))
    raise SystemExit(f"error: {folder}: no dataset_dict.json in it or in its dataset/ subfolder")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="generated benchmark folder (or a saved DatasetDict)")
    parser.add_argument("--modality", default="audio", choices=("audio", "frames"))
    parser.add_argument("--no_frames", action="store_true", help="skip the audio -> frames probe (decodes every mp4)")
    args = parser.parse_args(argv)
    dataset = _load(args.folder)
    for name in SPLITS:
        if name not in dataset:
            raise SystemExit(f"error: {args.folder}: the DatasetDict has no {name!r} split")

    started = time.perf_counter()
    source = {name: probes.load_modality(dataset[name], args.modality) for name in SPLITS}
    keep = ("t2v_R@1", "t2v_R@5", "t2v_R@10", "v2t_R@1", "rsum", "ridge", "chance_t2v_R@1")
    metrics = probes.bag_of_words_probe(dataset, modality=args.modality, features=source)
    print(json.dumps({"probe": "bag_of_words", "modality": args.modality, **{k: round(metrics[k], 2) for k in keep}}))

    if args.modality == "audio" and not args.no_frames:
        target = {name: probes.load_modality(dataset[name], "frames") for name in SPLITS}
        metrics = probes.cross_modal_probe(
            (source["train"], target["train"]), (source["validation"], target["validation"]),
            (source["test"], target["test"]),
        )
        print(json.dumps({"probe": "audio_to_frames", **{k: round(v, 2) for k, v in metrics.items()}}))

    annotation = args.folder / "MSRVTT_data.json"
    if args.modality == "audio" and annotation.is_file():
        scenes = {video["video_id"]: video.get("scene") for video in json.loads(annotation.read_text())["videos"]}

        def material(video_id: str) -> str:
            scene = scenes.get(video_id) or {}
            objects = sorted(scene.get("objects", []), key=lambda obj: obj["start"])
            return objects[0].get("material", "unknown") if objects else "unknown"

        pairs = [(source[name], [material(v) for v in dataset[name]["video_id"]]) for name in SPLITS]
        if len({label for label in pairs[0][1]}) > 1:
            metrics = probes.classification_probe(*pairs)
            print(json.dumps({"probe": "hidden_material", **{k: round(v, 2) for k, v in metrics.items()}}))
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
