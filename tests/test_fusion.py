"""A teacher that fuses its audio into the video embedding (config.fuse_modalities)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modeling_mckd import MCKDConfig, MCKDModel


def fused_config(**overrides) -> MCKDConfig:
    values = dict(
        video_input="features", video_feature_dim=6, num_frames=4, projection_dim=8, vocab_size=30,
        text_hidden_size=8, extra_modalities={"audio": {"feature_dim": 5}}, fuse_modalities=["audio"],
    )
    values.update(overrides)
    return MCKDConfig(**values)


def inputs(batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {
        "video_features": torch.randn(batch, 4, 6, generator=generator),
        "audio_features": torch.randn(batch, 7, 5, generator=generator),
        "input_ids": torch.randint(4, 30, (batch, 5), generator=generator),
    }


def test_fused_video_embedding_is_the_normalised_sum_of_visual_and_audio():
    torch.manual_seed(0)
    model = MCKDModel(fused_config()).eval()
    batch = inputs()
    visual = F.normalize(model.video_tower(None, batch["video_features"], torch.ones(3, 4, dtype=torch.bool)), dim=-1)
    audio = model.get_audio_features(batch["audio_features"])
    expected = F.normalize(visual + audio, dim=-1)
    got = model.get_video_features(video_features=batch["video_features"], audio_features=batch["audio_features"])
    torch.testing.assert_close(got, expected)
    outputs = model(**batch)
    torch.testing.assert_close(outputs.video_embeds, expected)
    torch.testing.assert_close(outputs.audio_embeds, audio)
    # Changing only the audio changes the retrieval embedding.
    other = model.get_video_features(video_features=batch["video_features"], audio_features=batch["audio_features"] + 1)
    assert not torch.allclose(other, got)


def test_fused_model_requires_the_fused_input():
    model = MCKDModel(fused_config())
    with pytest.raises(ValueError, match="audio_features"):
        model.get_video_features(video_features=inputs()["video_features"])


def test_fusing_an_unconfigured_modality_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="fuse_modalities"):
        fused_config(extra_modalities={})


def test_fusion_round_trips_through_save_pretrained(tmp_path):
    torch.manual_seed(0)
    model = MCKDModel(fused_config()).eval()
    model.save_pretrained(tmp_path)
    reloaded = MCKDModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.fuse_modalities == ["audio"]
    batch = inputs()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).video_embeds, model(**batch).video_embeds)
