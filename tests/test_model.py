"""Backbones, heads, pretext/classifier models, pretrained loading, parameter counts, torch.compile."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import (
    BACKBONES,
    ClassifierHead,
    PretextModel,
    SpeedClassHead,
    SpeedSortHead,
    TemporalGroupNorm,
    VideoClassifier,
    build_backbone,
    load_pretrained_backbone,
    num_orderings,
)

TINY = 4  # base width of the tiny test networks (32 features)
B, K, T, S = 2, 3, 8, 32  # batch, clips per sample, frames, spatial size
NUM_SPEEDS = 8


def _clips(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("norm", ["bn", "tgn"])
@pytest.mark.parametrize("head", ["sort", "speed", "both", "classifier"])
def test_output_shapes(name: str, norm: str, head: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, base_width=TINY, norm=norm)
    assert backbone.out_features == 8 * TINY
    assert any(isinstance(m, TemporalGroupNorm) for m in backbone.modules()) == (norm == "tgn")
    if head == "classifier":
        model = VideoClassifier(backbone, num_classes=5)
        clips = _clips(B, 3, T, S, S)
        assert model(clips).shape == (B, 5)
        assert model.features(clips).shape == (B, 8 * TINY)
        return
    model = PretextModel(backbone, num_clips=K, num_speeds=NUM_SPEEDS, head=head)
    out = model(_clips(B, K, 3, T, S, S))
    expected = {}
    if head in ("sort", "both"):
        expected["order_logits"] = (B, num_orderings(K))
    if head in ("speed", "both"):
        expected["speed_logits"] = (B, K, NUM_SPEEDS)
    assert {key: tuple(value.shape) for key, value in out.items()} == expected
    assert all(torch.isfinite(value).all() for value in out.values())


def test_full_size_feature_shapes() -> None:
    """Full-width networks on a short clip at the real spatial size: 512 features."""
    clip = _clips(1, 3, 2, 112, 112)
    for name in sorted(BACKBONES):
        backbone = build_backbone(name).eval()
        with torch.no_grad():
            assert backbone(clip).shape == (1, 512)


# torchvision's published counts (Weights.meta["num_params"], 400-way Kinetics fc included) minus the fc:
# 512 * 400 + 400 = 205,200 parameters. torchvision itself is not installed here.
TORCHVISION_FC = 512 * 400 + 400
TORCHVISION_NUM_PARAMS = {"r3d_18": 33_371_472, "r2plus1d_18": 31_505_325}


@pytest.mark.parametrize(("name", "expected"), [("r3d_18", 33_166_272), ("r2plus1d_18", 31_300_125)])
def test_parameter_counts_match_torchvision(name: str, expected: int) -> None:
    assert expected == TORCHVISION_NUM_PARAMS[name] - TORCHVISION_FC
    count = _num_params(build_backbone(name, norm="bn"))
    assert abs(count - expected) <= 0.001 * expected
    assert count == expected  # in fact exact


def test_c3d_parameter_count() -> None:
    widths = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(cin * cout * 27 for cin, cout in widths)  # 3x3x3 convs, no bias
    norms = sum(2 * cout for _, cout in widths)  # BatchNorm weight + bias
    assert _num_params(build_backbone("c3d")) == convs + norms == 27_658_688


def test_tgn_adds_only_per_group_affine_parameters() -> None:
    # R3D-18, groups (4, 4, 2, 1, 1): stem 64 ch x 3 extra groups; layer1 4 norms x 64 ch x 3; layer2 5 norms x 128 x 1.
    extra = 2 * (64 * 3 + 4 * 64 * 3 + 5 * 128 * 1)
    assert _num_params(build_backbone("r3d_18", norm="tgn")) == 33_166_272 + extra


def test_torchvision_layout_and_mid_channels() -> None:
    """Module names and shapes follow torchvision (so its Kinetics weights would load into the BN variant)."""
    state = build_backbone("r2plus1d_18").state_dict()
    assert state["stem.0.weight"].shape == (45, 3, 1, 7, 7)
    assert state["stem.3.weight"].shape == (64, 45, 3, 1, 1)
    mid = (64 * 128 * 27) // (64 * 9 + 3 * 128)  # 230, used by both convs of layer2.0 as in torchvision
    assert state["layer2.0.conv1.0.0.weight"].shape == (mid, 64, 1, 3, 3)
    assert state["layer2.0.conv2.0.0.weight"].shape == (mid, 128, 1, 3, 3)
    assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1, 1)
    r3d = build_backbone("r3d_18").state_dict()
    assert r3d["stem.0.weight"].shape == (64, 3, 3, 7, 7)
    assert r3d["layer4.1.conv2.0.weight"].shape == (512, 512, 3, 3, 3)
    tiny = build_backbone("r2plus1d_18", base_width=8).state_dict()
    assert tiny["stem.0.weight"].shape == (6, 3, 1, 7, 7)  # 45 scales with the width: round(45 * 8 / 64)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_default_tgn_groups_divide_stage_lengths(name: str) -> None:
    """With 16-frame clips every TGN sees T = 16, 16, 8, 4, 2 per stage and 4 frames per group where g > 1."""
    backbone = build_backbone(name, base_width=TINY, norm="tgn")
    seen: list[tuple[int, int]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args: seen.append((args[0].shape[2], mod.num_groups)))
        for m in backbone.modules()
        if isinstance(m, TemporalGroupNorm)
    ]
    backbone(_clips(2, 3, 16, S, S))
    for h in hooks:
        h.remove()
    assert seen and all(frames % groups == 0 for frames, groups in seen)
    per_group = {frames // groups for frames, groups in seen if groups > 1}
    # R(2+1)D's first layer2 block normalizes its mid channels before the temporal stride: 16 frames, 2 groups.
    assert per_group == ({4, 8} if name == "r2plus1d_18" else {4})
    assert {frames for frames, _ in seen} == {16, 8, 4, 2}


def test_tgn_groups_argument_reaches_stages() -> None:
    backbone = build_backbone("c3d", base_width=TINY, norm="tgn", tgn_groups=(8, 2, 2, 1, 1))
    assert [m.num_groups for m in backbone.block1.modules() if isinstance(m, TemporalGroupNorm)] == [8]
    assert [m.num_groups for m in backbone.block3.modules() if isinstance(m, TemporalGroupNorm)] == [2, 2]
    with pytest.raises(ValueError, match="5 positive"):
        build_backbone("c3d", norm="tgn", tgn_groups=(4, 4, 2, 1))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match="unknown norm"):
        build_backbone("c3d", norm="gn")


def test_num_orderings() -> None:
    assert [num_orderings(k) for k in (1, 2, 3, 4, 5)] == [1, 2, 6, 24, 120]


def test_sort_head_matches_pairwise_definition() -> None:
    """logits = fc(concat over pairs i<j of relu(pair_fc([f_i, f_j]))), pairs in lexicographic order."""
    torch.manual_seed(0)
    head = SpeedSortHead(5, num_clips=4, hidden=7).eval()
    features = torch.randn(3, 4, 5)
    pair_vectors = [
        F.relu(head.pair_fc(torch.cat([features[:, i], features[:, j]], dim=1)))
        for i, j in itertools.combinations(range(4), 2)
    ]
    expected = head.fc(torch.cat(pair_vectors, dim=1))
    assert head.fc.in_features == 6 * 7 and head.fc.out_features == 24
    torch.testing.assert_close(head(features), expected)
    # Order-sensitive: swapping two clips changes the logits.
    assert not torch.allclose(head(features[:, [1, 0, 2, 3]]), expected)


def test_speed_and_classifier_heads_are_linear_per_item() -> None:
    torch.manual_seed(0)
    speed = SpeedClassHead(6, num_speeds=4).eval()
    features = torch.randn(2, 3, 6)
    torch.testing.assert_close(speed(features), features @ speed.fc.weight.T + speed.fc.bias)
    classifier = ClassifierHead(6, num_classes=9, dropout=0.5).eval()
    torch.testing.assert_close(classifier(features[:, 0]), classifier.fc(features[:, 0]))


def test_pretext_model_runs_backbone_once_over_all_clips() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("r3d_18", base_width=TINY)
    model = PretextModel(backbone, num_clips=K, num_speeds=NUM_SPEEDS, head="speed", dropout=0.0).eval()
    batches: list[int] = []
    backbone.register_forward_hook(lambda mod, args, out: batches.append(args[0].shape[0]))
    clips = _clips(B, K, 3, T, S, S)
    logits = model(clips)["speed_logits"]
    assert batches == [B * K]
    # Clip k of sample b gets the features of backbone(clips[b, k]).
    with torch.no_grad():
        single = model.speed_head(backbone(clips[1, 2:3]))
    torch.testing.assert_close(logits[1, 2], single[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        model(_clips(B, K + 1, 3, T, S, S))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_parameter_gets_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = PretextModel(build_backbone(name, base_width=TINY, norm="tgn"), num_clips=K, num_speeds=NUM_SPEEDS)
    out = model(_clips(B, K, 3, T, S, S))
    order_target = torch.tensor([0, 5])
    speed_target = torch.randint(0, NUM_SPEEDS, (B, K), generator=torch.Generator().manual_seed(1))
    loss = F.cross_entropy(out["order_logits"], order_target) + F.cross_entropy(
        out["speed_logits"].flatten(0, 1), speed_target.flatten()
    )
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def _pretext_state(name: str, norm: str, base_width: int = TINY) -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    model = PretextModel(build_backbone(name, base_width=base_width, norm=norm), num_clips=K, num_speeds=4)
    model(_clips(B, K, 3, T, S, S))  # move running statistics away from their initial values
    return model.state_dict()


def test_load_pretrained_backbone_copies_every_backbone_tensor() -> None:
    state = _pretext_state("r2plus1d_18", "tgn")
    torch.manual_seed(999)
    classifier = VideoClassifier(build_backbone("r2plus1d_18", base_width=TINY, norm="tgn"), num_classes=7)
    head_before = copy.deepcopy(classifier.head.state_dict())
    load_pretrained_backbone(classifier, state)
    loaded = classifier.backbone.state_dict()
    backbone_keys = [k for k in state if k.startswith("backbone.")]
    assert len(backbone_keys) == len(loaded)
    for key in backbone_keys:
        assert torch.equal(loaded[key.removeprefix("backbone.")], state[key]), key
    for key, value in classifier.head.state_dict().items():
        assert torch.equal(value, head_before[key])
    # DDP / torch.compile prefixes are accepted.
    fresh = VideoClassifier(build_backbone("r2plus1d_18", base_width=TINY, norm="tgn"), num_classes=7)
    load_pretrained_backbone(fresh, {f"module._orig_mod.{k}": v for k, v in state.items()})
    for key, value in fresh.backbone.state_dict().items():
        assert torch.equal(value, loaded[key])


def test_load_pretrained_backbone_is_strict_about_backbone_keys() -> None:
    bn_state = _pretext_state("r3d_18", "bn")
    tgn_classifier = VideoClassifier(build_backbone("r3d_18", base_width=TINY, norm="tgn"), num_classes=3)
    with pytest.raises(ValueError, match=r"missing backbone keys.*stem\.1\.bn\.weight"):
        load_pretrained_backbone(tgn_classifier, bn_state)
    wide = VideoClassifier(build_backbone("r3d_18", base_width=8), num_classes=3)
    with pytest.raises(ValueError, match=r"mis-shaped.*stem\.0\.weight"):
        load_pretrained_backbone(wide, bn_state)
    classifier = VideoClassifier(build_backbone("r3d_18", base_width=TINY), num_classes=3)
    with pytest.raises(ValueError, match=r"missing backbone keys.*layer4\.1\.conv2\.1\.running_mean"):
        load_pretrained_backbone(
            classifier, {k: v for k, v in bn_state.items() if k != "backbone.layer4.1.conv2.1.running_mean"}
        )
    with pytest.raises(ValueError, match=r"unexpected backbone keys.*backbone\.extra"):
        load_pretrained_backbone(classifier, {**bn_state, "backbone.extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"neither backbone.*optimizer_thing"):
        load_pretrained_backbone(classifier, {**bn_state, "optimizer_thing": torch.zeros(1)})
    # A bare backbone state dict (no "backbone." prefix) is refused rather than silently ignored.
    with pytest.raises(ValueError, match="missing backbone keys"):
        load_pretrained_backbone(classifier, classifier.backbone.state_dict())


@pytest.mark.slow
def test_torch_compile_backbone() -> None:
    """Inductor (C++ codegen with the system gcc) on a tiny C3D with TGN, train mode: output and running stats
    equal eager. Parameters are frozen so only a forward graph is compiled (keeps the test near 40 s on 2 cores)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = build_backbone("c3d", base_width=TINY, norm="tgn").requires_grad_(False)
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module)
    clips = _clips(B, 3, T, S, S)
    torch.testing.assert_close(compiled(clips), eager(clips), rtol=1e-4, atol=1e-4)
    for key, value in eager.state_dict().items():
        torch.testing.assert_close(compiled_module.state_dict()[key], value, rtol=1e-5, atol=1e-6), key
    assert int(compiled_module.block1[1].bn.num_batches_tracked) == 1


def test_bench_cli_prints_one_row_per_backbone(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import model as bench

    bench.main(["--backbones", "c3d,r3d_18", "--batch", "2", "--frames", "8", "--size", "32",
                "--base-width", "2", "--repeats", "1", "--warmup", "0"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| c3d", "| r3d_18"))]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 7 and all(float(cell) > 0 for cell in cells[1:])
