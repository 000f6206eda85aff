"""Temporal group normalization: equivalence with BatchNorm3d (g=1) and with one BatchNorm3d per temporal chunk
(g>1, even and uneven splits, g>T), group independence, SyncBatchNorm conversion, torch.compile tracing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from model import TemporalGroupNorm, build_backbone, convert_sync_batchnorm, temporal_group_sizes, tgn_norm_layer

C = 3


def _randomize_affine(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))


def _inputs(num_frames: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Per-frame offsets and scales so that groups really have different statistics.
    frame_shift = torch.arange(num_frames, dtype=torch.float32).view(1, 1, num_frames, 1, 1)
    return [
        torch.randn(4, C, num_frames, 5, 6, generator=gen) * (1 + frame_shift) + 3 * frame_shift for _ in range(steps)
    ]


@pytest.mark.parametrize(
    ("num_frames", "num_groups", "sizes"),
    [(16, 4, (4, 4, 4, 4)), (5, 2, (3, 2)), (7, 3, (3, 2, 2)), (2, 4, (1, 1, 0, 0)), (4, 1, (4,)), (0, 2, (0, 0))],
)
def test_group_sizes(num_frames: int, num_groups: int, sizes: tuple[int, ...]) -> None:
    assert temporal_group_sizes(num_frames, num_groups) == sizes


@pytest.mark.parametrize("momentum", [0.1, None])
def test_one_group_is_batchnorm3d(momentum: float | None) -> None:
    bn = nn.BatchNorm3d(C, momentum=momentum)
    tgn = TemporalGroupNorm(C, num_groups=1, momentum=momentum)
    _randomize_affine(bn, seed=1)
    tgn.bn.load_state_dict(bn.state_dict())
    # Same state-dict entries as BatchNorm3d, under the "bn." prefix.
    assert list(tgn.state_dict()) == [f"bn.{k}" for k in bn.state_dict()]
    for x in _inputs(8, steps=3):
        x_bn = x.clone().requires_grad_(True)
        x_tgn = x.clone().requires_grad_(True)
        y_bn, y_tgn = bn(x_bn), tgn(x_tgn)
        assert torch.equal(y_bn, y_tgn)
        y_bn.square().sum().backward()
        y_tgn.square().sum().backward()
        assert torch.equal(x_bn.grad, x_tgn.grad)
    for key, value in bn.state_dict().items():
        assert torch.equal(value, tgn.state_dict()[f"bn.{key}"]), key
    assert int(tgn.bn.num_batches_tracked) == 3
    assert torch.equal(bn.weight.grad, tgn.bn.weight.grad)
    bn.eval(), tgn.eval()
    x = _inputs(8, steps=1, seed=5)[0]
    assert torch.equal(bn(x), tgn(x))
    # And a BatchNorm3d checkpoint loads straight into the TGN (and back).
    fresh = TemporalGroupNorm(C, num_groups=1, momentum=momentum).eval()
    fresh.load_state_dict({f"bn.{k}": v for k, v in bn.state_dict().items()})
    assert torch.equal(fresh(x), bn(x))


def _separate_bns(tgn: TemporalGroupNorm) -> list[nn.BatchNorm3d]:
    """One standalone BatchNorm3d per group, initialised from that group's slice of the TGN."""
    bns = []
    for j in range(tgn.num_groups):
        bn = nn.BatchNorm3d(tgn.num_features, momentum=tgn.bn.momentum)
        bn.load_state_dict({**bn.state_dict(), **tgn.group_state(j)})
        bns.append(bn)
    return bns


def _reference(bns: list[nn.BatchNorm3d], x: torch.Tensor) -> torch.Tensor:
    """Chunk time into the documented group sizes, normalize each chunk with its own module, concatenate."""
    sizes = temporal_group_sizes(x.shape[2], len(bns))
    chunks = torch.split(x, [s for s in sizes if s > 0], dim=2)
    return torch.cat([bn(chunk) for bn, chunk in zip(bns, chunks)], dim=2)


@pytest.mark.parametrize(
    ("num_frames", "num_groups"), [(8, 4), (8, 2), (16, 4), (5, 2), (7, 3), (2, 4), (3, 8)]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_groups_equal_separate_batchnorms(num_frames: int, num_groups: int, momentum: float | None) -> None:
    tgn = TemporalGroupNorm(C, num_groups=num_groups, momentum=momentum)
    _randomize_affine(tgn, seed=2)
    bns = _separate_bns(tgn)
    for x in _inputs(num_frames, steps=3):
        x_tgn = x.clone().requires_grad_(True)
        x_ref = x.clone().requires_grad_(True)
        y_tgn, y_ref = tgn(x_tgn), _reference(bns, x_ref)
        torch.testing.assert_close(y_tgn, y_ref, rtol=1e-5, atol=1e-5)
        upstream = torch.randn_like(y_ref)
        (y_tgn * upstream).sum().backward()
        (y_ref * upstream).sum().backward()
        torch.testing.assert_close(x_tgn.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    used = [j for j, size in enumerate(temporal_group_sizes(num_frames, num_groups)) if size > 0]
    assert len(used) == min(num_frames, num_groups)
    for j, bn in enumerate(bns):
        state = tgn.group_state(j)
        if j not in used:  # an empty group (g > T) is never touched
            assert torch.equal(state["running_mean"], torch.zeros(C))
            assert torch.equal(state["running_var"], torch.ones(C))
            assert torch.equal(tgn.bn.weight.grad[j::num_groups], torch.zeros(C))
            continue
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(state[name], getattr(bn, name), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tgn.bn.weight.grad[j::num_groups], bn.weight.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tgn.bn.bias.grad[j::num_groups], bn.bias.grad, rtol=1e-4, atol=1e-5)
    assert int(tgn.bn.num_batches_tracked) == 3
    assert all(int(bn.num_batches_tracked) == 3 for j, bn in enumerate(bns) if j in used)
    # Eval mode: each group uses its own running statistics.
    tgn.eval()
    for bn in bns:
        bn.eval()
    x = _inputs(num_frames, steps=1, seed=9)[0]
    torch.testing.assert_close(tgn(x), _reference(bns, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("num_frames", "num_groups"), [(8, 4), (5, 2)])
def test_inplace_relu_after_tgn_keeps_gradients(num_frames: int, num_groups: int) -> None:
    """The even path returns a non-view tensor; an in-place ReLU on it must still give exact gradients."""
    tgn = TemporalGroupNorm(C, num_groups=num_groups)
    _randomize_affine(tgn, seed=6)
    bns = _separate_bns(tgn)
    x = _inputs(num_frames, steps=1)[0]
    x_tgn = x.clone().requires_grad_(True)
    x_ref = x.clone().requires_grad_(True)
    y_tgn = torch.relu_(tgn(x_tgn))
    y_ref = torch.relu(_reference(bns, x_ref))
    torch.testing.assert_close(y_tgn, y_ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn_like(y_ref)
    (y_tgn * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    torch.testing.assert_close(x_tgn.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for j, bn in enumerate(bns):
        torch.testing.assert_close(tgn.bn.weight.grad[j::num_groups], bn.weight.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("num_frames", "num_groups"), [(8, 4), (5, 2)])
def test_group_statistics_are_independent(num_frames: int, num_groups: int) -> None:
    """Changing the frames of group 1 changes neither the output nor the running stats of group 0."""
    tgn_a = TemporalGroupNorm(C, num_groups=num_groups)
    tgn_b = copy.deepcopy(tgn_a)
    x = _inputs(num_frames, steps=1)[0]
    sizes = temporal_group_sizes(num_frames, num_groups)
    g1 = slice(sizes[0], sizes[0] + sizes[1])
    x_changed = x.clone()
    x_changed[:, :, g1] = 10 * torch.randn_like(x_changed[:, :, g1]) - 7
    y_a, y_b = tgn_a(x), tgn_b(x_changed)
    assert torch.equal(y_a[:, :, : sizes[0]], y_b[:, :, : sizes[0]])
    assert not torch.allclose(y_a[:, :, g1], y_b[:, :, g1])
    state_a, state_b = tgn_a.group_state(0), tgn_b.group_state(0)
    assert torch.equal(state_a["running_mean"], state_b["running_mean"])
    assert torch.equal(state_a["running_var"], state_b["running_var"])
    assert not torch.allclose(tgn_a.group_state(1)["running_mean"], tgn_b.group_state(1)["running_mean"])
    # Sanity: per-group statistics really differ from one BatchNorm3d over all frames.
    assert not torch.allclose(y_a, nn.BatchNorm3d(C)(x), atol=1e-3)


def test_even_split_is_a_view_and_keeps_layout() -> None:
    """Channel c * g + j of the inner BatchNorm is channel c of group j (documented parameter layout)."""
    tgn = TemporalGroupNorm(2, num_groups=2).eval()
    with torch.no_grad():
        tgn.bn.running_mean.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))  # (c0,g0) (c0,g1) (c1,g0) (c1,g1)
    y = tgn(torch.zeros(1, 2, 4, 1, 1))
    expected = -torch.tensor([[10.0, 10, 20, 20], [30, 30, 40, 40]]) / torch.sqrt(torch.tensor(1 + 1e-5))
    torch.testing.assert_close(y[0, :, :, 0, 0], expected)


@pytest.mark.parametrize(("num_frames", "num_groups"), [(8, 4), (5, 2), (8, 1)])
def test_channels_last_input_gives_the_same_result(num_frames: int, num_groups: int) -> None:
    """channels_last_3d input (not viewable as (B, C*g, T/g, H, W): it is copied) normalizes identically."""
    tgn = TemporalGroupNorm(C, num_groups=num_groups)
    other = copy.deepcopy(tgn)
    x = _inputs(num_frames, steps=1)[0]
    y = tgn(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(y, other(x))
    torch.testing.assert_close(tgn.bn.running_var, other.bn.running_var)


def test_rejects_wrong_shapes() -> None:
    tgn = TemporalGroupNorm(4, num_groups=2)
    with pytest.raises(ValueError, match="expects"):
        tgn(torch.zeros(2, 3, 4, 2, 2))
    with pytest.raises(ValueError, match="expects"):
        tgn(torch.zeros(2, 4, 4, 2))
    with pytest.raises(ValueError):
        TemporalGroupNorm(4, num_groups=0)


def test_norm_layer_factory() -> None:
    layer = tgn_norm_layer(3)(8)
    assert isinstance(layer, TemporalGroupNorm)
    assert (layer.num_features, layer.num_groups, layer.bn.num_features) == (8, 3, 24)


def test_convert_sync_batchnorm_keeps_tgn_and_keys() -> None:
    """Conversion swaps TGN's inner BatchNorm3d (and plain ones) for SyncBatchNorm; keys and outputs unchanged.

    (Without an initialised process group SyncBatchNorm falls back to local statistics, which is what is compared;
    real cross-rank synchronisation needs GPUs.)"""
    torch.manual_seed(0)
    model = build_backbone("r2plus1d_18", base_width=4, norm="tgn")
    _randomize_affine(model, seed=3)
    synced = convert_sync_batchnorm(copy.deepcopy(model))
    tgns = [m for m in synced.modules() if isinstance(m, TemporalGroupNorm)]
    assert tgns and all(isinstance(m.bn, nn.SyncBatchNorm) for m in tgns)
    assert not any(type(m) is nn.BatchNorm3d for m in synced.modules())
    assert list(synced.state_dict()) == list(model.state_dict())
    x = torch.randn(2, 3, 8, 32, 32)
    torch.testing.assert_close(synced(x), model(x), rtol=1e-5, atol=1e-5)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(synced.state_dict()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_frames", [8, 5])
def test_traces_under_torch_compile(num_frames: int) -> None:
    """Dynamo + AOTAutograd (functionalised running-stat updates) match eager, train and eval, even and uneven.

    The inductor (C++ codegen) path is covered on a whole backbone in test_model.py::test_torch_compile_backbone."""
    torch._dynamo.reset()
    eager = TemporalGroupNorm(C, num_groups=2)
    _randomize_affine(eager, seed=4)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, backend="aot_eager", fullgraph=True)
    for x in _inputs(num_frames, steps=2):
        x_e = x.clone().requires_grad_(True)
        x_c = x.clone().requires_grad_(True)
        y_e, y_c = torch.relu_(eager(x_e)), torch.relu_(compiled(x_c))
        torch.testing.assert_close(y_c, y_e)
        y_e.square().sum().backward()
        y_c.square().sum().backward()
        torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-4, atol=1e-5)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_module.state_dict()[key], value), key
    eager.eval(), compiled_module.eval()
    x = _inputs(num_frames, steps=1, seed=7)[0]
    torch.testing.assert_close(compiled(x), eager(x))


def _ddp_worker(rank: int, world_size: int, workdir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{workdir}/rendezvous", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # same initial weights on every rank
        model = build_backbone("c3d", base_width=4, norm="tgn")
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp(_ddp_input(rank)).square().mean().backward()
        first_tgn = model.block1[1]
        torch.save(
            {"grads": {n: p.grad for n, p in model.named_parameters()}, "running_mean": first_tgn.bn.running_mean},
            f"{workdir}/rank{rank}.pt",
        )
        del ddp  # its reducer uses the group: gone before the group is
        dist.barrier()  # leave together: a rank whose peer already tore down its gloo pairs can abort at exit
    finally:
        dist.destroy_process_group()


def _ddp_input(rank: int) -> torch.Tensor:
    return torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(100 + rank))


def test_ddp_per_rank_statistics_and_averaged_gradients(tmp_path) -> None:
    """Unconverted TGN under DDP (gloo, 2 CPU processes): each rank normalizes with its own statistics, and the
    all-reduced gradients equal the mean of the two single-process gradients."""
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = []
    for rank in range(2):
        torch.manual_seed(0)
        model = build_backbone("c3d", base_width=4, norm="tgn")
        model(_ddp_input(rank)).square().mean().backward()
        single.append({n: p.grad for n, p in model.named_parameters()})
        torch.testing.assert_close(ranks[rank]["running_mean"], model.block1[1].bn.running_mean)
    assert not torch.allclose(ranks[0]["running_mean"], ranks[1]["running_mean"])
    for name, grad in ranks[0]["grads"].items():
        torch.testing.assert_close(grad, ranks[1]["grads"][name])
        torch.testing.assert_close(grad, (single[0][name] + single[1][name]) / 2, rtol=1e-4, atol=1e-6)
