import math

import torch
import torch.nn.functional as F

from dva.dpt import dpt_loss
from dva.losses import contrastive_margin, proxy_logits, proxy_nca_pp


def test_proxy_nca_pp_hand_computed():
    # Two unit embeddings, two proxies at 0 and 90 degrees; scale 3 -> logits 18*cos - 18.
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    proxies = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # norms do not matter
    labels = torch.tensor([0, 1])
    z = proxy_logits(emb, proxies, scale=3.0)
    torch.testing.assert_close(z, torch.tensor([[0.0, -18.0], [18 * 0.6 - 18, 18 * 0.8 - 18]]))
    l0 = -math.log(math.exp(0) / (math.exp(0) + math.exp(-18)))
    l1 = -math.log(math.exp(18 * 0.8) / (math.exp(18 * 0.6) + math.exp(18 * 0.8)))
    torch.testing.assert_close(proxy_nca_pp(emb, labels, proxies), torch.tensor((l0 + l1) / 2))
    per = proxy_nca_pp(emb, labels, proxies, reduction="none")
    torch.testing.assert_close(per, torch.tensor([l0, l1]))


def test_proxy_nca_pp_equals_softmax_of_18_cos():
    torch.manual_seed(0)
    emb, prox = torch.randn(6, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    cos = F.normalize(emb, dim=1) @ F.normalize(prox, dim=1).t()
    torch.testing.assert_close(proxy_nca_pp(emb, labels, prox), F.cross_entropy(18 * cos, labels))


def test_contrastive_margin_hand_computed():
    emb = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # positives (0,1),(1,0): cos 0.8 -> 1-0.8 = 0.2 each; negatives (0,2),(2,0): cos 0 -> 0;
    # (1,2),(2,1): cos 0.6 -> 0.6-0.3 = 0.3. Means: 0.2 + (0+0+0.3+0.3)/4 = 0.35
    torch.testing.assert_close(contrastive_margin(emb, labels, 0.3), torch.tensor(0.35))


def test_contrastive_margin_no_positive_pairs():
    emb = torch.eye(3)
    torch.testing.assert_close(contrastive_margin(emb, torch.tensor([0, 1, 2])), torch.tensor(0.0))


def test_dpt_zero_when_teacher_equals_student():
    torch.manual_seed(0)
    e, p = torch.randn(5, 16), torch.randn(7, 16)
    assert float(dpt_loss(e, e.clone(), p, tau=3.0)) < 1e-6
    assert float(dpt_loss(e, e.clone(), p, tau=3.0, w_cos=1.0)) < 1e-6


def test_dpt_hand_computed_and_gradient_only_to_student():
    emb_s = torch.tensor([[1.0, 0.0]], requires_grad=True)
    emb_t = torch.tensor([[0.0, 1.0]], requires_grad=True)
    prox = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 3.0
    zs = torch.tensor([0.0, -18.0]) / tau
    zt = torch.tensor([-18.0, 0.0]) / tau
    pt, ps = zt.softmax(0), zs.softmax(0)
    expected = tau**2 * float((pt * (pt.log() - ps.log())).sum())
    loss = dpt_loss(emb_s, emb_t, prox, tau=tau)
    assert abs(float(loss) - expected) < 1e-4
    loss.backward()
    assert emb_t.grad is None and emb_s.grad is not None and emb_s.grad.abs().sum() > 0
