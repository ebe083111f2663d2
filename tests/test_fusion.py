"""A teacher that fuses its audio into the video embedding (config.fuse_modalities)."""

from __future__ import annotations

import json

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


def test_evaluation_reports_what_each_part_of_a_fused_embedding_retrieves(tmp_path):
    """evaluate_split(with_parts=True): visual-only and audio-only retrieval, each equal to a by-hand evaluation of
    that part, next to the fused metrics (which the parts must not change)."""
    from modeling_mckd.data_prep.synthetic import generate_synthetic
    from modeling_mckd import MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
    from modeling_mckd.data import ClipStore, RetrievalVideoSet, VideoCollator
    from modeling_mckd.retrieval import evaluate_retrieval
    from modeling_mckd.encoding import encode_texts, evaluate_split

    videos = generate_synthetic(tmp_path / "syn", seed=0, num_train=2, num_val=0, num_test=6, num_frames=8,
                                frame_size=32)["test"]
    tokenizer = build_word_tokenizer([c for caps in videos["captions"] for c in caps])
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=32, crop_size=32),
                              tokenizer=tokenizer)
    torch.manual_seed(0)
    model = MCKDModel(MCKDConfig(num_frames=4, vision_hidden_size=8, vision_num_layers=2, projection_dim=8,
                                 text_hidden_size=8, vocab_size=len(tokenizer), temporal_aggregator="mean",
                                 extra_modalities={"audio": {"feature_dim": 32}}, fuse_modalities=["audio"])).eval()
    store = ClipStore(videos, input_mode="pixels", cache=True)
    metrics = evaluate_split(model, processor, videos, store, batch_size=4, device="cpu", with_parts=True)
    plain = evaluate_split(model, processor, videos, store, batch_size=4, device="cpu")
    assert "visual_only_t2v_R@1" not in plain
    assert {k: v for k, v in metrics.items() if k in plain} == plain

    captions = [c for caps in videos["captions"] for c in caps]
    text_to_video = [row for row, caps in enumerate(videos["captions"]) for _ in caps]
    texts = encode_texts(model, processor, captions, 4, "cpu")
    batch = VideoCollator(processor)([RetrievalVideoSet(store, processor, with_audio=True)[i] for i in range(6)])
    # the collator's batched preprocessing equals preprocessing each clip on its own
    from modeling_mckd.data import model_inputs, process_clip

    one_by_one = model_inputs(processor, [process_clip(processor, store.clip(i), store.audio(i), training=False, rng=None)
                                          for i in range(6)], None, 0)
    assert batch["model"].keys() == one_by_one.keys()
    for key, value in one_by_one.items():
        assert torch.equal(batch["model"][key], value), key
    with torch.no_grad():
        parts = model.get_video_feature_parts(**batch["model"])
        fused = model.get_video_features(**batch["model"])
    torch.testing.assert_close(fused, F.normalize(parts["visual"] + parts["audio"], dim=-1))
    for part in ("visual", "audio"):
        expected = evaluate_retrieval(texts, parts[part], text_to_video)
        for key in ("t2v_R@1", "t2v_R@5", "v2t_R@1", "rsum"):
            assert metrics[f"{part}_only_{key}"] == pytest.approx(expected[key]), (part, key)
    assert metrics["t2v_R@1"] == pytest.approx(evaluate_retrieval(texts, fused, text_to_video)["t2v_R@1"])


def _objective_batch(batch_size=4):
    data = inputs(batch_size, seed=1)
    return {
        "student": data,
        "text_video_position": torch.arange(batch_size),
        "video_index": torch.arange(batch_size),
        "caption_index": torch.arange(batch_size),
    }


@torch.no_grad()
def _embeddings_by_hand(model, data):
    """Text, visual part, audio part and fused video embedding, each from its own tower."""
    text = model.get_text_features(data["input_ids"])
    visual = F.normalize(model.video_tower(None, data["video_features"], None), dim=-1)
    audio = model.get_audio_features(data["audio_features"])
    return text, visual, audio, F.normalize(visual + audio, dim=-1)


def test_a_clip_that_cannot_be_decoded_is_a_blank_masked_stand_in_in_a_batched_evaluation(tmp_path):
    """The evaluation collator preprocesses a batch at once; a clip that failed to decode is a one-frame blank of
    another shape in it, masked after its first frame and counted, and the other clips are untouched."""
    from modeling_mckd.data_prep.synthetic import generate_synthetic
    from modeling_mckd import MCKDProcessor, MCKDVideoProcessor, build_word_tokenizer
    from modeling_mckd.data import ClipStore, RetrievalVideoSet, VideoCollator, model_inputs, process_clip

    videos = generate_synthetic(tmp_path / "syn", seed=0, num_train=2, num_val=0, num_test=3, num_frames=8,
                                frame_size=32)["test"]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    paths = list(videos["video"])
    paths[1] = str(broken)
    videos = videos.remove_columns("video").add_column("video", paths)
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=16, crop_size=16),
                              tokenizer=build_word_tokenizer(["a clip"]))
    store = ClipStore(videos, input_mode="pixels", cache=True)
    dataset = RetrievalVideoSet(store, processor)
    batch = VideoCollator(processor)([dataset[i] for i in range(3)])
    pixels, mask = batch["model"]["pixel_values_videos"], batch["model"]["video_mask"]
    assert int(batch["num_failed"]) == 1 and pixels.shape == (3, 4, 3, 16, 16)
    assert mask.tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    blank = (0 - torch.tensor(processor.video_processor.image_mean)) / torch.tensor(processor.video_processor.image_std)
    torch.testing.assert_close(pixels[1, 0], blank.view(3, 1, 1).expand(3, 16, 16))
    for row in (0, 2):
        alone = model_inputs(processor, [process_clip(processor, store.clip(row), None, training=False, rng=None)], None, 0)
        assert torch.equal(pixels[row], alone["pixel_values_videos"][0])


@pytest.mark.parametrize("part_pairs", [True, False])
def test_teacher_objective_contrasts_the_parts_of_a_fused_embedding(part_pairs):
    from modeling_mckd.losses import ContrastiveLoss, multimodal_contrastive_loss
    from modeling_mckd.objectives import TeacherObjective

    torch.manual_seed(0)
    model = MCKDModel(fused_config())
    batch = _objective_batch()
    loss, logs = TeacherObjective(part_pairs=part_pairs)(model, batch)
    text, visual, audio, fused = _embeddings_by_hand(model, batch["student"])
    embeddings = {"text": text, "video": fused, "audio": audio}
    pairs = None
    if part_pairs:
        embeddings["visual"] = visual
        pairs = [("text", "video"), ("text", "visual"), ("text", "audio"), ("visual", "audio")]
    expected, per_pair = multimodal_contrastive_loss(embeddings, model.get_logit_scale().detach(),
                                                     ids=batch["video_index"], loss_fn=ContrastiveLoss(), pairs=pairs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert {k for k in logs if k.startswith("loss/")} == {f"loss/{name}" for name in per_pair}
    assert ("loss/text-visual" in logs) == part_pairs and ("loss/video-audio" in logs) != part_pairs


def test_student_objective_distils_each_part_with_kd_parts():
    from modeling_mckd.arguments import DistillArguments
    from modeling_mckd.losses import DiscriminationLoss, DistillationLoss, RankingLoss
    from modeling_mckd.objectives import StudentObjective, TeacherSignal

    torch.manual_seed(0)
    student = MCKDModel(fused_config())
    batch = _objective_batch()
    generator = torch.Generator().manual_seed(5)
    teacher = {name: F.normalize(torch.randn(4, 8, generator=generator), dim=-1)
               for name in ("text", "video", "visual", "audio")}
    args = DistillArguments(kd_weight=2.0, disc_weight=0.5, kd_mode="kl+relation", kd_parts=True)
    signal = TeacherSignal(text_cache=teacher["text"], video_cache=teacher["video"],
                           part_caches={"visual": teacher["visual"], "audio": teacher["audio"]}, with_parts=True)
    objective = StudentObjective(args, teacher=signal)
    loss, logs = objective(student, batch)

    text, visual, audio, fused = _embeddings_by_hand(student, batch["student"])
    kd = DistillationLoss(mode="kl+relation", temperature=args.kd_temperature)
    ids = batch["video_index"]
    # the fused term carries the text-text relation; each part only its video-side one (once per step)
    parts = {name: kd(text, mine, teacher["text"], teacher[name], ids=ids, text_relation=name == "video").item()
             for name, mine in (("video", fused), ("visual", visual), ("audio", audio))}
    expected = (RankingLoss(margin=args.ranking_margin, negatives="hardest")(text, fused, ids=ids).item()
                + 2.0 * sum(parts.values())
                + 0.5 * DiscriminationLoss(temperature=args.disc_temperature)(text, fused, ids=ids).item())
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["loss/distillation_visual"] == pytest.approx(parts["visual"], rel=1e-5)
    assert logs["loss/distillation_audio"] == pytest.approx(parts["audio"], rel=1e-5)
    assert logs["loss/distillation"] == pytest.approx(parts["video"], rel=1e-5)


def test_student_objective_places_captions_videos_and_parts_among_the_teachers_train_embeddings():
    from modeling_mckd.arguments import DistillArguments
    from modeling_mckd.losses import AnchorDistillationLoss, DistillationLoss, RankingLoss
    from modeling_mckd.objectives import StudentObjective, TeacherSignal

    torch.manual_seed(0)
    student = MCKDModel(fused_config())
    batch = _objective_batch()
    # the batch is videos 1, 3, 0, 5 of a train split of 7 videos (one caption each)
    batch["video_index"] = batch["caption_index"] = torch.tensor([1, 3, 0, 5])
    generator = torch.Generator().manual_seed(6)
    cache = {name: F.normalize(torch.randn(7, 8, generator=generator), dim=-1)
             for name in ("text", "video", "visual", "audio")}
    args = DistillArguments(kd_weight=2.0, disc_weight=0.0, kd_mode="kl", kd_parts=True, kd_anchor_weight=0.5)
    signal = TeacherSignal(text_cache=cache["text"], video_cache=cache["video"],
                           part_caches={"visual": cache["visual"], "audio": cache["audio"]}, with_parts=True)
    objective = StudentObjective(args, teacher=signal)
    loss, logs = objective(student, batch)

    text, visual, audio, fused = _embeddings_by_hand(student, batch["student"])
    rows = batch["video_index"]
    anchor = AnchorDistillationLoss(temperature=args.kd_temperature)
    expected_anchor = (anchor(text, cache["text"][rows], cache["video"])  # a caption among every train video
                       + sum(anchor(mine, cache[name][rows], cache["text"])  # a video among every train caption
                             for name, mine in (("video", fused), ("visual", visual), ("audio", audio)))).item()
    kd = DistillationLoss(mode="kl", temperature=args.kd_temperature)
    in_batch = sum(kd(text, mine, cache["text"][rows], cache[name][rows]).item()
                   for name, mine in (("video", fused), ("visual", visual), ("audio", audio)))
    ranking = RankingLoss(margin=args.ranking_margin, negatives="hardest")(text, fused, ids=rows).item()
    assert logs["loss/distillation_anchor"] == pytest.approx(expected_anchor, rel=1e-5)
    assert loss.item() == pytest.approx(ranking + 2.0 * (in_batch + 0.5 * expected_anchor), rel=1e-5)


# ------------------------------------------------------------------------------------------------ visual part
def _saved_fused_model(tmp_path, results=None):
    from modeling_mckd import MCKDProcessor, MCKDVideoProcessor
    from modeling_mckd.tokenization import build_word_tokenizer

    torch.manual_seed(0)
    model = MCKDModel(fused_config(video_input="pixels", video_feature_dim=None, image_size=16)).eval()
    tokenizer = build_word_tokenizer(["a red ball", "a blue cube rolls"], max_length=8)
    processor = MCKDProcessor(video_processor=MCKDVideoProcessor(num_frames=4, size=16, crop_size=16),
                              tokenizer=tokenizer)
    folder = tmp_path / "teacher"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if results is not None:
        (folder / "all_results.json").write_text(json.dumps(results))
    return model, folder


def test_visual_part_is_the_fused_models_visual_embedding_and_needs_no_audio(tmp_path):

    from modeling_mckd.visual_part import save_visual_part

    results = {"validation_t2v_R@1": 7.0, "validation_visual_only_t2v_R@1": 9.0, "validation_audio_only_t2v_R@1": 0.5,
               "validation_t2v_R@10": 30.0, "validation_num_videos": 250, "test_visual_only_rsum": 150.0,
               "test_rsum": 140.0, "global_step": 12}
    model, folder = _saved_fused_model(tmp_path, results)
    out = save_visual_part(folder)
    assert out == folder / "visual_part"
    part = MCKDModel.from_pretrained(out).eval()
    assert part.config.fuse_modalities == [] and part.config.extra_modalities == {}
    assert not any(name.startswith("modality_towers.") for name, _ in part.named_parameters())
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(2, 4, 3, 16, 16, generator=generator)
    audio = torch.randn(2, 7, 5, generator=generator)
    ids = torch.randint(4, 30, (2, 5), generator=generator)
    with torch.no_grad():
        expected = model.get_video_feature_parts(pixels, audio_features=audio)["visual"]
        got = part.get_video_features(pixels)  # frames alone
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(part.get_text_features(ids), model.get_text_features(ids))
        assert not torch.allclose(got, model.get_video_features(pixels, audio_features=audio))
    # its results are the visual part's own, the fused ones kept apart; no fused metric passes as the part's
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["validation_t2v_R@1"] == 9.0 and saved["test_rsum"] == 150.0
    assert saved["fused_validation_t2v_R@1"] == 7.0 and saved["fused_test_rsum"] == 140.0
    assert "validation_t2v_R@10" not in saved and saved["validation_num_videos"] == 250
    assert saved["fused_validation_audio_only_t2v_R@1"] == 0.5 and "validation_audio_only_t2v_R@1" not in saved
    assert saved["num_parameters"] == sum(p.numel() for p in part.parameters())
    assert (out / "README.md").read_text().startswith("---\n") and (out / "tokenizer.json").is_file()


def test_visual_part_refuses_an_unfused_model_and_a_foreign_folder(tmp_path):
    from modeling_mckd.visual_part import save_visual_part

    plain = MCKDModel(fused_config(fuse_modalities=[]))
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match="fuses nothing"):
        save_visual_part(tmp_path / "plain")
    _, folder = _saved_fused_model(tmp_path)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a model folder"):
        save_visual_part(folder, foreign)
    assert (foreign / "mine.txt").read_text() == "keep" and len(list(foreign.iterdir())) == 1
