import math

import numpy as np
import pytest
import torch

from edgepipe.tasks.losses import DistillationLoss, soft_target_kl


def hand_kd(zs, zt, y, T, alpha):
    """Per-example KL(p_t || p_s) at temperature T, written out with plain math."""
    total_kl, total_ce = 0.0, 0.0
    for s_row, t_row, label in zip(zs, zt, y):
        ps = np.exp(np.array(s_row) / T) / np.exp(np.array(s_row) / T).sum()
        pt = np.exp(np.array(t_row) / T) / np.exp(np.array(t_row) / T).sum()
        total_kl += float((pt * (np.log(pt) - np.log(ps))).sum())
        p1 = np.exp(np.array(s_row)) / np.exp(np.array(s_row)).sum()
        total_ce += -math.log(p1[label])
    n = len(y)
    return alpha * T * T * total_kl / n + (1 - alpha) * total_ce / n, total_kl / n, total_ce / n


@pytest.mark.parametrize("T,alpha", [(1.0, 0.5), (2.0, 0.5), (4.0, 0.9), (3.0, 0.0), (2.0, 1.0)])
def test_kd_loss_matches_hand_computation(T, alpha):
    zs = [[1.0, -0.5, 0.2], [0.3, 2.0, -1.0]]
    zt = [[2.0, -1.0, 0.0], [-0.5, 1.5, 0.5]]
    y = [0, 2]
    want, kl, ce = hand_kd(zs, zt, y, T, alpha)
    got = DistillationLoss(T, alpha)(torch.tensor(zs), torch.tensor(zt), torch.tensor(y))
    assert got["loss"].item() == pytest.approx(want, rel=1e-5)
    assert got["kd"].item() == pytest.approx(T * T * kl, rel=1e-5)
    assert got["ce"].item() == pytest.approx(ce, rel=1e-5)


def test_kd_is_zero_when_student_equals_teacher_and_stable_for_huge_logits():
    z = torch.tensor([[1e4, -1e4], [-3e3, 3e3]])
    out = DistillationLoss(2.0, 1.0)(z, z.clone(), torch.tensor([0, 1]))
    assert torch.isfinite(out["loss"]) and out["loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_state_mse_uses_the_mask_and_projects_narrow_students():
    torch.manual_seed(0)
    loss = DistillationLoss(1.0, 0.5, hidden_weight=2.0, student_width=4, teacher_width=8)
    s = [torch.randn(2, 3, 4)]
    t = [torch.randn(2, 3, 8)]
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    logits = torch.zeros(2, 2)
    out = loss(logits, logits, torch.tensor([0, 1]), s, t, mask)
    proj = loss.project(s[0])
    err = ((proj - t[0]) ** 2).sum(-1)
    want = (err * mask).sum() / (mask.sum() * 8)
    assert out["hidden"].item() == pytest.approx(want.item(), rel=1e-5)
    # padded positions do not matter
    t2 = [t[0].clone()]
    t2[0][0, 2] += 100.0
    assert loss(logits, logits, torch.tensor([0, 1]), s, t2, mask)["hidden"].item() == pytest.approx(
        want.item(), rel=1e-5
    )


def test_texts_without_labels_count_in_the_soft_target_term_only():
    from edgepipe.tokenized import UNLABELED

    torch.manual_seed(0)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    loss = DistillationLoss(temperature=2.0, alpha=0.5)
    labels = torch.tensor([0, 2, UNLABELED, UNLABELED])
    mixed = loss(s, t, labels)
    labelled_only = loss(s[:2], t[:2], labels[:2])
    assert mixed["ce"].item() == pytest.approx(labelled_only["ce"].item())  # CE over the two labelled rows
    assert mixed["kd"].item() == pytest.approx(soft_target_kl(s, t, 2.0).item())  # KL over all four
    none = loss(s, t, torch.full((4,), UNLABELED))
    assert none["ce"].item() == 0.0 and none["loss"].item() == pytest.approx(0.5 * none["kd"].item())
