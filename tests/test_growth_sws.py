"""SWS learngenes (weightlab.growth.sws): weight sharing, expansion to untied depth,
the teacher-block control, the distillation loss against torch's KL and inside the loop."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from weightlab.data.task import Split, TaskData
from weightlab.errors import ConfigError
from weightlab.growth.sws import (
    DistillationLoss,
    ResidualMLP,
    StageSharedNet,
    block_params,
    distillation_task,
    forward_flops,
    pack_soft_targets,
    teacher_block_init,
)
from weightlab.models.factory import build
from weightlab.train import train
from weightlab.train.config import OptimConfig, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _aux(seed: int = 0) -> StageSharedNet:
    return build(StageSharedNet, (4, 4, 4), 40, 16, 10, seed=seed)


def test_stage_shared_net_shares_weights_and_names():
    net = _aux()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "stem.weight",
        "stem.bias",
        *[f"stages.{s}.fc{k}.{t}" for s in range(3) for k in (1, 2) for t in ("weight", "bias")],
        "head.weight",
        "head.bias",
    ]
    assert net.depth == 12 and net.num_stages == 3
    # forward = stem, block s applied 4 times per stage, head (by hand)
    x = torch.randn(5, 40)
    h = net.stem(x)
    for s in range(3):
        for _ in range(4):
            blk = net.stages[s]
            h = h + blk.fc2(torch.relu(blk.fc1(h)))
    torch.testing.assert_close(net(x), net.head(h), rtol=0, atol=0)
    # a shared block's gradient sums over its applications: 3 blocks' worth of parameters
    assert sum(p.numel() for n, p in net.named_parameters() if "stages" in n) == 3 * block_params(
        16
    )


@pytest.mark.parametrize("depth", [3, 6, 9, 12])
def test_expand_to_copies_stage_blocks_untied_and_preserves_the_function_at_depth(depth):
    net = _aux()
    big = net.expand_to(depth)
    assert isinstance(big, ResidualMLP) and len(big.blocks) == depth
    per = depth // 3
    for i, blk in enumerate(big.blocks):
        src = net.stages[i // per]
        for k in ("fc1", "fc2"):
            assert torch.equal(getattr(blk, k).weight, getattr(src, k).weight)
            # untied: a copy, not the same storage
            assert getattr(blk, k).weight.data_ptr() != getattr(src, k).weight.data_ptr()
    assert torch.equal(big.stem.weight, net.stem.weight)
    assert torch.equal(big.head.bias, net.head.bias)
    # an expansion with per == the stage's applications computes the shared net exactly
    if depth == 12:
        x = torch.randn(7, 40)
        torch.testing.assert_close(big(x), net(x), rtol=0, atol=0)
    # copies diverge once trained: changing one leaves the others and the learngene alone
    with torch.no_grad():
        big.blocks[0].fc1.weight.add_(1.0)
    assert not torch.equal(big.blocks[0].fc1.weight, net.stages[0].fc1.weight)
    if per > 1:
        assert torch.equal(big.blocks[1].fc1.weight, net.stages[0].fc1.weight)


@pytest.mark.parametrize("depth", [10, 0, -3, 4.5])
def test_expand_to_a_depth_not_divisible_by_the_stage_count_is_one_line(depth):
    with pytest.raises(ConfigError) as e:
        _aux().expand_to(depth)
    msg = str(e.value)
    assert "\n" not in msg and "multiple of the stage count" in msg and "(e.g. 3, 6 or 9)" in msg


def test_teacher_block_init_takes_the_named_blocks():
    teacher = build(ResidualMLP, 12, 40, 16, 10, seed=3)
    net = teacher_block_init(teacher, [2, 6, 10], 6)
    for i, src in enumerate((2, 2, 6, 6, 10, 10)):
        assert torch.equal(net.blocks[i].fc2.weight, teacher.blocks[src].fc2.weight)
    assert torch.equal(net.stem.weight, teacher.stem.weight)
    with pytest.raises(ConfigError, match="do not exist"):
        teacher_block_init(teacher, [2, 6, 12], 6)


def test_distillation_loss_matches_torch_kl_and_cross_entropy():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    loss = DistillationLoss(tau=2.0)(zs, pack_soft_targets(y, zt))
    kl = F.kl_div(
        F.log_softmax(zs / 2, -1), F.log_softmax(zt / 2, -1), log_target=True, reduction="none"
    ).sum(-1)
    ref = 0.5 * F.cross_entropy(zs, y, reduction="none") + 0.5 * 4.0 * kl
    torch.testing.assert_close(loss, ref)
    # a student equal to its teacher pays half the cross-entropy only
    same = DistillationLoss()(zt, pack_soft_targets(y, zt))
    torch.testing.assert_close(same, 0.5 * F.cross_entropy(zt, y, reduction="none"))
    # integer labels (evaluation splits): plain CE; a member dim broadcasts
    torch.testing.assert_close(DistillationLoss()(zs, y), F.cross_entropy(zs, y, reduction="none"))
    pop = DistillationLoss()(torch.stack([zs, zt]), pack_soft_targets(y, zt))
    torch.testing.assert_close(pop[0], loss)
    with pytest.raises(ConfigError, match="1 \\+ 10"):
        DistillationLoss()(zs, torch.zeros(6, 5))


def test_distillation_in_the_loop_moves_the_student_toward_the_teacher():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 40, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    split = Split(x[:192], y[:192])
    data = TaskData("toy", split, Split(x[192:224], y[192:224]), Split(x[224:], y[224:]), 4)
    teacher = build(ResidualMLP, 2, 40, 16, 4, seed=0)
    cfg = TrainConfig(10, 32, 0, OptimConfig("adam", lr=3e-3))
    train(teacher, data, cfg, 0, seed=0)
    dist = distillation_task(data, teacher)
    assert dist.train.y.shape == (192, 5) and torch.equal(dist.train.y[:, 0].long(), y[:192])
    assert torch.equal(dist.val.y, data.val.y)
    student = build(StageSharedNet, (1, 1), 40, 16, 4, seed=1)

    def gap(m):
        with torch.no_grad():
            return float(DistillationLoss()(m(x[:192]), dist.train.y).mean())

    before = gap(student)
    res = train(
        student,
        dist,
        TrainConfig(10, 32, 0, OptimConfig("adam", lr=3e-3), loss=DistillationLoss()),
        0,
        seed=1,
    )
    assert gap(student) < 0.5 * before
    assert res.final.test_acc > 0.5  # evaluated with plain CE on integer labels


def test_parameter_and_flop_counts():
    assert block_params(128) == 33024
    assert sum(p.numel() for p in ResidualMLP(6).parameters()) == 6 * 33024 + 5248 + 1290
    assert forward_flops(40, 128, 10, 12) == 2 * (40 * 128 + 12 * 2 * 128 * 128 + 1280)
