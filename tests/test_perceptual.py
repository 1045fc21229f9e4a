"""The perceptual distances of dadf/losses/perceptual.py on synthetic images, with seeded random VGG19 weights
(no ImageNet weights here; the properties tested do not depend on them)."""
import pytest
import torch

from dadf.losses.perceptual import PerceptualLoss, VGGFeatures, WeightsMissing, channel_stats, load_stats, save_stats

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def vgg():
    return VGGFeatures("random", seed=0)


def _pair(size=32):
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=size, mode="bilinear")
    x = (base * 2 - 1).clamp(-1, 1)
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, y


def test_relative_loss_is_less_sensitive_to_contrast_than_perceptual(vgg):
    """The paper's Figure 1: lowering the contrast of both images of a pair changes rel-perc-L1 less than the
    plain perceptual loss."""
    x, y = _pair()
    low = lambda t: 0.4 * t  # noqa: E731  contrast towards mid-grey (0 in [-1, 1])
    perc, rel = PerceptualLoss("perc", vgg), PerceptualLoss("rel_perc_l1", vgg)
    change = lambda loss: abs(float(loss(low(x), low(y))) / float(loss(x, y)) - 1)  # noqa: E731
    assert change(rel) < change(perc), (change(rel), change(perc))
    assert change(perc) > 0.2  # the plain loss does react strongly to contrast (so the comparison means something)


@pytest.mark.parametrize("mode", ["l2", "perc", "perc_l1", "rel_perc_l1"])
def test_zero_for_identical_inputs_and_gradient_only_to_second_argument(vgg, mode):
    x, y = _pair(16)
    loss = PerceptualLoss(mode, vgg)
    assert torch.allclose(loss(x, x.clone()), torch.zeros(1), atol=1e-6)
    x, y = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    out = loss(x, y)
    assert out.shape == (1,) and float(out.detach()) > 0
    out.sum().backward()
    assert x.grad is None
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_channel_stats_match_a_direct_computation_and_round_trip(vgg, tmp_path):
    imgs = torch.rand(6, 1, 16, 16) * 2 - 1
    mean, std = channel_stats(vgg, imgs, batch_size=4)
    f = vgg(imgs).transpose(0, 1).flatten(1)
    assert torch.allclose(mean, f.mean(1), atol=1e-4)
    assert torch.allclose(std, f.std(1, unbiased=False).clamp_min(1e-6), atol=1e-4)
    save_stats(tmp_path / "s.pt", mean, std, "six random images")
    m2, s2 = load_stats(tmp_path / "s.pt")
    assert torch.equal(m2, mean) and torch.equal(s2, std)
    torch.save({"mean": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="'mean' and 'std' of 512"):
        load_stats(tmp_path / "bad.pt")


def test_missing_weights_say_how_to_provide_them(tmp_path):
    with pytest.raises(WeightsMissing, match="vgg_weights=/path/to/vgg19.pth.*vgg_download=true.*vgg_weights=random"):
        VGGFeatures(str(tmp_path / "nope.pth"))
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # an empty hub cache: no ImageNet weights, no download allowed
    try:
        with pytest.raises(WeightsMissing, match="vgg19-dcbb9e9d.pth"):
            VGGFeatures("imagenet", download=False)
    finally:
        torch.hub.set_dir(old)


def test_bad_inputs_are_named(vgg):
    with pytest.raises(ValueError, match="mode 'nope' unknown"):
        PerceptualLoss("nope", vgg)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        vgg(torch.zeros(1, 2, 16, 16))
