"""ProCoLoss as a module: the epoch swap, state_dict, seeds, training and eval modes, and the
estimator all-reduce under torch.distributed (two Gloo processes)."""

import copy
import datetime
import io
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import proco


def batch(n, p, c, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, p, generator=g, dtype=torch.float64), dim=1), torch.randint(0, c, (n,), generator=g)


def test_training_mode_updates_both_estimators_and_eval_mode_none():
    crit = proco.ProCoLoss(16, 0.1, 5)
    z, y = batch(20, 16, 5, 0)
    before = crit.get_extra_state()
    crit.eval()
    crit(z, y)
    after_eval = crit.get_extra_state()
    assert all(torch.equal(before[k], after_eval[k]) for k in ("previous_means", "current_means"))
    crit.train()
    crit(z, y)
    state = crit.get_extra_state()
    counts = torch.bincount(y, minlength=5).double()
    assert torch.equal(state["previous_counts"], counts) and torch.equal(state["current_counts"], counts)
    assert not torch.equal(state["previous_means"], before["previous_means"])


def test_the_epoch_hook_swaps_in_the_finished_epoch():
    crit = proco.ProCoLoss(16, 0.1, 5)
    for seed in range(3):
        crit(*batch(20, 16, 5, seed))
    finished = crit.get_extra_state()
    crit._hook_before_epoch(1, 200)
    state = crit.get_extra_state()
    assert torch.equal(state["previous_means"], finished["current_means"])
    assert torch.equal(state["previous_counts"], finished["current_counts"])
    assert torch.equal(state["current_counts"], torch.zeros(5, dtype=torch.float64))
    assert not torch.equal(state["current_means"], finished["current_means"])
    np.testing.assert_allclose(np.linalg.norm(state["current_means"].numpy(), axis=1), 0.9, rtol=1e-12)
    # The authors' reload_memory moves their estimators to the GPU; ours stay as they are.
    crit.reload_memory()
    assert torch.equal(crit.get_extra_state()["previous_counts"], state["previous_counts"])


def test_state_dict_round_trip_gives_the_same_logits_and_later_epochs():
    a = proco.ProCoLoss(32, 0.07, 6, seed=5)
    for seed in range(4):
        a(*batch(24, 32, 6, seed))
    a._hook_before_epoch()
    a(*batch(24, 32, 6, 9))
    b = proco.ProCoLoss(32, 0.07, 6, seed=123)
    b.load_state_dict(a.state_dict())
    z, _ = batch(10, 32, 6, 10)
    assert torch.equal(a.logits(z), b.logits(z))
    a._hook_before_epoch()
    b._hook_before_epoch()
    assert torch.equal(a.get_extra_state()["current_means"], b.get_extra_state()["current_means"])
    # Also through torch.save / torch.load, and onto another device type of the module.
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"proco-state-{os.getpid()}.pt")
    torch.save(a.state_dict(), path)
    c = proco.ProCoLoss(32, 0.07, 6).double()
    c.load_state_dict(torch.load(path))
    os.remove(path)
    assert torch.equal(a.logits(z), c.logits(z))


def test_seeds_decide_the_initial_directions():
    a, b, c = proco.ProCoLoss(8, 0.1, 3, seed=1), proco.ProCoLoss(8, 0.1, 3, seed=1), proco.ProCoLoss(8, 0.1, 3, seed=2)
    assert np.array_equal(a.previous_means, b.previous_means)
    assert not np.array_equal(a.previous_means, c.previous_means)
    assert not np.array_equal(a.previous_means, a.current_means)


def test_class_weights_as_the_authors_module_sets_them():
    crit = proco.ProCoLoss(8, 0.1, 3)
    crit.cal_weight_for_classes([300, 100, 100])
    torch.testing.assert_close(crit.weight, torch.tensor([[0.6, 0.2, 0.2]]))
    with pytest.raises(ValueError, match="3 counts"):
        crit.cal_weight_for_classes([1, 2])


def _rank(rank, world, init_file, out_file):
    import torch.distributed as dist

    # A rank that waited forever on another would fail the test after a minute, not hang it.
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    crit = proco.ProCoLoss(16, 0.1, 5, seed=7)
    for step in range(3):
        z, y = batch(24, 16, 5, step)
        crit(z[rank::world].contiguous(), y[rank::world])
    # A step in which rank 1 has nothing to contribute (a detector rank without foreground).
    z, y = batch(24, 16, 5, 3)
    if rank == 0:
        crit(z, y)
    else:
        crit.update(z[:0], y[:0])
    if rank == 0:
        torch.save(crit.get_extra_state(), out_file)
    dist.barrier()
    dist.destroy_process_group()


def test_two_gloo_ranks_hold_the_estimator_of_the_union_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    two = torch.load(out)
    one = proco.ProCoLoss(16, 0.1, 5, seed=7)
    for step in range(4):
        one(*batch(24, 16, 5, step))
    single = one.get_extra_state()
    for k in ("previous_means", "current_means"):
        torch.testing.assert_close(two[k], single[k], rtol=0, atol=1e-12)
    for k in ("previous_counts", "current_counts"):
        assert torch.equal(two[k], single[k])


def trained_loss(seed=0, p=16, c=5):
    crit = proco.ProCoLoss(p, 0.1, c, seed=seed)
    for step in range(3):
        crit(*batch(24, p, c, step))
    crit._hook_before_epoch(1, 10)
    crit(*batch(24, p, c, 3))
    return crit


def test_the_whole_module_pickles_as_the_authors_script_saves_it():
    """Their script saves the criterion object itself in the checkpoint and calls
    reload_memory() after loading it: the estimators must come back as they were."""
    crit = trained_loss()
    z, _ = batch(6, 16, 5, 9)
    want = crit.logits(z)
    buffer = io.BytesIO()
    torch.save({"criterion_scl": crit}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)["criterion_scl"]
    loaded.reload_memory()
    for other in (loaded, copy.deepcopy(crit)):
        assert torch.equal(other.logits(z), want)
        for k, v in crit.get_extra_state().items():
            got = other.get_extra_state()[k]
            assert torch.equal(got, v) if isinstance(v, torch.Tensor) else got == v


def test_an_empty_batch_changes_nothing():
    crit = trained_loss()
    before = crit.get_extra_state()
    z, y = batch(6, 16, 5, 9)
    crit.update(z[:0], y[:0])
    after = crit.get_extra_state()
    assert all(torch.equal(after[k], before[k]) for k in before if isinstance(before[k], torch.Tensor))


def test_an_in_place_change_between_forward_and_backward_is_refused():
    """CPU float32 features are read without a copy, so backward must not see them changed."""
    crit = trained_loss()
    z = F.normalize(torch.randn(6, 16), dim=1).requires_grad_()
    for inputs in (z, z * 1.0):
        s = crit.logits(inputs)
        with torch.no_grad():
            inputs.mul_(1.0)  # bumps the version counter without changing a value
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            s.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("route", [None, 0], ids=["host-pass", "matrix-product"])
def test_half_precision_features_train_with_classes_seen_once(dtype, route):
    """A class seen once holds that row as its mean; a half-precision row is within the norm
    tolerance but not within rounding of 1, and the estimator must go on working (and
    round-trip through state_dict) all the same."""
    g = torch.Generator().manual_seed(3)
    crit = proco.ProCoLoss(64, 0.1, 40, host_pass_max_work=route)
    for step in range(3):
        # Normalised in float32, then rounded: rows up to ~1e-3 off unit norm (bfloat16).
        z = F.normalize(torch.randn(40, 64, generator=g), dim=1).to(dtype).requires_grad_()
        y = torch.randperm(40, generator=g)  # every class once per batch
        s = crit(z, y)
        F.cross_entropy(s.float(), y).backward()
        assert s.dtype == torch.float32 and z.grad.dtype == dtype and torch.isfinite(z.grad.float()).all()
        crit._hook_before_epoch(step, 3)
    fresh = proco.ProCoLoss(64, 0.1, 40, host_pass_max_work=route)
    fresh.load_state_dict(crit.state_dict())
    torch.testing.assert_close(fresh.logits(z.detach()), crit.logits(z.detach()), rtol=0, atol=0)
