"""The built-in synthetic text-video retrieval benchmark (the project's embedded default).

Clips are generated procedurally from a seed, written as real H.264 mp4 files (PyAV, libx264,
yuv420p) with an MSR-VTT-layout annotation file, and turned into a ``DatasetDict`` by the MSR-VTT
preparation code (:func:`modeling_mckd.data_prep.msrvtt.build_msrvtt`, official protocol), so the
synthetic default goes through exactly the code path of a real benchmark.

Each clip shows one or two *main* objects (shape, colour, size) that each perform one motion; two
motions happen one after the other ("a red circle moves left, then a blue square grows"). Textured
backgrounds, unmentioned distractor objects and pixel noise clutter the frame. Captions come from a
grammar with synonyms and paraphrases, and some describe the clip only partially. A fraction of the
clips come in *hard-negative groups* whose members differ in exactly one attribute. A co-occurring
"audio" modality (a stereo soundtrack synthesised from the scene, stored as log band energies in
``.npy``) is tied to what happens on screen but is not a code of the captions. See
``docs/synthetic.md``.

Modules, by role: :mod:`.config` (``SyntheticConfig`` and the vocabulary), :mod:`.scenes` (scenes,
hard negatives, captions), :mod:`.annotations` (the plan of a benchmark and its annotation file),
:mod:`.render` (frames), :mod:`.audio` (soundtrack and features), :mod:`.writer` (mp4 files,
worker processes, manifest, :func:`generate_synthetic`) and :mod:`.cli`.

Example::

    python dataset_scripts/synthetic.py --output_dir data/synthetic --seed 0
    python -m dataset_scripts.synthetic --output_dir /tmp/syn --num_train 12 --num_val 4 --num_test 4
"""

from .annotations import build_annotations, hard_negative_subset, load_annotations
from .audio import audio_features, synthesize_waveform
from .cli import build_parser, main
from .config import (
    ANNOTATION_NAME,
    BACKGROUND_WORDS,
    BACKGROUNDS,
    COLOUR_MATERIALS,
    COLOUR_WORDS,
    COLOURS,
    GENERATOR_VERSION,
    HARD_NEGATIVE_ATTRIBUTES,
    MANIFEST_NAME,
    MATERIALS,
    MOTION_WORDS,
    MOTIONS,
    OPPOSITE_MOTION,
    SHAPE_SYMMETRY,
    SHAPE_WORDS,
    SHAPES,
    SIZE_RADIUS,
    SIZE_WORDS,
    SyntheticConfig,
    SyntheticOutputExistsError,
)
from .render import (
    SHAPE_POLYGONS,
    object_state,
    render_background,
    render_clip,
    render_group_frames,
    shape_distance,
)
from .scenes import (
    SceneRandom,
    applicable_attributes,
    caption_plan,
    make_caption,
    make_captions,
    make_variant,
    sample_scene,
    scene_difference,
    time_reversed,
)
from .writer import _render_in_subprocesses, _worker_main, generate_synthetic, is_complete, write_mp4
