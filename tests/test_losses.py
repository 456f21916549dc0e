import math

import torch

from gasp.losses import depth_consistency, geometric_losses, info_nce, mean_over_valid, pairwise_logits


def _two_token_case():
    # B=1, F=2 (anchor + one target), N=2 tokens, D=2.
    s = 1 / math.sqrt(2)
    emb = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [3.0, 3.0]]]])  # target rows not normalised
    match_index = torch.tensor([[[0, 1], [0, 1]]])
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    token_depth = torch.tensor([[[1.0, 1.0], [2.0, 4.0]]])
    match_depth = torch.tensor([[[1.0, 1.0], [2.0, 4.0]]])
    return s, emb, match_index, valid, token_depth, match_depth


def test_info_nce_hand_computed():
    s, emb, mi, valid, td, md = _two_token_case()
    tau = 0.5
    out = geometric_losses(emb, mi, valid, md, td, tau=tau)
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(s / tau)))
    l1 = -math.log(math.exp(s / tau) / (math.exp(0.0) + math.exp(s / tau)))
    assert torch.allclose(out.corr, torch.tensor([(l0 + l1) / 2]), atol=1e-6)
    assert out.corr_count.tolist() == [2]


def test_depth_consistency_hand_computed():
    s, emb, mi, valid, td, md = _two_token_case()
    tau, eps = 0.5, 1e-6
    out = geometric_losses(emb, mi, valid, md, td, tau=tau, eps=eps)
    losses = []
    for row, d in (((1.0, s), 2.0), ((0.0, s), 4.0)):
        w = [math.exp(r / tau) for r in row]
        d_hat = (2.0 * w[0] + 4.0 * w[1]) / sum(w)
        losses.append(abs(d - d_hat) / (d + d_hat + eps))
    assert torch.allclose(out.depth, torch.tensor([sum(losses) / 2]), atol=1e-6)
    assert out.depth_count.tolist() == [2]


def test_invalid_anchor_is_ignored_whatever_its_index():
    _, emb, mi, valid, td, md = _two_token_case()
    valid = valid.clone()
    valid[0, 1, 1] = False
    a = geometric_losses(emb, mi, valid, md, td, tau=0.3)
    mi2 = mi.clone()
    mi2[0, 1, 1] = -1
    md2 = md.clone()
    md2[0, 1, 1] = 0.0
    b = geometric_losses(emb, mi2, valid, md2, td, tau=0.3)
    assert torch.equal(a.corr, b.corr) and torch.equal(a.depth, b.depth)
    assert a.corr_count.tolist() == [1]
    # Only anchor 0 is left: the loss equals its per-anchor value.
    logits = pairwise_logits(emb[:, 0], emb[:, 1], 0.3)
    per_anchor = info_nce(logits, mi[:, 1], valid[:, 1])
    assert per_anchor[0, 1] == 0 and torch.allclose(a.corr, per_anchor[:, 0])


def test_anchor_frame_itself_is_not_a_target_and_frames_are_pooled():
    torch.manual_seed(0)
    emb = torch.randn(1, 3, 4, 5)
    mi = torch.randint(0, 4, (1, 3, 4))
    valid = torch.rand(1, 3, 4) > 0.3
    valid[0, 1] = True
    td = torch.rand(1, 3, 4) + 0.5
    md = torch.rand(1, 3, 4) + 0.5
    out = geometric_losses(emb, mi, valid, md, td, tau=0.2)
    # Changing the anchor frame's own targets must not change anything.
    mi2, v2 = mi.clone(), valid.clone()
    mi2[:, 0] = (mi2[:, 0] + 1) % 4
    v2[:, 0] = ~v2[:, 0]
    out2 = geometric_losses(emb, mi2, v2, md, td, tau=0.2)
    assert torch.equal(out.corr, out2.corr)
    # Pooled mean over (frame, anchor) pairs.
    per = [info_nce(pairwise_logits(emb[:, 0], emb[:, f], 0.2), mi[:, f], valid[:, f]) for f in (1, 2)]
    expected = (per[0].sum() + per[1].sum()) / (valid[:, 1].sum() + valid[:, 2].sum())
    assert torch.allclose(out.corr, expected.reshape(1), atol=1e-6)


def test_depth_ignores_target_tokens_without_depth():
    logits = torch.tensor([[[0.0, 5.0, 0.0]]])  # anchor 0 attends mostly to token 1
    target_depth = torch.tensor([[2.0, 0.0, 6.0]])  # token 1 has no depth: excluded from the softmax
    loss, ok = depth_consistency(logits, target_depth, torch.tensor([[4.0]]), torch.tensor([[True]]), eps=0.0)
    assert ok.all()
    assert torch.allclose(loss, torch.zeros(1, 1), atol=1e-6)  # d_hat = (2 + 6) / 2 = 4


def test_no_valid_correspondence_gives_zero_finite_loss_and_gradient():
    emb = torch.randn(2, 3, 4, 8, requires_grad=True)
    mi = torch.full((2, 3, 4), -1)
    valid = torch.zeros(2, 3, 4, dtype=torch.bool)
    valid[1, 1, 2] = True
    mi[1, 1, 2] = 3
    td = torch.zeros(2, 3, 4)  # no depth anywhere: depth loss has no valid point
    md = torch.zeros(2, 3, 4)
    out = geometric_losses(emb, mi, valid, md, td, tau=0.1)
    assert out.corr_count.tolist() == [0, 1] and out.depth_count.tolist() == [0, 0]
    assert out.corr[0] == 0 and out.corr[1] > 0 and torch.all(out.depth == 0)
    total = mean_over_valid(out.corr, out.corr_count) + mean_over_valid(out.depth, out.depth_count)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(emb.grad).all()
    assert torch.all(emb.grad[0] == 0) and emb.grad[1].abs().sum() > 0
    assert torch.allclose(total, out.corr[1])


def test_perfect_embeddings_drive_losses_down():
    n = 6
    eye = torch.eye(n)
    emb = torch.stack([eye, eye]).unsqueeze(0)  # target token i == anchor token i
    mi = torch.arange(n).reshape(1, 1, n).repeat(1, 2, 1)
    valid = torch.ones(1, 2, n, dtype=torch.bool)
    depth = torch.arange(1, n + 1, dtype=torch.float32).reshape(1, 1, n).repeat(1, 2, 1)
    sharp = geometric_losses(emb, mi, valid, depth, depth, tau=0.01)
    soft = geometric_losses(emb, mi, valid, depth, depth, tau=1.0)
    assert sharp.corr < 1e-6 and sharp.depth < 1e-6
    assert soft.corr > 0.5 and soft.depth > 0.05
