"""MCKD losses against hand-derived values (pure Python), gradcheck and masking behaviour.

The 3x3 example used throughout: texts are the unit vectors e1, e2, e3 and the videos are
v1 = (0.6, 0.8, 0), v2 = (0, 0.6, 0.8), v3 = (0.8, 0, 0.6), so s_ij = t_i . v_j = v_j[i]:

    S = [[0.6, 0.0, 0.8],
         [0.8, 0.6, 0.0],
         [0.0, 0.8, 0.6]]

The reference values below are computed from S (written literally) with math.exp / math.log
loops, never through the module under test.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_mckd.losses import (
    AnchorDistillationLoss,
    ContrastiveLoss,
    DiscriminationLoss,
    DistillationLoss,
    RankingLoss,
    multimodal_contrastive_loss,
)


TEXT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
VIDEO = [[0.6, 0.8, 0.0], [0.0, 0.6, 0.8], [0.8, 0.0, 0.6]]
S = [[0.6, 0.0, 0.8], [0.8, 0.6, 0.0], [0.0, 0.8, 0.6]]


def t64(rows):
    return torch.tensor(rows, dtype=torch.float64)


def dot(u, v):
    return sum(x * y for x, y in zip(u, v))


def gram(rows_a, rows_b):
    return [[dot(a, b) for b in rows_b] for a in rows_a]


def transpose(matrix):
    return [list(column) for column in zip(*matrix)]


def log_softmax_row(row):
    top = max(row)
    log_norm = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_norm for x in row]


def multi_positive_ce(logits, positive_sets):
    """Mean over rows of -1/|P(i)| sum_{p in P(i)} log softmax(row i)_p."""
    total = 0.0
    for row, positives in zip(logits, positive_sets):
        log_probs = log_softmax_row(row)
        total += -sum(log_probs[p] for p in positives) / len(positives)
    return total / len(logits)


def kl_rows(teacher_logits, student_logits):
    total = 0.0
    for t_row, s_row in zip(teacher_logits, student_logits):
        log_p, log_q = log_softmax_row(t_row), log_softmax_row(s_row)
        total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
    return total / len(teacher_logits)


def pearson(x, y):
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cx, cy = [a - mx for a in x], [b - my for b in y]
    return dot(cx, cy) / math.sqrt(dot(cx, cx) * dot(cy, cy))


def unit_rows(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def test_example_similarity_matrix_is_what_the_docstring_says():
    assert gram(TEXT, VIDEO) == S
    for video in VIDEO:
        assert math.isclose(dot(video, video), 1.0)


# ------------------------------------------------------------------------------ ContrastiveLoss


def test_contrastive_hand_value_3x3():
    scale = 2.0
    logits = [[scale * s for s in row] for row in S]
    diagonal = [[0], [1], [2]]
    expected = (multi_positive_ce(logits, diagonal) + multi_positive_ce(transpose(logits), diagonal)) / 2
    # Row 0 text->video by hand: -1.2 + log(e^1.2 + e^0 + e^1.6).
    assert math.isclose(
        multi_positive_ce([logits[0]], [[0]]), -1.2 + math.log(math.exp(1.2) + 1 + math.exp(1.6)), rel_tol=1e-12
    )
    got = ContrastiveLoss()(t64(TEXT), t64(VIDEO), torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_contrastive_multi_positive_hand_value_3x3():
    scale = 2.0
    logits = [[scale * s for s in row] for row in S]
    ids = [0, 0, 1]
    positives = [[j for j in range(3) if ids[j] == ids[i]] for i in range(3)]
    assert positives == [[0, 1], [0, 1], [2]]
    expected = (multi_positive_ce(logits, positives) + multi_positive_ce(transpose(logits), positives)) / 2
    got = ContrastiveLoss()(t64(TEXT), t64(VIDEO), scale, ids=torch.tensor(ids))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # and it differs from the single-positive loss, so the ids are not ignored
    assert abs(got.item() - ContrastiveLoss()(t64(TEXT), t64(VIDEO), scale).item()) > 1e-3


def test_contrastive_ids_none_is_clip_loss_and_unique_ids_change_nothing():
    a, b = unit_rows(6, 5, seed=1), unit_rows(6, 5, seed=2)
    scale = torch.tensor(14.0, dtype=torch.float64)
    logits = scale * a @ b.T
    labels = torch.arange(6)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss = ContrastiveLoss()
    assert torch.allclose(loss(a, b, scale), clip, rtol=0, atol=1e-12)
    assert torch.allclose(loss(a, b, scale, ids=torch.tensor([5, 3, 9, 0, 1, 2])), clip, rtol=0, atol=1e-12)
    one_way = ContrastiveLoss(symmetric=False)(a, b, scale)
    assert torch.allclose(one_way, F.cross_entropy(logits, labels), rtol=0, atol=1e-12)


def test_contrastive_same_video_pair_is_a_positive_not_a_negative():
    # features_a = identity makes the logits exactly the matrix M we pass as features_b.T.
    matrix = t64([[0.9, 0.3, 0.1, 0.0], [0.2, 0.8, 0.1, 0.3], [0.1, 0.0, 0.7, 0.2], [0.3, 0.1, 0.2, 0.9]])
    eye = torch.eye(4, dtype=torch.float64)
    ids = torch.tensor([7, 7, 1, 2])

    def grad_of_pair(ids_or_none):
        features_b = matrix.T.clone().requires_grad_(True)
        ContrastiveLoss()(eye, features_b, 5.0, ids=ids_or_none).backward()
        return features_b.grad.T  # gradient w.r.t. M

    # Raising the similarity of caption 0 with video 1 (same video id) lowers the loss with ids
    # (a positive), raises it without (a negative).
    assert grad_of_pair(ids)[0, 1] < 0
    assert grad_of_pair(None)[0, 1] > 0
    # A pair of different videos is a negative either way.
    assert grad_of_pair(ids)[0, 2] > 0


def test_contrastive_gradcheck():
    a = unit_rows(4, 3, seed=3).requires_grad_(True)
    b = unit_rows(4, 3, seed=4).requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 1, 0, 2])
    loss = ContrastiveLoss()
    assert torch.autograd.gradcheck(lambda x, y, s: loss(x, y, s, ids=ids), (a, b, scale))
    assert torch.autograd.gradcheck(lambda x, y, s: loss(x, y, s), (a, b, scale))


def test_contrastive_bad_inputs():
    a = unit_rows(3, 4)
    with pytest.raises(ValueError, match="features_a has 3 rows but features_b has 2"):
        ContrastiveLoss()(a, a[:2], 1.0)
    with pytest.raises(ValueError, match=r"ids: expected shape \(3,\)"):
        ContrastiveLoss()(a, a, 1.0, ids=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="logit_scale: expected a scalar"):
        ContrastiveLoss()(a, a, torch.ones(2))
    with pytest.raises(ValueError, match="gather_with_grad"):
        ContrastiveLoss(local_loss=True, gather_with_grad=False)


def test_multimodal_sums_every_pair():
    text, video, audio = unit_rows(5, 4, seed=5), unit_rows(5, 4, seed=6), unit_rows(5, 4, seed=7)
    ids = torch.tensor([0, 0, 1, 2, 3])
    loss_fn = ContrastiveLoss()
    total, per_pair = multimodal_contrastive_loss(
        {"audio": audio, "video": video, "text": text}, 10.0, ids=ids, loss_fn=loss_fn
    )
    assert list(per_pair) == ["text-video", "text-audio", "video-audio"]
    assert torch.allclose(per_pair["text-video"], loss_fn(text, video, 10.0, ids=ids))
    assert torch.allclose(per_pair["text-audio"], loss_fn(text, audio, 10.0, ids=ids))
    assert torch.allclose(per_pair["video-audio"], loss_fn(video, audio, 10.0, ids=ids))
    assert torch.allclose(total, sum(per_pair.values()))

    weighted, _ = multimodal_contrastive_loss(
        {"text": text, "video": video, "audio": audio},
        {"text-video": 10.0, "video-audio": 2.0},
        pairs=["text-video", ("video", "audio")],
        weights={"video-audio": 0.5},
    )
    expected = loss_fn(text, video, 10.0) + 0.5 * loss_fn(video, audio, 2.0)
    assert torch.allclose(weighted, expected)


def test_multimodal_bad_inputs():
    text, video = unit_rows(5, 4, seed=5), unit_rows(4, 4, seed=6)
    with pytest.raises(ValueError, match="at least two modalities"):
        multimodal_contrastive_loss({"text": text}, 1.0)
    with pytest.raises(ValueError, match=r"embeddings\['video'\] has 4 rows"):
        multimodal_contrastive_loss({"text": text, "video": video}, 1.0)
    with pytest.raises(ValueError, match="modality 'audio'"):
        multimodal_contrastive_loss({"text": text, "video": text}, 1.0, pairs=["text-audio"])
    with pytest.raises(ValueError, match="no scale for pairs"):
        multimodal_contrastive_loss({"text": text, "video": text}, {"text-audio": 1.0})


# ------------------------------------------------------------------------------ RankingLoss


def ranking_by_hand(sims, margin, ids, negatives="hardest", reduction="mean", branches=None):
    """Loop reference. A text query i pays against videos j, a video query j against texts i (column j)."""
    n = len(sims)

    def query_cost(positive, negative_sims):
        if not negative_sims:
            return 0.0
        if negatives == "all":
            return sum(max(0.0, margin + s - positive) for s in negative_sims)
        if negatives == "hardest":
            return max(max(0.0, margin + s - positive) for s in negative_sims)
        semi_hard = [s for s in negative_sims if s < positive]
        if branches is not None:
            branches["semi_hard" if semi_hard else "fallback"] += 1
        chosen = max(semi_hard) if semi_hard else min(negative_sims)
        return max(0.0, margin + chosen - positive)

    total = 0.0
    for i in range(n):  # text query i, video negatives j
        total += query_cost(sims[i][i], [sims[i][j] for j in range(n) if ids[j] != ids[i]])
    for j in range(n):  # video query j, text negatives i
        total += query_cost(sims[j][j], [sims[i][j] for i in range(n) if ids[i] != ids[j]])
    return total / n if reduction == "mean" else total


# M below is used as the similarity matrix through texts = identity, videos = M.T (so s_ij = M[i][j]).
# It is not symmetric: text->video and video->text see different negatives.
M = [[0.9, 0.5, 0.1], [0.0, 0.4, 0.2], [0.7, 0.3, 0.8]]


def as_similarities(matrix):
    """(texts, videos) whose product text @ video.T is exactly ``matrix``."""
    matrix = t64(matrix)
    return torch.eye(matrix.shape[0], dtype=torch.float64), matrix.T.contiguous()


def test_ranking_hand_values_hardest_vs_sum():
    text, video = t64(TEXT), t64(VIDEO)
    # margin 0.7: every query has one violation of 0.9 and one of 0.1 (derived in the module docstring's S)
    assert RankingLoss(margin=0.7)(text, video).item() == pytest.approx(6 * 0.9 / 3, abs=1e-12)
    assert RankingLoss(margin=0.7, negatives="all")(text, video).item() == pytest.approx(6 * 1.0 / 3, abs=1e-12)
    assert RankingLoss(margin=0.7, reduction="sum")(text, video).item() == pytest.approx(6 * 0.9, abs=1e-12)
    # default margin 0.2: only the 0.8 entries violate, by 0.4 each
    assert RankingLoss()(text, video).item() == pytest.approx(6 * 0.4 / 3, abs=1e-12)
    for negatives in ("hardest", "all", "semi_hard"):
        assert RankingLoss(0.7, negatives)(text, video).item() == pytest.approx(
            ranking_by_hand(S, 0.7, [0, 1, 2], negatives), abs=1e-12
        )


def test_ranking_hand_values_non_symmetric_3x3():
    # margin 0.2, hinges by hand (s_neg - s_pos + 0.2, clamped at 0):
    #   text queries (rows):   q0 pos .9 negs .5 .1 -> 0, 0;  q1 pos .4 negs 0 .2 -> 0, 0;  q2 pos .8 negs .7 .3 -> .1, 0
    #   video queries (cols):  v0 pos .9 negs 0 .7 -> 0, 0;   v1 pos .4 negs .5 .3 -> .3, .1;  v2 pos .8 negs .1 .2 -> 0, 0
    text, video = as_similarities(M)
    assert RankingLoss(0.2, "hardest", reduction="sum")(text, video).item() == pytest.approx(0.1 + 0.3, abs=1e-12)
    assert RankingLoss(0.2, "all", reduction="sum")(text, video).item() == pytest.approx(0.1 + 0.3 + 0.1, abs=1e-12)
    # semi-hard: v1's semi-hard negative is .3 (.5 is more similar than its positive .4), q2's is .7
    assert RankingLoss(0.2, "semi_hard", reduction="sum")(text, video).item() == pytest.approx(0.1 + 0.1, abs=1e-12)
    assert RankingLoss(0.2, "hardest")(text, video).item() == pytest.approx(0.4 / 3, abs=1e-12)


# Only video queries violate here: every text query i has s_ij <= s_ii - 0.2. Video 1 (positive 0.5) has
# the text negatives 0.6 (hinge 0.3) and 0.4 (hinge 0.1); videos 0 and 2 pay 0.
VIDEO_SIDE_ONLY = [[0.9, 0.6, 0.5], [0.1, 0.5, 0.2], [0.3, 0.4, 0.8]]


def test_ranking_hardest_negative_is_taken_along_each_querys_own_axis():
    # The correct video->text hardest negative is the max over texts i of column j: 0.3 in total.
    # Taking the max of the same cost matrix [0.2 + s_ij - s_jj]_+ along rows instead gives
    # 0.3 (row 0) + 0 (row 1) + 0.1 (row 2) = 0.4; subtracting s_ii instead of s_jj gives 0.
    text, video = as_similarities(VIDEO_SIDE_ONLY)
    hardest = RankingLoss(0.2, "hardest", reduction="sum")
    assert hardest(text, video).item() == pytest.approx(0.3, abs=1e-12)
    assert RankingLoss(0.2, "all", reduction="sum")(text, video).item() == pytest.approx(0.4, abs=1e-12)
    assert RankingLoss(0.2, "semi_hard", reduction="sum")(text, video).item() == pytest.approx(0.1, abs=1e-12)
    # The transpose puts the same violations on the text side: text query 1 must also take its max
    # over its own row (0.3), not over a column (0.4).
    text, video = as_similarities(transpose(VIDEO_SIDE_ONLY))
    assert hardest(text, video).item() == pytest.approx(0.3, abs=1e-12)
    assert RankingLoss(0.2, "semi_hard", reduction="sum")(text, video).item() == pytest.approx(0.1, abs=1e-12)


def test_ranking_semi_hard_falls_back_to_the_least_similar_negative():
    # Text query 0: positive 0.2, negatives 0.5 and 0.3 are both more similar -> no semi-hard negative,
    # the fallback is the least similar one (0.3): 0.2 + 0.3 - 0.2 = 0.3. Hardest would pay 0.5, all 0.8.
    # Every other query pays 0 (video 0: semi-hard 0.0 -> 0.2 + 0 - 0.2 = 0).
    matrix = [[0.2, 0.5, 0.3], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]]
    text, video = as_similarities(matrix)
    expected = {"semi_hard": 0.3, "hardest": 0.5, "all": 0.8}
    for negatives, value in expected.items():
        assert RankingLoss(0.2, negatives, reduction="sum")(text, video).item() == pytest.approx(value, abs=1e-12)
        assert ranking_by_hand(matrix, 0.2, [0, 1, 2], negatives, "sum") == pytest.approx(value, abs=1e-12)

    # A negative exactly as similar as the positive is not semi-hard (s_neg < s_pos is strict): text
    # query 0 (positive 0.5) takes 0.4 (hinge 0.1), not the tied 0.5 (hinge 0.2).
    tied = [[0.5, 0.5, 0.4], [0.0, 0.9, 0.0], [0.0, 0.0, 0.9]]
    text, video = as_similarities(tied)
    assert RankingLoss(0.2, "semi_hard", reduction="sum")(text, video).item() == pytest.approx(0.1, abs=1e-12)


def random_multi_caption_batch(seed, repeat_videos):
    """8 rows, ids with duplicates; with repeat_videos the rows of one id share one video embedding (as
    in training batches), otherwise every video row is its own random vector."""
    ids = [4, 4, 1, 7, 7, 7, 2, 9]
    text = unit_rows(8, 5, seed=seed)
    if repeat_videos:
        per_id = unit_rows(10, 5, seed=seed + 100)
        video = per_id[torch.tensor(ids)]
    else:
        video = unit_rows(8, 5, seed=seed + 100)
    return text, video, ids


@pytest.mark.parametrize("negatives", ["hardest", "all", "semi_hard"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("repeat_videos", [True, False])
def test_ranking_matches_loop_reference_on_random_multi_caption_batches(negatives, reduction, repeat_videos):
    branches = {"semi_hard": 0, "fallback": 0}
    for seed in range(4):
        text, video, ids = random_multi_caption_batch(seed, repeat_videos)
        sims = (text @ video.T).tolist()
        assert any(abs(sims[i][j] - sims[j][i]) > 0.1 for i in range(8) for j in range(8))  # not symmetric
        expected = ranking_by_hand(sims, 0.4, ids, negatives, reduction, branches)
        got = RankingLoss(0.4, negatives, reduction=reduction)(text, video, ids=torch.tensor(ids))
        assert got.item() == pytest.approx(expected, abs=1e-12)
        assert expected > 0
    if negatives == "semi_hard":
        # the batches exercise both the semi-hard choice and the fallback
        assert branches["semi_hard"] > 0 and branches["fallback"] > 0


def test_ranking_same_video_rows_are_not_negatives():
    text, video = t64(TEXT), t64(VIDEO)
    ids = [0, 0, 1]
    got = RankingLoss(margin=0.7)(text, video, ids=torch.tensor(ids)).item()
    assert got == pytest.approx(3.8 / 3, abs=1e-12)  # derived by hand: 0.9+0.1+0.9 | 0.1+0.9+0.9
    assert got == pytest.approx(ranking_by_hand(S, 0.7, ids, "hardest"), abs=1e-12)
    summed = RankingLoss(margin=0.7, negatives="all")(text, video, ids=torch.tensor(ids)).item()
    assert summed == pytest.approx(ranking_by_hand(S, 0.7, ids, "all"), abs=1e-12)

    # Identity texts make the similarity matrix exactly M (passed as video_embeds = M.T). Raising the
    # similarity of the same-video pairs (0, 1) and (1, 0) changes nothing with ids (they are not
    # negatives) and raises the loss without ids (they are).
    eye = torch.eye(4, dtype=torch.float64)
    ids4 = torch.tensor([3, 3, 4, 5])
    matrix = unit_rows(4, 3, seed=8) @ unit_rows(4, 3, seed=9).T
    changed = matrix.clone()
    changed[0, 1] += 0.5
    changed[1, 0] += 0.5
    for negatives in ("hardest", "all", "semi_hard"):
        loss = RankingLoss(margin=0.2, negatives=negatives)
        assert loss(eye, changed.T, ids=ids4) == loss(eye, matrix.T, ids=ids4)
        assert loss(eye, changed.T) != loss(eye, matrix.T)


def test_ranking_per_call_negatives_override_and_warm_up_schedule():
    text, video, ids = random_multi_caption_batch(0, True)
    ids = torch.tensor(ids)
    loss = RankingLoss(0.3, "hardest")
    for negatives in ("all", "semi_hard", "hardest"):
        assert loss(text, video, ids=ids, negatives=negatives) == RankingLoss(0.3, negatives)(text, video, ids=ids)
    assert loss.negatives == "hardest"  # the override does not stick
    assert loss(text, video, ids=ids, negatives="all") > loss(text, video, ids=ids)
    assert [loss.negatives_at_epoch(epoch, warmup_epochs=2) for epoch in range(4)] == ["all", "all", "hardest", "hardest"]
    assert RankingLoss(negatives="semi_hard").negatives_at_epoch(0, warmup_epochs=0) == "semi_hard"
    with pytest.raises(ValueError, match="warmup_epochs"):
        loss.negatives_at_epoch(0, warmup_epochs=-1)


def test_ranking_max_violation_is_a_deprecated_alias():
    text, video = as_similarities(M)
    for legacy, negatives in ((True, "hardest"), (False, "all")):
        with pytest.warns(DeprecationWarning, match="negatives="):
            by_keyword = RankingLoss(0.2, max_violation=legacy)
        with pytest.warns(DeprecationWarning):
            by_position = RankingLoss(0.2, legacy)  # the old positional RankingLoss(margin, max_violation)
        assert by_keyword.negatives == by_position.negatives == negatives
        assert by_keyword(text, video) == RankingLoss(0.2, negatives)(text, video)
    with pytest.warns(DeprecationWarning):
        assert RankingLoss(max_violation=True, negatives="hardest").negatives == "hardest"  # agreeing is fine
    with pytest.raises(ValueError, match="max_violation=True means negatives='hardest'"), pytest.warns(DeprecationWarning):
        RankingLoss(max_violation=True, negatives="all")
    assert RankingLoss().negatives == "hardest"


def test_ranking_gradcheck():
    a = unit_rows(4, 3, seed=10).requires_grad_(True)
    b = unit_rows(4, 3, seed=11).requires_grad_(True)
    ids = torch.tensor([0, 1, 1, 2])
    for negatives in ("hardest", "all", "semi_hard"):
        loss = RankingLoss(margin=0.5, negatives=negatives)
        assert torch.autograd.gradcheck(lambda x, y: loss(x, y, ids=ids), (a, b))


def test_ranking_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        RankingLoss(reduction="none")
    with pytest.raises(ValueError, match=r"negatives: expected one of \['hardest', 'all', 'semi_hard'\], got 'hard'"):
        RankingLoss(negatives="hard")
    text, video = as_similarities(M)
    with pytest.raises(ValueError, match="negatives: expected one of"):
        RankingLoss()(text, video, negatives="semihard")
    with pytest.raises(ValueError, match="text_embeds has 3 rows but video_embeds has 2"):
        RankingLoss()(text, video[:2])


# ------------------------------------------------------------------------------ DistillationLoss

STUDENT_TEXT = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
STUDENT_VIDEO = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]


def test_distillation_kl_hand_value_3x3():
    temperature, student_temperature = 0.5, 0.25
    teacher = [[s / temperature for s in row] for row in S]
    student_sims = gram(STUDENT_TEXT, STUDENT_VIDEO)
    assert student_sims == [[0.8, 0.0, 1.0], [0.6, 1.0, 0.0], [0.48 + 0.48, 0.8, 0.6]]
    student = [[s / student_temperature for s in row] for row in student_sims]
    expected = (kl_rows(teacher, student) + kl_rows(transpose(teacher), transpose(student))) / 2
    loss = DistillationLoss("kl", temperature=temperature, student_temperature=student_temperature)
    got = loss(t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(TEXT), t64(VIDEO))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    hinton = DistillationLoss("kl", temperature=temperature, student_temperature=student_temperature,
                              scale_by_temperature_squared=True)
    assert hinton(t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(TEXT), t64(VIDEO)).item() == pytest.approx(
        expected * temperature**2, rel=1e-12
    )
    # The logit scales multiply the similarities before the temperature.
    scaled_teacher = [[3.0 * s for s in row] for row in S]
    scaled_student = [[5.0 * s for s in row] for row in student_sims]
    expected_scaled = (
        kl_rows(scaled_teacher, scaled_student) + kl_rows(transpose(scaled_teacher), transpose(scaled_student))
    ) / 2
    got_scaled = DistillationLoss("kl")(
        t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(TEXT), t64(VIDEO),
        student_logit_scale=torch.tensor(5.0, dtype=torch.float64), teacher_logit_scale=3.0,
    )
    assert got_scaled.item() == pytest.approx(expected_scaled, rel=1e-12)


def test_distillation_pearson_hand_value_3x3():
    student_sims = gram(STUDENT_TEXT, STUDENT_VIDEO)
    rows = sum(1 - pearson(student_sims[i], S[i]) for i in range(3)) / 3
    cols = sum(1 - pearson(transpose(student_sims)[j], transpose(S)[j]) for j in range(3)) / 3
    got = DistillationLoss("pearson")(t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(TEXT), t64(VIDEO))
    assert got.item() == pytest.approx((rows + cols) / 2, abs=1e-7)  # eps=1e-8 in the denominator


def test_distillation_relation_hand_value_3x3():
    temperature = 0.5

    def off_diagonal_logits(rows):
        sims = gram(rows, rows)
        return [[sims[i][j] / temperature for j in range(3) if j != i] for i in range(3)]

    text_kl = kl_rows(off_diagonal_logits(VIDEO), off_diagonal_logits(STUDENT_TEXT))
    video_kl = kl_rows(off_diagonal_logits(TEXT), off_diagonal_logits(STUDENT_VIDEO))
    # teacher texts are VIDEO here so that the text-text matrix is not the identity
    loss = DistillationLoss("relation", temperature=temperature, intra_modal_weight=2.0)
    got = loss(t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(VIDEO), t64(TEXT))
    assert got.item() == pytest.approx(2.0 * (text_kl + video_kl) / 2, rel=1e-12)

    combined = DistillationLoss("kl+relation", temperature=temperature)
    kl_only = DistillationLoss("kl", temperature=temperature)
    args = (t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(VIDEO), t64(TEXT))
    assert combined(*args).item() == pytest.approx(kl_only(*args).item() + (text_kl + video_kl) / 2, rel=1e-12)


def test_distillation_feature_hand_value():
    projected_text = [[1.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    projected_video = VIDEO
    # squared differences to TEXT: row0 0.5^2 = 0.25, row1 1 + 1 = 2, row2 1 -> 3.25 over 9 elements;
    # the videos match exactly (0).
    expected = (3.25 / 9 + 0.0) / 2
    got = DistillationLoss("feature", feature_weight=3.0)(
        t64(STUDENT_TEXT), t64(STUDENT_VIDEO), t64(TEXT), t64(VIDEO),
        student_projected_text=t64(projected_text), student_projected_video=t64(projected_video),
    )
    assert got.item() == pytest.approx(3.0 * expected, rel=1e-12)
    with pytest.raises(ValueError, match="student_projected_video: required"):
        DistillationLoss("feature")(t64(TEXT), t64(VIDEO), t64(TEXT), t64(VIDEO), student_projected_text=t64(TEXT))
    with pytest.raises(ValueError, match=r"student_projected_text: expected shape \(3, 3\)"):
        DistillationLoss("feature")(t64(TEXT), t64(VIDEO), t64(TEXT), t64(VIDEO),
                                    student_projected_text=t64(STUDENT_TEXT), student_projected_video=t64(VIDEO))


@pytest.mark.parametrize("mode", ["kl", "pearson", "relation", "kl+relation", "pearson+relation"])
def test_distillation_zero_iff_same_structure_and_teacher_gets_no_gradient(mode):
    teacher_text, teacher_video = unit_rows(5, 4, seed=12), unit_rows(5, 4, seed=13)
    # A student in another space (dim 6) with the same structure: rotate, then pad with zeros.
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    student_text = F.pad(teacher_text @ rotation, (0, 2)).requires_grad_(True)
    student_video = F.pad(teacher_video @ rotation, (0, 2)).requires_grad_(True)
    loss = DistillationLoss(mode, temperature=0.1)
    same = loss(student_text, student_video, teacher_text, teacher_video)
    assert same.item() == pytest.approx(0.0, abs=1e-7)  # pearson: eps=1e-8 in the denominator

    other_text = unit_rows(5, 6, seed=14).requires_grad_(True)
    other_video = unit_rows(5, 6, seed=15).requires_grad_(True)
    teacher_text_leaf = teacher_text.clone().requires_grad_(True)
    teacher_video_leaf = teacher_video.clone().requires_grad_(True)
    different = loss(other_text, other_video, teacher_text_leaf, teacher_video_leaf)
    assert different.item() > 1e-3
    different.backward()
    assert teacher_text_leaf.grad is None and teacher_video_leaf.grad is None
    assert other_text.grad is not None and other_text.grad.abs().sum() > 0


def test_distillation_teacher_logit_scale_is_detached():
    scale_teacher = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    scale_student = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    loss = DistillationLoss("kl")(
        unit_rows(4, 3, seed=16), unit_rows(4, 3, seed=17), unit_rows(4, 5, seed=18), unit_rows(4, 5, seed=19),
        student_logit_scale=scale_student, teacher_logit_scale=scale_teacher,
    )
    loss.backward()
    assert scale_teacher.grad is None
    assert scale_student.grad is not None and scale_student.grad != 0


@pytest.mark.parametrize("mode", ["kl", "pearson", "relation", "feature"])
def test_distillation_gradcheck(mode):
    student_text = unit_rows(4, 3, seed=20).requires_grad_(True)
    student_video = unit_rows(4, 3, seed=21).requires_grad_(True)
    teacher_text, teacher_video = unit_rows(4, 5, seed=22), unit_rows(4, 5, seed=23)
    projected_text = unit_rows(4, 5, seed=24).requires_grad_(True)
    projected_video = unit_rows(4, 5, seed=25).requires_grad_(True)
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    loss = DistillationLoss(mode, temperature=0.5)

    def run(text, video, s, p_text, p_video):
        return loss(text, video, teacher_text, teacher_video, student_logit_scale=s, teacher_logit_scale=2.0,
                    student_projected_text=p_text, student_projected_video=p_video)

    assert torch.autograd.gradcheck(run, (student_text, student_video, scale, projected_text, projected_video))


def test_distillation_single_row_batch_is_zero_but_attached():
    text = unit_rows(1, 3, seed=26).requires_grad_(True)
    loss = DistillationLoss("kl+pearson+relation")(text, unit_rows(1, 3, seed=27), unit_rows(1, 4), unit_rows(1, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert text.grad is not None


@pytest.mark.parametrize("mode", ["kd", "", "kl+kl", "kl+", None])
def test_distillation_bad_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        DistillationLoss(mode)


def test_distillation_batch_mismatch():
    with pytest.raises(ValueError, match="teacher_text has 2 rows but student_text has 3"):
        DistillationLoss()(t64(TEXT), t64(VIDEO), t64(TEXT)[:2], t64(VIDEO)[:2])


# A batch with one video twice (two captions of video 0): rows 0 and 1 share the video embedding.
TWIN_IDS = [0, 0, 1, 2]
TWIN_STUDENT_TEXT = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, -0.6]]
TWIN_STUDENT_VIDEO = [[0.8, 0.6], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]]
TWIN_TEACHER_TEXT = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
TWIN_TEACHER_VIDEO = [VIDEO[0], VIDEO[0], VIDEO[1], VIDEO[2]]


def relation_kl_by_hand(teacher_rows, student_rows, temperature, keep):
    """Mean over rows i with some kept j of KL over the entries j with keep(i, j)."""
    teacher_sims, student_sims = gram(teacher_rows, teacher_rows), gram(student_rows, student_rows)
    teacher_logits, student_logits = [], []
    for i in range(len(teacher_rows)):
        columns = [j for j in range(len(teacher_rows)) if keep(i, j)]
        if columns:
            teacher_logits.append([teacher_sims[i][j] / temperature for j in columns])
            student_logits.append([student_sims[i][j] / temperature for j in columns])
    return kl_rows(teacher_logits, student_logits)


def twin_args():
    return t64(TWIN_STUDENT_TEXT), t64(TWIN_STUDENT_VIDEO), t64(TWIN_TEACHER_TEXT), t64(TWIN_TEACHER_VIDEO)


def test_distillation_relation_masks_the_twin_video_given_ids():
    temperature, weight = 0.5, 2.0
    other_video = lambda i, j: TWIN_IDS[i] != TWIN_IDS[j]  # noqa: E731
    not_self = lambda i, j: i != j  # noqa: E731
    video_kl = relation_kl_by_hand(TWIN_TEACHER_VIDEO, TWIN_STUDENT_VIDEO, temperature, other_video)
    text_kl = relation_kl_by_hand(TWIN_TEACHER_TEXT, TWIN_STUDENT_TEXT, temperature, other_video)
    # Row 0's video-video row without the fix holds its twin (row 1) at cosine 1 for both models.
    assert gram(TWIN_STUDENT_VIDEO, TWIN_STUDENT_VIDEO)[0][1] == pytest.approx(1.0)
    loss = DistillationLoss("relation", temperature=temperature, intra_modal_weight=weight)
    masked = loss(*twin_args(), ids=torch.tensor(TWIN_IDS)).item()
    assert masked == pytest.approx(weight * (text_kl + video_kl) / 2, rel=1e-12)

    unmasked = loss(*twin_args()).item()
    unmasked_by_hand = weight * (
        relation_kl_by_hand(TWIN_TEACHER_TEXT, TWIN_STUDENT_TEXT, temperature, not_self)
        + relation_kl_by_hand(TWIN_TEACHER_VIDEO, TWIN_STUDENT_VIDEO, temperature, not_self)
    ) / 2
    assert unmasked == pytest.approx(unmasked_by_hand, rel=1e-12)
    assert abs(masked - unmasked) > 1e-3

    # keep_same_video_captions: only the diagonal leaves the text-text relation; the video side is still masked.
    kept = DistillationLoss("relation", temperature=temperature, intra_modal_weight=weight, keep_same_video_captions=True)
    text_kl_kept = relation_kl_by_hand(TWIN_TEACHER_TEXT, TWIN_STUDENT_TEXT, temperature, not_self)
    assert kept(*twin_args(), ids=torch.tensor(TWIN_IDS)).item() == pytest.approx(
        weight * (text_kl_kept + video_kl) / 2, rel=1e-12
    )
    assert abs(text_kl_kept - text_kl) > 1e-3


def test_distillation_relation_with_every_video_twice_equals_the_deduplicated_batch():
    # Each video with 2 captions (as in training): with ids, the video-video relation over the 6 rows is
    # the relation over the 3 distinct videos (each kept entry appears twice with half the mass).
    student_videos, teacher_videos = unit_rows(3, 4, seed=50), unit_rows(3, 5, seed=51)
    rows = torch.tensor([0, 1, 2, 0, 2, 1])
    loss = DistillationLoss("relation", temperature=0.1)
    duplicated = loss(unit_rows(6, 4, seed=52), student_videos[rows], unit_rows(6, 5, seed=53), teacher_videos[rows],
                      ids=rows, text_relation=False)
    distinct = loss(unit_rows(3, 4, seed=54), student_videos, unit_rows(3, 5, seed=55), teacher_videos,
                    text_relation=False)
    assert duplicated.item() == pytest.approx(distinct.item(), rel=1e-12)
    assert distinct.item() > 1e-3
    without_ids = loss(unit_rows(6, 4, seed=52), student_videos[rows], unit_rows(6, 5, seed=53), teacher_videos[rows],
                       text_relation=False)
    assert abs(without_ids.item() - distinct.item()) > 1e-3


def test_distillation_text_relation_false_drops_exactly_the_text_term():
    temperature, weight = 0.5, 3.0
    loss = DistillationLoss("kl+relation", temperature=temperature, intra_modal_weight=weight)
    kl_only = DistillationLoss("kl", temperature=temperature)(*twin_args()).item()
    for ids, keep in ((None, lambda i, j: i != j), (torch.tensor(TWIN_IDS), lambda i, j: TWIN_IDS[i] != TWIN_IDS[j])):
        text_kl = relation_kl_by_hand(TWIN_TEACHER_TEXT, TWIN_STUDENT_TEXT, temperature, keep)
        video_kl = relation_kl_by_hand(TWIN_TEACHER_VIDEO, TWIN_STUDENT_VIDEO, temperature, keep)
        full = loss(*twin_args(), ids=ids).item()
        without_text = loss(*twin_args(), ids=ids, text_relation=False).item()
        assert full - without_text == pytest.approx(weight * text_kl / 2, rel=1e-9)
        assert without_text == pytest.approx(kl_only + weight * video_kl / 2, rel=1e-12)
    # Without a relation term the flag changes nothing.
    kl = DistillationLoss("kl", temperature=temperature)
    assert kl(*twin_args(), text_relation=False).item() == kl_only


@pytest.mark.parametrize("mode", ["kl", "pearson", "feature", "kl+pearson"])
def test_distillation_ids_change_only_the_relation_term(mode):
    extra = {"student_projected_text": unit_rows(4, 3, seed=56), "student_projected_video": unit_rows(4, 3, seed=57)}
    loss = DistillationLoss(mode, temperature=0.3)
    assert loss(*twin_args(), ids=torch.tensor(TWIN_IDS), **extra) == loss(*twin_args(), **extra)


def test_distillation_relation_with_unique_ids_is_the_diagonal_only_relation():
    args = (unit_rows(5, 4, seed=58), unit_rows(5, 4, seed=59), unit_rows(5, 3, seed=60), unit_rows(5, 3, seed=61))
    loss = DistillationLoss("kl+relation", temperature=0.2)
    assert loss(*args, ids=torch.tensor([9, 2, 4, 0, 7])).item() == pytest.approx(loss(*args).item(), rel=1e-12)


def test_distillation_relation_with_ids_gradcheck_and_single_video_batch():
    student_text = unit_rows(4, 3, seed=62).requires_grad_(True)
    student_video = unit_rows(4, 3, seed=63)[torch.tensor([0, 0, 1, 2])].clone().requires_grad_(True)
    teacher_text, teacher_video = unit_rows(4, 5, seed=64), unit_rows(4, 5, seed=65)
    ids = torch.tensor(TWIN_IDS)
    loss = DistillationLoss("relation", temperature=0.5)
    assert torch.autograd.gradcheck(
        lambda text, video: loss(text, video, teacher_text, teacher_video, ids=ids), (student_text, student_video)
    )
    # All rows of one video: no other instance to relate to, so 0, attached, and finite gradients.
    value = loss(student_text, student_video, teacher_text, teacher_video, ids=torch.tensor([3, 3, 3, 3]))
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(student_text.grad).all() and torch.isfinite(student_video.grad).all()


def test_distillation_bad_ids():
    with pytest.raises(ValueError, match=r"ids: expected shape \(4,\)"):
        DistillationLoss("relation")(*twin_args(), ids=torch.tensor([0, 0, 1]))


# ------------------------------------------------------------------------------ AnchorDistillationLoss


def test_anchor_distillation_hand_value_3x3_with_4_anchors():
    anchors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]]
    temperature = 0.5
    teacher = [[s / temperature for s in row] for row in gram(TEXT, anchors)]
    student = [[s / temperature for s in row] for row in gram(VIDEO, anchors)]
    expected = kl_rows(teacher, student)
    got = AnchorDistillationLoss(temperature=temperature)(t64(VIDEO), t64(TEXT), t64(anchors))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_anchor_distillation_is_zero_for_the_teacher_itself_and_only_the_student_learns():
    teacher, anchors = unit_rows(5, 4, seed=40), unit_rows(9, 4, seed=41)
    loss = AnchorDistillationLoss(temperature=0.1)
    assert loss(teacher.clone(), teacher, anchors).item() == pytest.approx(0.0, abs=1e-12)
    student = unit_rows(5, 4, seed=42).requires_grad_(True)
    teacher_leaf, anchor_leaf = teacher.clone().requires_grad_(True), anchors.clone().requires_grad_(True)
    value = loss(student, teacher_leaf, anchor_leaf)
    assert value.item() > 1e-3
    value.backward()
    assert teacher_leaf.grad is None and anchor_leaf.grad is None
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher, anchors), (student,))


def test_anchor_distillation_bad_inputs():
    loss = AnchorDistillationLoss()
    with pytest.raises(ValueError, match="anchors: expected dim 3"):
        loss(t64(TEXT), t64(TEXT), unit_rows(4, 5))
    with pytest.raises(ValueError, match="student has 3 rows but teacher has 2"):
        loss(t64(TEXT), t64(TEXT)[:2], t64(VIDEO))
    with pytest.raises(ValueError, match="temperature"):
        AnchorDistillationLoss(temperature=0.0)


# ------------------------------------------------------------------------------ DiscriminationLoss


def test_discrimination_hand_value_3x3_with_ids():
    # Texts: TEXT rows 0 and 1 are captions of video id 0 (rows 0 and 1), row 2 of id 1.
    texts = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
    ids = [0, 0, 1]
    tau, margin, weight = 0.5, 0.3, 2.0
    cross = gram(texts, VIDEO)
    logits = [[s / tau for s in row] for row in cross]
    positives = [[0, 1], [0, 1], [2]]
    instance = (multi_positive_ce(logits, positives) + multi_positive_ce(transpose(logits), positives)) / 2

    c = gram(texts, texts)  # c01 = 0.6, c02 = 0, c12 = 0.48
    # supcon: rows 0 and 1 have one partner each (each other); row 2 has none.
    supcon_row0 = -(c[0][1] / tau - math.log(math.exp(c[0][1] / tau) + math.exp(c[0][2] / tau)))
    supcon_row1 = -(c[1][0] / tau - math.log(math.exp(c[1][0] / tau) + math.exp(c[1][2] / tau)))
    supcon = (supcon_row0 + supcon_row1) / 2
    # margin: hardest other-video caption: row0 -> c02 = 0, row1 -> c12 = 0.48, row2 -> max(0, 0.48) = 0.48
    hinge = (max(0.0, 0.0 - margin) + max(0.0, 0.48 - margin) + max(0.0, 0.48 - margin)) / 3
    assert hinge == pytest.approx(2 * 0.18 / 3)
    expected = instance + weight * (supcon + hinge)
    loss = DiscriminationLoss(temperature=tau, text_weight=weight, text_margin=margin)
    got = loss(t64(texts), t64(VIDEO), ids=torch.tensor(ids))
    assert got.item() == pytest.approx(expected, rel=1e-12)

    no_margin = DiscriminationLoss(temperature=tau, text_weight=weight, text_margin=None)
    assert no_margin(t64(texts), t64(VIDEO), ids=torch.tensor(ids)).item() == pytest.approx(
        instance + weight * supcon, rel=1e-12
    )
    instance_only = DiscriminationLoss(temperature=tau, text_weight=0.0)
    assert instance_only(t64(texts), t64(VIDEO), ids=torch.tensor(ids)).item() == pytest.approx(instance, rel=1e-12)


def test_discrimination_hand_value_3x3_without_ids():
    texts = [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.6, 0.8]]
    tau, margin = 0.5, 0.3
    logits = [[s / tau for s in row] for row in gram(texts, VIDEO)]
    diagonal = [[0], [1], [2]]
    instance = (multi_positive_ce(logits, diagonal) + multi_positive_ce(transpose(logits), diagonal)) / 2
    # no partners: supcon is 0; hinge on the hardest other caption: 0.6, 0.6, 0.48
    hinge = ((0.6 - margin) + (0.6 - margin) + (0.48 - margin)) / 3
    got = DiscriminationLoss(temperature=tau, text_margin=margin)(t64(texts), t64(VIDEO))
    assert got.item() == pytest.approx(instance + hinge, rel=1e-12)


def test_discrimination_prefers_same_video_together_different_apart():
    ids = torch.tensor([0, 0, 1, 1])
    videos = t64([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    close = 0.1
    good = F.normalize(t64([[1.0, close, 0.0], [1.0, -close, 0.0], [close, 1.0, 0.0], [-close, 1.0, 0.0]]), dim=-1)
    # Same instance-level alignment quality, but captions of the two videos are mixed up in text space:
    # each caption is as close to the other video's captions as to its own.
    bad = F.normalize(t64([[1.0, 0.9, 0.0], [1.0, 0.0, 0.9], [0.9, 1.0, 0.0], [0.0, 1.0, 0.9]]), dim=-1)
    loss = DiscriminationLoss(temperature=0.1)
    assert loss(good, videos, ids=ids) < loss(bad, videos, ids=ids)
    text_only = DiscriminationLoss(temperature=0.1)
    # The text term alone (instance removed by comparing against instance_only) also prefers good.
    instance_only = DiscriminationLoss(temperature=0.1, text_weight=0.0)
    text_good = text_only(good, videos, ids=ids) - instance_only(good, videos, ids=ids)
    text_bad = text_only(bad, videos, ids=ids) - instance_only(bad, videos, ids=ids)
    assert text_good < text_bad


def test_discrimination_gradcheck():
    text = unit_rows(5, 3, seed=30).requires_grad_(True)
    video = unit_rows(5, 3, seed=31).requires_grad_(True)
    loss = DiscriminationLoss(temperature=0.5, text_margin=-0.5)  # negative margin: the hinge is active
    for ids in (torch.tensor([0, 0, 1, 2, 2]), None):
        assert torch.autograd.gradcheck(lambda t, v: loss(t, v, ids=ids), (text, video))


def test_discrimination_bad_inputs():
    with pytest.raises(ValueError, match="temperature"):
        DiscriminationLoss(temperature=0)
    with pytest.raises(ValueError, match="text_embeds has 3 rows but video_embeds has 2"):
        DiscriminationLoss()(t64(TEXT), t64(VIDEO)[:2])
