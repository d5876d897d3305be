import torch

from model import ResNet32, WeightingNet


def test_resnet32_shapes_and_size():
    model = ResNet32(num_classes=10)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    # 0.46 M parameters with option-A shortcuts (He et al., 2016, section 4.2).
    assert sum(p.numel() for p in model.parameters()) == 464_154
    assert ResNet32(num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convolutions) + 1 == 32  # 31 convolutions and the linear layer


def test_resnet32_channels_last_matches():
    model = ResNet32().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_weighting_net_outputs_in_unit_interval():
    net = WeightingNet(hidden_size=100, num_layers=1)
    weights = net(torch.linspace(0, 50, 200).unsqueeze(1))
    assert weights.shape == (200, 1)
    assert ((weights > 0) & (weights < 1)).all()
    assert sum(p.numel() for p in net.parameters()) == 100 + 100 + 100 + 1
    deeper = WeightingNet(hidden_size=8, num_layers=3)
    assert deeper(torch.zeros(5, 1)).shape == (5, 1)
    assert len([m for m in deeper.modules() if isinstance(m, torch.nn.Linear)]) == 4
