"""2-process (gloo, CPU) ContrastiveLoss: parameter gradients averaged over ranks, as DDP does,
equal the gradients of one process on the concatenated global batch.

Each case runs a tiny pair of Linear "encoders" (plus an audio one for the multimodal helper and a
learnable logit scale). The single-process reference is computed in the parent process (no
process group); the two ranks are started once with torch.multiprocessing and run every case.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from modeling_mckd.losses import (
    ContrastiveLoss,
    DiscriminationLoss,
    DistillationLoss,
    RankingLoss,
    multimodal_contrastive_loss,
)


WORLD_SIZE = 2
GLOBAL_BATCH = 8
IN_DIM, OUT_DIM = 5, 4

# name -> (loss kwargs, ids of the global batch or None, rows of rank 0 (rank 1 gets the rest), multimodal)
CASES = {
    "local_loss": (dict(), None, 4, False),
    # ids shared across ranks: video 1 has rows on both ranks, video 3 on rank 1 only.
    "multi_positive_across_ranks": (dict(), [0, 1, 2, 1, 1, 3, 4, 3], 4, False),
    "full_loss_gather_with_grad": (dict(local_loss=False), [0, 1, 2, 1, 1, 3, 4, 3], 4, False),
    "full_loss_no_grad_gather": (dict(local_loss=False, gather_with_grad=False), None, 4, False),
    "unequal_batches": (dict(), [0, 1, 2, 1, 1, 3, 4, 3], 3, False),
    "unequal_batches_full_loss": (dict(local_loss=False), None, 5, False),
    "multimodal": (dict(), [0, 1, 2, 1, 1, 3, 4, 3], 4, True),
    "asymmetric": (dict(symmetric=False), None, 4, False),
}


def build_model():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {
            "text": torch.nn.Linear(IN_DIM, OUT_DIM),
            "video": torch.nn.Linear(IN_DIM, OUT_DIM),
            "audio": torch.nn.Linear(IN_DIM, OUT_DIM),
        }
    ).double()
    model.log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0), dtype=torch.float64))
    return model


def global_inputs():
    generator = torch.Generator().manual_seed(1)
    return {name: torch.randn(GLOBAL_BATCH, IN_DIM, generator=generator, dtype=torch.float64)
            for name in ("text", "video", "audio")}


def loss_and_grads(case, rows, ids):
    """Loss value and parameter gradients for the rows ``rows`` of the global batch."""
    kwargs, _, _, multimodal = CASES[case]
    model = build_model()
    inputs = global_inputs()
    embeds = {name: F.normalize(model[name](inputs[name][rows]), dim=-1) for name in inputs}
    scale = model.log_scale.exp()
    loss_fn = ContrastiveLoss(**kwargs)
    if multimodal:
        loss, _ = multimodal_contrastive_loss(embeds, scale, ids=ids, loss_fn=loss_fn)
    else:
        loss = loss_fn(embeds["text"], embeds["video"], scale, ids=ids)
    loss.backward()
    grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in model.named_parameters()}
    return loss.detach(), grads


STUDENT_IDS = [0, 1, 2, 1, 1, 3, 4, 3]


def student_loss_and_grads(rows):
    """The student objective's losses (ranking, kl distillation from a fixed teacher, discrimination) on the rows
    ``rows`` of the global batch. They are in-batch: nothing is gathered across ranks."""
    model = build_model()
    inputs = global_inputs()
    text = F.normalize(model["text"](inputs["text"][rows]), dim=-1)
    video = F.normalize(model["video"](inputs["video"][rows]), dim=-1)
    generator = torch.Generator().manual_seed(2)
    teacher = {name: F.normalize(torch.randn(GLOBAL_BATCH, OUT_DIM, generator=generator, dtype=torch.float64), dim=-1)
               for name in ("text", "video")}
    ids = torch.tensor(STUDENT_IDS)[rows]
    loss = (RankingLoss(margin=0.2, negatives="hardest")(text, video, ids=ids)
            + DistillationLoss(mode="kl", temperature=0.05)(text, video, teacher["text"][rows], teacher["video"][rows])
            + DiscriminationLoss(temperature=0.05)(text, video, ids=ids))
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def worker(rank, init_file, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        output = {}
        for case, (_, ids, rank0_rows, _) in CASES.items():
            rows = slice(0, rank0_rows) if rank == 0 else slice(rank0_rows, GLOBAL_BATCH)
            local_ids = None if ids is None else torch.tensor(ids)[rows]
            loss, grads = loss_and_grads(case, rows, local_ids)
            # What DDP does: average the gradients over ranks.
            for grad in grads.values():
                dist.all_reduce(grad)
                grad /= WORLD_SIZE
            dist.all_reduce(loss)
            output[case] = (loss / WORLD_SIZE, grads)
        grads = student_loss_and_grads(slice(0, 4) if rank == 0 else slice(4, GLOBAL_BATCH))
        for grad in grads.values():
            dist.all_reduce(grad)
            grad /= WORLD_SIZE
        output["student"] = grads
        # Ranks that disagree on passing ids fail together with a clear error instead of hanging.
        features = F.normalize(torch.randn(3, OUT_DIM, dtype=torch.float64), dim=-1)
        try:
            ContrastiveLoss()(features, features, 1.0, ids=torch.arange(3) if rank == 0 else None)
            output["mismatch_error"] = ""
        except ValueError as error:
            output["mismatch_error"] = str(error)
        if rank == 0:
            torch.save(output, result_file)
        # Leave together: a rank tearing gloo down while its peer is still connected can abort.
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    result_file = folder / "results.pt"
    mp.start_processes(worker, args=(str(folder / "init"), str(result_file)), nprocs=WORLD_SIZE, start_method="spawn")
    return torch.load(result_file, weights_only=True)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process(distributed_results, case):
    _, ids, _, _ = CASES[case]
    reference_loss, reference = loss_and_grads(case, slice(0, GLOBAL_BATCH), None if ids is None else torch.tensor(ids))
    loss, grads = distributed_results[case]
    # the mean over ranks of the returned values is the single-process loss
    assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-10)
    assert set(grads) == set(reference)
    checked = 0
    for name, expected in reference.items():
        got = grads[name]
        assert (got - expected).abs().max().item() < 1e-5, name
        checked += int(expected.abs().max().item() > 1e-6)
    # the audio encoder only matters in the multimodal case; everything else must be exercised
    assert checked >= (7 if CASES[case][3] else 5)


def test_ranks_disagreeing_on_ids_raise(distributed_results):
    assert "ranks disagree" in distributed_results["mismatch_error"]


def test_reference_depends_on_ids():
    """Guard for the test itself: the multi-positive case is not the single-positive one."""
    _, with_ids = loss_and_grads("multi_positive_across_ranks", slice(0, GLOBAL_BATCH), torch.tensor(CASES["multi_positive_across_ranks"][1]))
    _, without = loss_and_grads("local_loss", slice(0, GLOBAL_BATCH), None)
    assert max((with_ids[k] - without[k]).abs().max().item() for k in with_ids) > 1e-3


def test_student_losses_average_the_ranks_half_batch_gradients(distributed_results):
    """The reference a 2-process distillation run is held to (tests/test_training.py): the student's losses are
    per rank, so DDP's average is the mean of the two half-batches' gradients (one process accumulating them),
    not the gradient on the global batch (the hardest negative and the softmaxes see only the rank's rows)."""
    halves = [student_loss_and_grads(slice(0, 4)), student_loss_and_grads(slice(4, GLOBAL_BATCH))]
    whole = student_loss_and_grads(slice(0, GLOBAL_BATCH))
    got = distributed_results["student"]
    assert set(got) == set(halves[0]) == {"text.weight", "text.bias", "video.weight", "video.bias"}
    for name, grad in got.items():
        torch.testing.assert_close(grad, (halves[0][name] + halves[1][name]) / 2, rtol=0, atol=1e-12, msg=name)
    assert max((got[name] - whole[name]).abs().max().item() for name in got) > 1e-3
