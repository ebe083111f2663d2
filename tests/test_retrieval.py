"""Retrieval metrics against hand-computed values and a plain sort-based reference."""

import math

import numpy as np
import pytest
import torch

from modeling_mckd import retrieval
from modeling_mckd.retrieval import compute_ranks, dual_softmax, evaluate_retrieval, qb_norm, retrieval_metrics


POLICIES = ("pessimistic", "optimistic", "mean")


# --------------------------------------------------------------------------------------------
# Reference: sort each row (the slow, obvious way) and read positions off the ordering.
# --------------------------------------------------------------------------------------------


def reference_positions(row, relevant, policy):
    """1-based positions of the relevant items in the sorted row, ascending.

    pessimistic: among equal scores, non-relevant items come first; optimistic: relevant first;
    mean: the average of the two orderings' positions."""
    relevant = set(int(r) for r in relevant)

    def positions(relevant_first):
        order = sorted(range(len(row)), key=lambda g: (-row[g], (g not in relevant) if relevant_first else (g in relevant)))
        return [pos + 1 for pos, g in enumerate(order) if g in relevant]

    if policy == "pessimistic":
        return positions(relevant_first=False)
    if policy == "optimistic":
        return positions(relevant_first=True)
    return [(a + b) / 2 for a, b in zip(positions(False), positions(True))]


def reference_rank_and_ap(matrix, relevant_sets, policy):
    ranks, aps = [], []
    for row, relevant in zip(np.asarray(matrix, dtype=np.float64).tolist(), relevant_sets):
        pos = reference_positions(row, relevant, policy)
        ranks.append(pos[0] - 1)
        aps.append(sum((i + 1) / p for i, p in enumerate(pos)) / len(pos))
    return np.array(ranks, dtype=np.float64), np.array(aps)


def random_sets(rng, num_queries, num_gallery, max_size):
    return [list(rng.choice(num_gallery, size=rng.integers(1, max_size + 1), replace=False)) for _ in range(num_queries)]


@pytest.fixture(params=["numpy-count", "torch-count"])
def counting_kernel(request, monkeypatch):
    """Run a test through both counting kernels (numpy on CPU; the torch one GPUs use)."""
    monkeypatch.setattr(retrieval, "_CPU_COUNT_WITH_NUMPY", request.param == "numpy-count")
    return request.param


# --------------------------------------------------------------------------------------------
# Hand-made examples
# --------------------------------------------------------------------------------------------


def test_hand_example_3x3():
    similarity = np.array([[0.9, 0.1, 0.3],
                           [0.2, 0.8, 0.85],  # item 2 beats the relevant item 1: rank 1
                           [0.5, 0.4, 0.45]])  # item 0 beats the relevant item 2: rank 1
    ranks = compute_ranks(similarity, [0, 1, 2])
    assert ranks.tolist() == [0, 1, 1]
    metrics = retrieval_metrics(ranks, k_values=(1, 2, 5))
    assert metrics["R@1"] == pytest.approx(100 / 3)
    assert metrics["R@2"] == pytest.approx(100.0)
    assert metrics["R@5"] == pytest.approx(100.0)
    assert metrics["MdR"] == 2.0
    assert metrics["MnR"] == pytest.approx(5 / 3)
    assert "mAP" not in metrics


def test_ties_follow_policy():
    row = [[1.0, 1.0, 1.0, 0.0]]  # relevant item 0 ties with two others
    assert compute_ranks(row, [0], "pessimistic").tolist() == [2]
    assert compute_ranks(row, [0], "optimistic").tolist() == [0]
    assert compute_ranks(row, [0], "mean").tolist() == [1.0]
    # R@K with half-integer mean ranks: 1-based rank 2.5 is not within the top 2.
    assert retrieval_metrics([1.5], k_values=(2, 3))["R@2"] == 0.0
    assert retrieval_metrics([1.5], k_values=(2, 3))["R@3"] == 100.0


def test_average_precision_hand_example():
    # Relevant items 1 and 3 at positions 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5.
    ranks, ap = compute_ranks([[0.9, 0.8, 0.7, 0.6, 0.5]], [[1, 3]], return_average_precision=True)
    assert ranks.tolist() == [1]
    assert ap.tolist() == [pytest.approx(0.5)]
    # Ties: relevant 0 and 3 tie with non-relevant 1 (score 1); non-relevant 2 is below.
    row, relevant = [[1.0, 1.0, 0.0, 1.0]], [[0, 3]]
    expected = {"pessimistic": (1, (1 / 2 + 2 / 3) / 2),  # positions 2, 3
                "optimistic": (0, 1.0),  # positions 1, 2
                "mean": (0.5, (1 / 1.5 + 2 / 2.5) / 2)}  # positions 1.5, 2.5
    for policy, (rank, average_precision) in expected.items():
        ranks, ap = compute_ranks(row, relevant, policy, return_average_precision=True)
        assert ranks.tolist() == [rank]
        assert ap[0] == pytest.approx(average_precision)
    metrics = retrieval_metrics([1, 0], average_precision=[0.5, 1.0])
    assert metrics["mAP"] == pytest.approx(75.0)


def test_single_relevant_average_precision_is_reciprocal_rank():
    ranks, ap = compute_ranks([[0.1, 0.5, 0.3], [0.9, 0.5, 0.3]], [2, 2], return_average_precision=True)
    assert ranks.tolist() == [1, 2]
    assert ap.tolist() == pytest.approx([1 / 2, 1 / 3])


def test_video_to_text_uses_best_caption_hand_example():
    # 4 captions, 2 videos: captions 0, 1 describe video 0; captions 2, 3 describe video 1.
    similarity = np.array([[0.1, 0.9],   # caption 0 -> video 0 at rank 1
                           [0.8, 0.2],   # caption 1 -> video 0 at rank 0
                           [0.7, 0.6],   # caption 2 -> video 1 at rank 1
                           [0.3, 0.4]])  # caption 3 -> video 1 at rank 0
    metrics = evaluate_retrieval(similarity=similarity, text_to_video=[0, 0, 1, 1], k_values=(1,))
    # t2v ranks [1, 0, 1, 0]: R@1 = 50, MdR = median(2, 1, 2, 1) = 1.5, MnR = 1.5.
    assert metrics["t2v_R@1"] == 50.0
    assert metrics["t2v_MdR"] == 1.5
    assert metrics["t2v_MnR"] == 1.5
    # Video 0 scores captions [0.1, 0.8, 0.7, 0.3]: best caption 1 is first -> rank 0;
    # AP over captions {0, 1} at positions 1 and 4: (1/1 + 2/4) / 2 = 0.75.
    # Video 1 scores captions [0.9, 0.2, 0.6, 0.4]: best caption 2 is behind caption 0 -> rank 1;
    # AP over captions {2, 3} at positions 2 and 3: (1/2 + 2/3) / 2 = 7/12.
    assert metrics["v2t_R@1"] == 50.0
    assert metrics["v2t_MdR"] == 1.5
    assert metrics["v2t_mAP"] == pytest.approx(100 * (0.75 + 7 / 12) / 2)
    assert metrics["num_texts"] == 4 and metrics["num_videos"] == 2
    # rsum: R@1+R@5+R@10 of both directions even when only R@1 is asked for.
    assert metrics["rsum"] == pytest.approx(50 + 100 + 100 + 50 + 100 + 100)
    assert "t2v_R@5" not in metrics


# --------------------------------------------------------------------------------------------
# Against the sort-based reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("integer_scores", [True, False], ids=["forced-ties", "continuous"])
def test_single_relevant_matches_reference(policy, integer_scores, counting_kernel):
    rng = np.random.default_rng(1)
    similarity = rng.integers(0, 4, size=(37, 29)).astype(np.float32) if integer_scores else rng.standard_normal((37, 29))
    relevant = rng.integers(0, 29, size=37)
    expected, expected_ap = reference_rank_and_ap(similarity, [[r] for r in relevant], policy)
    for chunk_size in (1, 5, 1024):
        ranks, ap = compute_ranks(similarity, relevant, policy, chunk_size, return_average_precision=True)
        np.testing.assert_array_equal(ranks, expected)
        np.testing.assert_allclose(ap, expected_ap, rtol=1e-12)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("integer_scores", [True, False], ids=["forced-ties", "continuous"])
def test_multi_relevant_matches_reference(policy, integer_scores, counting_kernel):
    rng = np.random.default_rng(2)
    similarity = rng.integers(0, 3, size=(31, 23)) if integer_scores else rng.standard_normal((31, 23)).astype(np.float32)
    relevant = random_sets(rng, 31, 23, max_size=6)
    expected, expected_ap = reference_rank_and_ap(similarity, relevant, policy)
    for chunk_size in (3, 1024):
        only_ranks = compute_ranks(torch.as_tensor(similarity), relevant, policy, chunk_size)
        ranks, ap = compute_ranks(similarity, relevant, policy, chunk_size, return_average_precision=True)
        np.testing.assert_array_equal(only_ranks, expected)
        np.testing.assert_array_equal(ranks, expected)
        np.testing.assert_allclose(ap, expected_ap, rtol=1e-12)


@pytest.mark.parametrize("policy", POLICIES)
def test_multi_relevant_good_model_matches_reference(policy, counting_kernel):
    """Relevant items mostly on top: few items can be ahead of any of them (the sparse path)."""
    rng = np.random.default_rng(12)
    similarity = rng.integers(0, 10, size=(29, 60)).astype(np.float64)
    relevant = random_sets(rng, 29, 60, max_size=5)
    for query, items in enumerate(relevant):
        distractors = rng.choice(np.setdiff1d(np.arange(60), items), size=2, replace=False)
        similarity[query, items] = 10 + rng.integers(0, 4, size=len(items))
        similarity[query, distractors] = 10 + rng.integers(0, 4, size=2)  # ahead of or tied with relevant ones
    # At most 7 of 60 items per row reach the lowest relevant score: well under the dense cut-off.
    expected, expected_ap = reference_rank_and_ap(similarity, relevant, policy)
    assert (expected > 0).any() and (expected == 0).any() and (expected_ap < 1).sum() > (expected > 0).sum()
    for chunk_size in (4, 1024):
        ranks, ap = compute_ranks(similarity, relevant, policy, chunk_size, return_average_precision=True)
        np.testing.assert_array_equal(ranks, expected)
        np.testing.assert_allclose(ap, expected_ap, rtol=1e-12)


@pytest.mark.parametrize("policy", POLICIES)
def test_large_relevant_sets_match_reference(policy, counting_kernel):
    """Sets longer than the binary-search cut-off (64), with ties and a few small sets in the same chunk."""
    rng = np.random.default_rng(13)
    similarity = rng.integers(0, 6, size=(9, 150)).astype(np.float32)
    relevant = [list(rng.choice(150, size=size, replace=False)) for size in (1, 70, 90, 3, 149, 66, 2, 80, 100)]
    expected, expected_ap = reference_rank_and_ap(similarity, relevant, policy)
    for chunk_size in (4, 1024):
        ranks, ap = compute_ranks(similarity, relevant, policy, chunk_size, return_average_precision=True)
        np.testing.assert_array_equal(ranks, expected)
        np.testing.assert_allclose(ap, expected_ap, rtol=1e-12)


def test_relevant_input_forms_agree():
    rng = np.random.default_rng(3)
    similarity = rng.standard_normal((6, 9))
    targets = [4, 0, 8, 2, 2, 5]
    expected = compute_ranks(similarity, targets)
    np.testing.assert_array_equal(compute_ranks(similarity, np.array(targets)), expected)
    np.testing.assert_array_equal(compute_ranks(similarity, torch.tensor(targets)), expected)
    np.testing.assert_array_equal(compute_ranks(similarity, [[t] for t in targets]), expected)
    pairs = np.array([[4, 1], [0, 3], [8, 7], [2, 6], [2, 0], [5, 1]])
    ref, ref_ap = reference_rank_and_ap(similarity, pairs.tolist(), "pessimistic")
    ranks, ap = compute_ranks(similarity, pairs, return_average_precision=True)
    np.testing.assert_array_equal(ranks, ref)
    np.testing.assert_allclose(ap, ref_ap)


def multi_caption_case(seed, num_videos=9, dim=6):
    """Integer-valued embeddings (exact float products, many ties) and 1-4 captions per video."""
    rng = np.random.default_rng(seed)
    captions_per_video = rng.integers(1, 5, size=num_videos)
    text_to_video = rng.permutation(np.repeat(np.arange(num_videos), captions_per_video))
    videos = rng.integers(-2, 3, size=(num_videos, dim)).astype(np.float32)
    texts = (videos[text_to_video] + rng.integers(-2, 3, size=(len(text_to_video), dim))).astype(np.float32)
    return texts, videos, text_to_video


@pytest.mark.parametrize("policy", POLICIES)
def test_evaluate_retrieval_matches_reference_both_directions(policy, counting_kernel):
    texts, videos, text_to_video = multi_caption_case(seed=4)
    similarity = texts.astype(np.float64) @ videos.T.astype(np.float64)
    t2v_ranks, _ = reference_rank_and_ap(similarity, [[v] for v in text_to_video], policy)
    captions = [np.flatnonzero(text_to_video == v).tolist() for v in range(len(videos))]
    v2t_ranks, v2t_ap = reference_rank_and_ap(similarity.T, captions, policy)
    expected = {}
    for prefix, ranks in (("t2v_", t2v_ranks), ("v2t_", v2t_ranks)):
        for k in (1, 5, 10):
            expected[f"{prefix}R@{k}"] = 100 * np.mean(ranks + 1 <= k)
        expected[f"{prefix}MdR"] = np.median(ranks) + 1
        expected[f"{prefix}MnR"] = np.mean(ranks) + 1
    expected["v2t_mAP"] = 100 * v2t_ap.mean()
    expected["rsum"] = sum(expected[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    got = evaluate_retrieval(texts, videos, text_to_video, tie_policy=policy, chunk_size=4)
    assert set(got) == set(expected) | {"num_texts", "num_videos"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["num_texts"] == len(texts) and got["num_videos"] == len(videos)


def test_chunked_equals_unchunked_and_embeddings_equal_similarity():
    texts, videos, text_to_video = multi_caption_case(seed=5, num_videos=11)
    bank = np.random.default_rng(6).integers(-2, 3, size=(7, texts.shape[1])).astype(np.float32)
    video_bank = np.random.default_rng(7).integers(-2, 3, size=(5, texts.shape[1])).astype(np.float32)
    options = dict(renormalization=["dsl", "qb_norm"], dsl_temperature=0.5, qb_norm_beta=0.5)
    whole = evaluate_retrieval(texts, videos, text_to_video, chunk_size=1024, query_bank=bank,
                               video_query_bank=video_bank, **options)
    chunked = evaluate_retrieval(torch.as_tensor(texts), torch.as_tensor(videos), torch.as_tensor(text_to_video),
                                 chunk_size=3, query_bank=bank, video_query_bank=video_bank, **options)
    from_similarity = evaluate_retrieval(similarity=texts @ videos.T, text_to_video=text_to_video, chunk_size=3,
                                         query_bank=bank @ videos.T, video_query_bank=video_bank @ texts.T, **options)
    assert chunked == whole
    assert from_similarity == whole
    assert {"dsl_rsum", "qb_norm_rsum", "dsl_v2t_mAP", "qb_norm_t2v_R@1"} <= set(whole)
    plain = evaluate_retrieval(texts, videos, text_to_video)
    assert {key: whole[key] for key in plain} == plain  # re-normalised keys never replace plain ones


def test_dtypes_and_device_argument():
    texts, videos, text_to_video = multi_caption_case(seed=8)
    expected = evaluate_retrieval(texts, videos, text_to_video)
    assert evaluate_retrieval(torch.as_tensor(texts).half(), torch.as_tensor(videos).half(), text_to_video,
                              device="cpu") == expected
    assert evaluate_retrieval(similarity=(texts @ videos.T).astype(np.int64), text_to_video=text_to_video) == expected


def test_one_caption_per_video_defaults_to_identity():
    rng = np.random.default_rng(9)
    similarity = rng.standard_normal((8, 8))
    metrics = evaluate_retrieval(similarity=similarity)
    ranks = reference_rank_and_ap(similarity, [[i] for i in range(8)], "pessimistic")[0]
    assert metrics["t2v_MnR"] == pytest.approx(ranks.mean() + 1)
    v2t_ranks, v2t_ap = reference_rank_and_ap(similarity.T, [[i] for i in range(8)], "pessimistic")
    assert metrics["v2t_MnR"] == pytest.approx(v2t_ranks.mean() + 1)
    assert metrics["v2t_mAP"] == pytest.approx(100 * np.mean(1 / (v2t_ranks + 1)))


# --------------------------------------------------------------------------------------------
# Re-normalisations
# --------------------------------------------------------------------------------------------


def test_dual_softmax_hand_example():
    e = math.e
    result = dual_softmax(np.array([[2.0, 1.0], [1.0, 3.0]]), temperature=1.0)
    # Each column is re-weighted by a softmax over the queries (rows) of that column.
    expected = [[2 * e / (e + 1), 1 / (1 + e ** 2)], [1 / (e + 1), 3 * e ** 2 / (1 + e ** 2)]]
    np.testing.assert_allclose(result, expected, rtol=1e-12)
    assert isinstance(dual_softmax(torch.tensor([[2.0, 1.0], [1.0, 3.0]]), temperature=1.0), torch.Tensor)


def test_dual_softmax_fixes_a_hub_video():
    # Video 0 is a hub: text 1 prefers it, though text 1 describes video 1.
    similarity = np.array([[0.9, 0.1], [0.7, 0.6]])
    # temperature 0.1: column 0 prior softmax([9, 7]), column 1 prior softmax([1, 6]).
    prior_text1_video0 = math.exp(7) / (math.exp(9) + math.exp(7))
    prior_text1_video1 = math.exp(6) / (math.exp(1) + math.exp(6))
    assert 0.7 * prior_text1_video0 < 0.6 * prior_text1_video1
    metrics = evaluate_retrieval(similarity=similarity, renormalization="dsl", dsl_temperature=0.1)
    assert metrics["t2v_R@1"] == 50.0
    assert metrics["dsl_t2v_R@1"] == 100.0
    np.testing.assert_array_equal(compute_ranks(dual_softmax(similarity, 0.1), [0, 1]), [0, 0])


def test_qb_norm_hand_example():
    bank = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]])  # both bank queries' top-1 is item 0
    similarity = np.array([[0.8, 0.7, 0.1],   # top-1 is item 0 (activated) -> normalised
                           [0.2, 0.9, 0.3]])  # top-1 is item 1 (not activated) -> unchanged
    e = math.exp
    z = [e(1.0) + e(0.9), e(0.0) + e(0.1), e(0.0) + e(0.0)]  # sum over the bank, beta = 1
    expected_row0 = [e(0.8) / z[0], e(0.7) / z[1], e(0.1) / z[2]]  # ~ [0.430, 0.957, 0.553]
    result = qb_norm(similarity, bank, k=1, beta=1.0)
    np.testing.assert_allclose(result[0], expected_row0, rtol=1e-12)
    np.testing.assert_array_equal(result[1], similarity[1])
    np.testing.assert_allclose(qb_norm(similarity, bank, k=1, beta=1.0, log_space=True)[0], np.log(expected_row0),
                               rtol=1e-12)
    # With k=2 item 1 is activated too (second of both bank rows), so row 1 is normalised.
    np.testing.assert_allclose(qb_norm(similarity, bank, k=2, beta=1.0)[1], [e(0.2) / z[0], e(0.9) / z[1], e(0.3) / z[2]])
    # The hub item 0 loses its first place for query 0: the rank of item 1 becomes 0.
    assert compute_ranks(similarity, [1, 1]).tolist() == [1, 0]
    assert compute_ranks(result, [1, 1]).tolist() == [0, 0]
    # Texts 0, 1 describe video 1; text 2 video 2; text 3 video 0, whose normalised row is
    # [e(1) / z0, e(0) / z1, e(-0.5) / z2] ~ [0.525, 0.475, 0.303]: still a hit.
    four_texts = np.vstack([similarity, [[0.1, 0.2, 0.9], [1.0, 0.0, -0.5]]])
    metrics = evaluate_retrieval(similarity=four_texts, text_to_video=[1, 1, 2, 0], renormalization="qb_norm",
                                 query_bank=bank, qb_norm_beta=1.0)
    assert metrics["t2v_R@1"] == pytest.approx(75.0)
    assert metrics["qb_norm_t2v_R@1"] == pytest.approx(100.0)
    assert "qb_norm_v2t_R@1" not in metrics and "qb_norm_rsum" not in metrics  # no video bank given


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_shape_errors():
    texts, videos = np.zeros((4, 3), np.float32), np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="text_embeds has dimension 3, video_embeds has dimension 5"):
        evaluate_retrieval(texts, videos, [0, 0, 1, 1])
    videos = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="text_to_video has 3 entries but there are 4 texts"):
        evaluate_retrieval(texts, videos, [0, 0, 1])
    with pytest.raises(ValueError, match=r"text_to_video\[2\] = 7 is out of range for 2 videos"):
        evaluate_retrieval(texts, videos, [0, 0, 7, 1])
    with pytest.raises(ValueError, match="video 1 has no caption in text_to_video"):
        evaluate_retrieval(texts, videos, [0, 0, 0, 0])
    with pytest.raises(ValueError, match="text_to_video is required"):
        evaluate_retrieval(texts, videos)
    with pytest.raises(ValueError, match="must be 2-D"):
        compute_ranks(np.zeros(5), [0])
    with pytest.raises(ValueError, match="relevant gives 2 queries but the similarity has 3 rows"):
        compute_ranks(np.zeros((3, 4)), [0, 1])
    with pytest.raises(ValueError, match="rectangular"):
        compute_ranks([[0.1, 0.2], [0.3]], [0, 0])
    with pytest.raises(ValueError, match="either similarity or"):
        evaluate_retrieval(texts, videos, similarity=np.zeros((4, 2)))


def test_relevant_set_errors():
    similarity = np.zeros((3, 4))
    with pytest.raises(ValueError, match="relevant set of query 1 is empty"):
        compute_ranks(similarity, [[0], [], [2]])
    with pytest.raises(ValueError, match=r"relevant\[2\] contains 4, outside the gallery of 4 items"):
        compute_ranks(similarity, [[0], [1], [2, 4]])
    with pytest.raises(ValueError, match=r"relevant\[1\] contains -1"):
        compute_ranks(similarity, [0, -1, 2])
    with pytest.raises(ValueError, match=r"relevant\[0\] lists gallery item 3 more than once"):
        compute_ranks(similarity, [[3, 3], [1], [2]])
    with pytest.raises(ValueError, match=r"relevant\[0\] = 0.0 is not an integer gallery index"):
        compute_ranks(similarity, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="relevant must hold integer gallery indices, got dtype float64"):
        compute_ranks(similarity, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"relevant\[1\] is a single index while other queries give a list"):
        compute_ranks(similarity, [[0], 1, [2]])


def test_non_finite_score_errors():
    similarity = np.zeros((20, 4), np.float32)
    similarity[12, 2] = np.nan
    with pytest.raises(ValueError, match=r"similarity row 12 contains NaN \(first at column 2\)"):
        compute_ranks(similarity, [0] * 20, chunk_size=5)
    similarity[12, 2] = np.inf
    with pytest.raises(ValueError, match="similarity row 12 contains inf"):
        evaluate_retrieval(similarity=similarity, text_to_video=np.arange(20) % 4)
    texts = np.ones((6, 3), np.float32)
    texts[3, 1] = -np.inf
    with pytest.raises(ValueError, match="text_embeds row 3 contains -inf"):
        evaluate_retrieval(texts, np.ones((3, 3), np.float32), [0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="similarity row 1 contains NaN"):
        dual_softmax(np.array([[0.0, 1.0], [np.nan, 0.0]]))


def test_argument_errors():
    with pytest.raises(ValueError, match="tie_policy must be one of"):
        compute_ranks(np.zeros((2, 2)), [0, 1], tie_policy="random")
    with pytest.raises(ValueError, match="k_values must be positive integers"):
        retrieval_metrics([0, 1], k_values=(0,))
    with pytest.raises(ValueError, match="renormalization must be None or among"):
        evaluate_retrieval(similarity=np.zeros((2, 2)), renormalization="softmax")
    with pytest.raises(ValueError, match="needs query_bank"):
        evaluate_retrieval(similarity=np.eye(2), renormalization="qb_norm")
    with pytest.raises(ValueError, match="query_bank has 3 columns but there are 2 test videos"):
        evaluate_retrieval(similarity=np.eye(2), renormalization="qb_norm", query_bank=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        compute_ranks(np.zeros((2, 2)), [0, 1], chunk_size=0)
