"""A frames-only student distilled from a teacher that fuses audio: the teacher is fed its audio on both paths
(cached uniform inputs, and on the fly), the student none."""

from __future__ import annotations

import numpy as np
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
