"""Grad-CAM against its closed form, against captum, and for the gradient paths losses rely on."""
import pytest
import torch
from torch import nn

from domainbed_align.explain.gradcam import grad_cam, normalize_cam, saliency_map, upsample_cam


class ConvGapLinear(nn.Module):
    """conv features -> global average pool -> linear: Grad-CAM has a closed form here."""

    def __init__(self, in_ch: int = 3, width: int = 6, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_ch, 8, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(8, width, 3, padding=1))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def gap_model():
    torch.manual_seed(0)
    return ConvGapLinear().eval()


def test_closed_form(gap_model):
    x = torch.randn(5, 3, 9, 7)
    y = torch.tensor([0, 1, 2, 3, 1])
    cam, logits = grad_cam(gap_model, gap_model.features, x, y)
    with torch.no_grad():
        A = gap_model.features(x)  # (B, C, h, w)
        h, w = A.shape[-2:]
        alpha = gap_model.head.weight[y] / (h * w)  # (B, C)
        expected = (alpha[:, :, None, None] * A).sum(1)
    assert cam.shape == (5, 9, 7)
    torch.testing.assert_close(cam, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, gap_model(x))


@pytest.mark.parametrize("create_graph", [False, True])
def test_matches_captum_on_resnet(create_graph):
    captum_attr = pytest.importorskip("captum.attr")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    y = torch.tensor([0, 3, 4])
    cam, _ = grad_cam(model, model.layer4, x, y, create_graph=create_graph)
    ref = captum_attr.LayerGradCam(model, model.layer4).attribute(
        x, target=y, relu_attributions=False)  # (B, 1, h, w)
    assert cam.shape == ref.shape[:1] + ref.shape[2:]
    assert (cam.detach() - ref[:, 0]).abs().max() < 1e-5


def test_create_graph_reaches_head_only_when_asked(gap_model):
    gap_model.train()
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    params = dict(gap_model.named_parameters())

    cam, _ = grad_cam(gap_model, gap_model.features, x, y, create_graph=True)
    grads = torch.autograd.grad(cam.pow(2).mean(), list(params.values()), allow_unused=True)
    grads = dict(zip(params, grads))
    assert grads["head.weight"] is not None and grads["head.weight"].abs().sum() > 0
    assert grads["features.0.weight"].abs().sum() > 0

    cam, _ = grad_cam(gap_model, gap_model.features, x, y, create_graph=False)
    grads = torch.autograd.grad(cam.pow(2).mean(), list(params.values()), allow_unused=True)
    grads = dict(zip(params, grads))
    assert grads["head.weight"] is None or grads["head.weight"].abs().sum() == 0
    assert grads["features.0.weight"].abs().sum() > 0

    cam, _ = grad_cam(gap_model, gap_model.features, x, y, create_graph=True,
                      detach_weights=True)
    grads = torch.autograd.grad(cam.pow(2).mean(), list(params.values()), allow_unused=True)
    grads = dict(zip(params, grads))
    assert grads["head.weight"] is None or grads["head.weight"].abs().sum() == 0
    assert grads["features.0.weight"].abs().sum() > 0


def test_logits_reusable_for_ce(gap_model):
    """One forward serves CE and the CAM loss, back-propagated together once."""
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    cam, logits = grad_cam(gap_model, gap_model.features, x, y, create_graph=True)
    loss = nn.functional.cross_entropy(logits, y) + cam.abs().mean()
    loss.backward()
    assert all(p.grad is not None for p in gap_model.parameters())


def test_no_grad_leak_and_modes(gap_model):
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    for train in (False, True):
        gap_model.train(train)
        for create_graph in (False, True):
            grad_cam(gap_model, gap_model.features, x, y, create_graph=create_graph)
    assert all(p.grad is None for p in gap_model.parameters())
    assert not gap_model._forward_hooks and not gap_model.features._forward_hooks


def test_works_under_no_grad_and_frozen(gap_model):
    x = torch.randn(2, 3, 8, 8)
    y = torch.tensor([1, 2])
    ref, _ = grad_cam(gap_model, gap_model.features, x, y)
    with torch.no_grad():
        cam, logits = grad_cam(gap_model, gap_model.features, x, y)
    torch.testing.assert_close(cam, ref)
    for p in gap_model.parameters():
        p.requires_grad_(False)
    cam, _ = grad_cam(gap_model, gap_model.features, x, y)
    torch.testing.assert_close(cam, ref)


def test_inplace_relu_after_layer():
    """A ReLU(inplace=True) right after the CAM layer must not corrupt A."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    x = torch.randn(2, 3, 6, 6)
    y = torch.tensor([0, 2])
    cam, _ = grad_cam(model, conv, x, y)
    with torch.no_grad():
        A = conv(x)
        dA = (A > 0).float() * model[4].weight[y][:, :, None, None] / 36
        expected = (dA.mean(dim=(2, 3), keepdim=True) * A).sum(1)
    torch.testing.assert_close(cam, expected)


def test_helpers_and_saliency(gap_model):
    cam = torch.randn(3, 4, 5)
    n = normalize_cam(cam)
    assert n.shape == cam.shape
    assert torch.allclose(n.flatten(1).min(1).values, torch.zeros(3))
    assert torch.allclose(n.flatten(1).max(1).values, torch.ones(3), atol=1e-6)
    assert normalize_cam(torch.zeros(2, 3, 3)).eq(0).all()
    assert upsample_cam(cam, (8, 10)).shape == (3, 8, 10)

    x = torch.randn(4, 3, 8, 8)
    s, logits = saliency_map(gap_model, gap_model.features, x)
    assert s.shape == (4, 8, 8) and not s.requires_grad and not logits.requires_grad
    assert s.min() >= 0 and s.max() <= 1
    pred_cam, _ = grad_cam(gap_model, gap_model.features, x, logits.argmax(1), relu=True)
    torch.testing.assert_close(s, normalize_cam(upsample_cam(pred_cam, (8, 8))))
