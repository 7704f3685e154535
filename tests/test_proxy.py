"""The batch-norm re-estimation behind the accuracy proxy (proxy.py); its correlation with fine-tuned top-1 is
measured in benchmarks/proxy.py."""

import torch
from torch import nn

from edge_tune.proxy import proxy_top1, recalibrate_batchnorm


def test_statistics_become_the_exact_average_and_the_weights_stay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    model[1].running_mean.fill_(5.0)  # stale, as after pruning
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 1, 6, 6) * 2 + 1 for _ in range(3)]
    assert recalibrate_batchnorm(model, batches) == 24
    conv_out = torch.cat([model[0](x) for x in batches])  # (24, 4, 4, 4)
    per_batch = torch.stack([model[0](x).mean(dim=(0, 2, 3)) for x in batches])
    assert torch.allclose(model[1].running_mean, per_batch.mean(0), atol=1e-5)  # the average of batch means
    assert torch.allclose(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)  # equal batches
    assert model[1].momentum == 0.1 and not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_the_proxy_recovers_what_stale_statistics_lose(digits):
    from edge_tune.models import create_model
    from edge_tune.train import TrainConfig, evaluate, fine_tune

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    fine_tune(model, digits, TrainConfig(epochs=2, lr=0.05, seed=0))
    trained = evaluate(model, digits.val).top1
    for m in model.modules():  # statistics that no longer fit the network, as after pruning
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.add_(3.0)
    stale = evaluate(model, digits.val).top1
    assert stale < trained - 20
    assert proxy_top1(model, digits, images=512) > stale + 20
    assert evaluate(model, digits.val).top1 == stale  # the proxy works on a copy


def test_the_validation_sample_keeps_each_class_share_and_the_images_with_their_labels():
    from edge_tune.data import TensorSplit
    from edge_tune.proxy import validation_sample

    y = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    x = torch.arange(len(y), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
    split = TensorSplit(x, y)
    assert validation_sample(split, 1000) is split  # small enough: the split itself
    sample = validation_sample(split, 200, seed=3)
    assert len(sample) == 200 and sample.image_shape == (1, 2, 2)
    assert torch.bincount(sample.labels).tolist() == [120, 60, 20]
    assert list(sample.indices) == sorted(set(sample.indices))  # distinct, in index order
    assert validation_sample(split, 200, seed=3) == sample and validation_sample(split, 200, seed=4) != sample
    seen = [(xb[:, 0, 0, 0].long(), yb) for xb, yb in sample.batches(64)]
    index = torch.cat([i for i, _ in seen])
    assert index.tolist() == list(sample.indices)  # each image is the split's image at that index ...
    assert torch.equal(torch.cat([yb for _, yb in seen]), y[index])  # ... with its own label
    assert torch.equal(sample.images([0, 199]), x[[sample.indices[0], sample.indices[199]]])
