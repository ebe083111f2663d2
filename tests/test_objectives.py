"""A frames-only student distilled from a teacher that fuses audio: the teacher is fed its audio on both paths
(cached uniform inputs, and on the fly), the student none."""

from __future__ import annotations

import math
import types
import warnings

import numpy as np
import pytest
import torch

from modeling_mckd import MCKDConfig, MCKDModel, MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
from modeling_mckd.data import ClipStore, InputSpec, RetrievalTrainSet, TrainCollator, model_inputs, process_clip
from modeling_mckd.encoding import uses_audio
from modeling_mckd.objectives import StudentObjective, TeacherSignal


def _setup(tmp_path):
    from modeling_mckd.data_prep.synthetic import generate_synthetic

    videos = generate_synthetic(tmp_path / "syn", seed=0, num_train=6, num_val=0, num_test=2, num_frames=8,
                                frame_size=32)["train"]
    tokenizer = build_word_tokenizer([c for caps in videos["captions"] for c in caps])
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=32, crop_size=32), tokenizer=tokenizer)
    audio_dim = int(np.load(videos["audio"][0]).shape[-1])
    torch.manual_seed(0)
    tiny = dict(num_frames=4, vision_hidden_size=8, vision_num_layers=2, projection_dim=8, text_hidden_size=8,
                vocab_size=len(tokenizer), temporal_aggregator="mean")
    teacher = MCKDModel(MCKDConfig(**tiny, extra_modalities={"audio": {"feature_dim": audio_dim}},
                                   fuse_modalities=["audio"])).eval()
    student = MCKDModel(MCKDConfig(**tiny))
    return videos, processor, teacher, student


def test_cached_teacher_signal_is_the_teachers_own_encoding_with_audio(tmp_path):
    from modeling_mckd.arguments import DistillArguments

    videos, processor, teacher, student = _setup(tmp_path)
    store = ClipStore(videos, input_mode="pixels", cache=True)
    signal = TeacherSignal.cached(teacher, processor, videos, store, batch_size=4, device="cpu")
    with torch.no_grad():
        by_hand = teacher.get_video_features(**model_inputs(
            processor, [process_clip(processor, store.clip(i), store.audio(i), training=False, rng=None)
                        for i in range(len(videos))], None, 0))
        visual_only = teacher.get_video_feature_parts(**model_inputs(
            processor, [process_clip(processor, store.clip(i), store.audio(i), training=False, rng=None)
                        for i in range(len(videos))], None, 0))["visual"]
    torch.testing.assert_close(signal.video_cache, by_hand, rtol=0, atol=1e-6)
    assert not torch.allclose(signal.video_cache, visual_only)  # the audio did reach the teacher
    captions = [c for caps in videos["captions"] for c in caps]
    assert signal.text_cache.shape == (len(captions), 8)

    # the frames-only student is fed no audio, and distils from that cache
    assert not uses_audio(student)
    inputs = {"student": InputSpec(processor, student.config.max_text_length, with_audio=uses_audio(student))}
    train_set = RetrievalTrainSet(videos, store, inputs, captions_per_video=1, seed=0)
    batch = TrainCollator(inputs)([train_set[i] for i in range(4)])
    assert "audio_features" not in batch["student"]
    objective = StudentObjective(DistillArguments(kd_weight=1.0, disc_weight=1.0), teacher=signal)
    loss, logs = objective(student, batch)
    loss.backward()
    assert torch.isfinite(loss) and logs["loss/distillation"] > 0
    assert "logit_scale" in objective.unused_parameters(student)


def test_on_the_fly_teacher_gets_its_audio_and_the_student_none(tmp_path):
    videos, processor, teacher, student = _setup(tmp_path)
    store = ClipStore(videos, input_mode="pixels", cache=True)
    signal = TeacherSignal.on_the_fly(teacher, processor, device="cpu")
    assert signal.inputs.with_audio
    inputs = {"student": InputSpec(processor, student.config.max_text_length, with_audio=False), "teacher": signal.inputs}
    batch = TrainCollator(inputs)([RetrievalTrainSet(videos, store, inputs, seed=0)[i] for i in range(3)])
    assert "audio_features" in batch["teacher"] and "audio_features" not in batch["student"]
    expected = torch.stack([torch.from_numpy(store.audio(i)) for i in range(3)])
    torch.testing.assert_close(batch["teacher"]["audio_features"][:, : expected.shape[1]], expected)
    text, video, parts = signal.embeddings(batch)
    with torch.no_grad():
        fused = teacher(**batch["teacher"]).video_embeds
    torch.testing.assert_close(video, fused)
    assert parts == {}


# --------------------------------------------------------------------------------------------
# StudentObjective against values computed by hand (issue 13, item 8)
# --------------------------------------------------------------------------------------------


class _FixedEmbeddings(torch.nn.Module):
    """A student stand-in: returns literal (unit) caption and video embeddings, whatever its inputs."""

    def __init__(self, text, video):
        super().__init__()
        self.text = torch.tensor(text, dtype=torch.float32, requires_grad=True)
        self.video = torch.tensor(video, dtype=torch.float32, requires_grad=True)

    def forward(self, **inputs):
        assert inputs.pop("return_dict") is True
        return types.SimpleNamespace(text_embeds=self.text, video_embeds=self.video)


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _log_softmax(logits):
    top = max(logits)
    log_total = top + math.log(sum(math.exp(z - top) for z in logits))
    return [z - log_total for z in logits]


def _kl(teacher_logits, student_logits):
    """KL(softmax(teacher) || softmax(student)) over one row."""
    log_p, log_q = _log_softmax(teacher_logits), _log_softmax(student_logits)
    return sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _ranking_by_hand(text, video, ids, margin, negatives):
    """docs/method.md: c_ij = [margin + s_ij - s_ii]_+ for text query i over its row, [margin + s_ij - s_jj]_+
    for video query j over its column; hardest = max over the negatives, all = their sum; sum of both
    directions divided by B."""
    rows = range(len(text))
    s = [[_dot(text[i], video[j]) for j in rows] for i in rows]
    pick = max if negatives == "hardest" else sum
    text_queries = [pick(max(0.0, margin + s[i][j] - s[i][i]) for j in rows if ids[j] != ids[i]) for i in rows]
    video_queries = [pick(max(0.0, margin + s[i][j] - s[j][j]) for i in rows if ids[i] != ids[j]) for j in rows]
    return (sum(text_queries) + sum(video_queries)) / len(text)


def _relation_by_hand(teacher, student, ids, temperature):
    """Row-wise KL over the entries of other videos (same-id entries, the diagonal included, removed)."""
    rows = range(len(student))
    terms = []
    for i in rows:
        others = [j for j in rows if ids[j] != ids[i]]
        if others:
            terms.append(_kl([_dot(teacher[i], teacher[j]) / temperature for j in others],
                             [_dot(student[i], student[j]) / temperature for j in others]))
    return _mean(terms)


def _distillation_by_hand(text, video, teacher_text, teacher_video, ids, temperature):
    """kl + relation: 1/2 (rows KL + columns KL) of the text-video cosines / tau, plus
    1/2 (text-text relation + video-video relation), both without same-video entries."""
    rows = range(len(text))
    student = [[_dot(text[i], video[j]) / temperature for j in rows] for i in rows]
    teacher = [[_dot(teacher_text[i], teacher_video[j]) / temperature for j in rows] for i in rows]
    by_rows = _mean(_kl(teacher[i], student[i]) for i in rows)
    by_columns = _mean(_kl([teacher[i][j] for i in rows], [student[i][j] for i in rows]) for j in rows)
    kl = (by_rows + by_columns) / 2
    relation = (_relation_by_hand(teacher_text, text, ids, temperature)
                + _relation_by_hand(teacher_video, video, ids, temperature)) / 2
    return kl + relation


def _discrimination_by_hand(text, video, ids, temperature, text_weight, text_margin=0.5):
    """L_inst + text_weight * (L_supcon + L_margin), docs/method.md."""
    rows = range(len(text))
    s = [[_dot(text[i], video[j]) / temperature for j in rows] for i in rows]
    c = [[_dot(text[i], text[j]) for j in rows] for i in rows]

    def multi_positive(logits, i):
        log_probs = _log_softmax(logits)
        positives = [k for k in rows if ids[k] == ids[i]]
        return -sum(log_probs[p] for p in positives) / len(positives)

    instance = (_mean(multi_positive(s[i], i) for i in rows)
                + _mean(multi_positive([s[k][j] for k in rows], j) for j in rows)) / 2
    supcon_rows = []
    for i in rows:
        partners = [p for p in rows if p != i and ids[p] == ids[i]]
        if partners:
            log_total = math.log(sum(math.exp(c[i][k] / temperature) for k in rows if k != i))
            supcon_rows.append(-sum(c[i][p] / temperature - log_total for p in partners) / len(partners))
    supcon = _mean(supcon_rows) if supcon_rows else 0.0
    margin = _mean(max(0.0, max(c[i][j] for j in rows if ids[j] != ids[i]) - text_margin) for i in rows)
    return instance + text_weight * (supcon + margin)


# Three videos; the first has two captions in the batch (rows 0 and 1). Unit vectors with exact decimals.
_STUDENT_TEXT = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.48, 0.64, 0.6]]
_STUDENT_VIDEO = [[0.8, 0.0, 0.6], [0.36, 0.48, 0.8], [0.6, 0.48, 0.64]]  # one per video of the batch
_TEACHER_TEXT_CACHE = [  # every train caption; the batch reads rows 4, 5, 0, 2
    [0.64, 0.48, 0.6], [0.0, 0.0, 1.0], [0.0, 0.8, 0.6], [0.6, 0.0, 0.8], [0.8, 0.6, 0.0], [0.28, 0.96, 0.0],
]
_TEACHER_VIDEO_CACHE = [  # every train video; the batch reads rows 2, 0, 3
    [0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.8, 0.36, 0.48], [0.0, 0.28, 0.96],
]
_VIDEO_INDEX = [2, 0, 3]
_CAPTION_INDEX = [4, 5, 0, 2]
_POSITION = [0, 0, 1, 2]


def _multi_caption_batch():
    return {
        "student": {},
        "video_index": torch.tensor(_VIDEO_INDEX),
        "caption_index": torch.tensor(_CAPTION_INDEX),
        "text_video_position": torch.tensor(_POSITION),
    }


def test_student_objective_matches_the_formulas_on_a_multi_caption_batch():
    from modeling_mckd.arguments import DistillArguments

    args = DistillArguments(kd_weight=1.5, disc_weight=0.7, ranking_margin=0.3, ranking_negatives="hardest",
                            kd_mode="kl+relation", kd_temperature=0.07, disc_temperature=0.2, disc_text_weight=0.6)
    teacher = TeacherSignal(text_cache=torch.tensor(_TEACHER_TEXT_CACHE), video_cache=torch.tensor(_TEACHER_VIDEO_CACHE))
    objective = StudentObjective(args, teacher=teacher)
    model = _FixedEmbeddings(_STUDENT_TEXT, _STUDENT_VIDEO)
    loss, logs = objective(model, _multi_caption_batch())

    # the batch's rows, written out: row r is caption r and the video at position _POSITION[r]
    ids = [_VIDEO_INDEX[p] for p in _POSITION]
    video = [_STUDENT_VIDEO[p] for p in _POSITION]
    teacher_text = [_TEACHER_TEXT_CACHE[c] for c in _CAPTION_INDEX]
    teacher_video = [_TEACHER_VIDEO_CACHE[_VIDEO_INDEX[p]] for p in _POSITION]
    ranking = _ranking_by_hand(_STUDENT_TEXT, video, ids, margin=0.3, negatives="hardest")
    distillation = _distillation_by_hand(_STUDENT_TEXT, video, teacher_text, teacher_video, ids, temperature=0.07)
    discrimination = _discrimination_by_hand(_STUDENT_TEXT, video, ids, temperature=0.2, text_weight=0.6)

    assert logs["loss/ranking"] == pytest.approx(ranking, rel=1e-5, abs=1e-6)
    assert logs["loss/distillation"] == pytest.approx(distillation, rel=1e-5, abs=1e-6)
    assert logs["loss/discrimination"] == pytest.approx(discrimination, rel=1e-5, abs=1e-6)
    expected = ranking + 1.5 * distillation + 0.7 * discrimination
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # the example exercises every term: none of them is 0
    assert min(ranking, distillation, discrimination) > 0.05
    loss.backward()
    assert torch.isfinite(model.text.grad).all() and torch.isfinite(model.video.grad).all()


def _two_d_ranking(objective):
    # Hand values, margin 0.3, unique ids. s = t_i . v_j =
    #   [[0.8,  0.0, 0.6],
    #    [0.6,  1.0, 0.8],
    #    [0.96, 0.8, 1.0]]
    # hinges of text queries (rows) over their negatives: [0, 0.1], [0, 0.1], [0.26, 0.1];
    # of video queries (columns): [0.1, 0.46], [0, 0.1], [0, 0.1].
    model = _FixedEmbeddings([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], [[0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    batch = {"student": {}, "video_index": torch.tensor([7, 3, 5]), "caption_index": torch.tensor([0, 1, 2]),
             "text_video_position": torch.tensor([0, 1, 2])}
    loss, logs = objective(model, batch)
    assert loss.item() == pytest.approx(logs["loss/ranking"])
    return logs["loss/ranking"]


_ALL = (0.1 + 0.1 + 0.36 + 0.56 + 0.1 + 0.1) / 3  # sum of each query's hinges
_HARDEST = (0.1 + 0.1 + 0.26 + 0.46 + 0.1 + 0.1) / 3  # each query's largest hinge
_SEMI_HARD = (0.1 + 0.1 + 0.26 + 0.1 + 0.1 + 0.1) / 3  # the most similar negative below the positive


@pytest.mark.parametrize("configured, after", [("hardest", _HARDEST), ("semi_hard", _SEMI_HARD)])
def test_ranking_warmup_uses_all_negatives_then_the_configured_mode(configured, after):
    from modeling_mckd.arguments import DistillArguments

    objective = StudentObjective(DistillArguments(kd_weight=0.0, disc_weight=0.0, ranking_margin=0.3,
                                                  ranking_negatives=configured, ranking_warmup_epochs=2))
    assert _two_d_ranking(objective) == pytest.approx(_ALL, abs=1e-6)  # before any use_epoch: epoch 0
    for epoch, expected in [(0, _ALL), (1, _ALL), (2, after), (3, after), (1, _ALL)]:
        objective.use_epoch(epoch)
        assert _two_d_ranking(objective) == pytest.approx(expected, abs=1e-6), epoch
    # without warm-up the configured mode applies from the start
    objective = StudentObjective(DistillArguments(kd_weight=0.0, disc_weight=0.0, ranking_margin=0.3,
                                                  ranking_negatives=configured))
    objective.use_epoch(0)
    assert _two_d_ranking(objective) == pytest.approx(after, abs=1e-6)


def test_deprecated_ranking_max_violation_maps_to_the_negatives_with_a_warning():
    from modeling_mckd.arguments import DistillArguments

    for legacy, expected in [(False, _ALL), (True, _HARDEST)]:
        with pytest.warns(DeprecationWarning, match="ranking_max_violation"):
            objective = StudentObjective(DistillArguments(kd_weight=0.0, disc_weight=0.0, ranking_margin=0.3,
                                                          ranking_max_violation=legacy))
        assert _two_d_ranking(objective) == pytest.approx(expected, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new option alone does not warn
        StudentObjective(DistillArguments(kd_weight=0.0, disc_weight=0.0, ranking_negatives="all"))
    with pytest.raises(ValueError, match="ranking_negatives"):  # a contradiction is refused
        StudentObjective(DistillArguments(kd_weight=0.0, disc_weight=0.0, ranking_max_violation=False,
                                          ranking_negatives="semi_hard"))
