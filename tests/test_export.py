import pytest
from torch import nn

from edge_tune.compression import PrunerSpec, apply_pruners
from edge_tune.export import ExportMismatch, content_hash, conv_shapes_onnx, structure_hash, to_onnx, verify_export


def prune(model, example, sparsity=0.5):
    spec = PrunerSpec("p", "L1RankedStructureParameterPruner", "Filters", sparsity, ("layer2.0.conv1.weight",))
    apply_pruners(model, [spec], example)


def test_export_of_pruned_model_has_pruned_shapes(resnet20, example):
    prune(resnet20, example)
    onnx_bytes = to_onnx(resnet20, example)
    shapes = verify_export(onnx_bytes, resnet20)
    assert (16, 16, 3, 3) in shapes and (32, 16, 3, 3) in shapes  # layer2.0.conv1 out, layer2.0.conv2 in
    assert len(shapes) == sum(isinstance(m, nn.Conv2d) for m in resnet20.modules())


def test_mismatch_fails_loudly(resnet20, example):
    onnx_bytes = to_onnx(resnet20, example)
    prune(resnet20, example)  # the model changes after export
    with pytest.raises(ExportMismatch, match="does not match"):
        verify_export(onnx_bytes, resnet20)


def test_hashes_separate_structure_from_weights(resnet20, example):
    a = to_onnx(resnet20, example)
    for m in resnet20.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data.mul_(1.5)
    with_other_weights = to_onnx(resnet20, example)
    assert structure_hash(a) == structure_hash(with_other_weights)
    assert content_hash(a) != content_hash(with_other_weights)
    prune(resnet20, example)
    assert structure_hash(to_onnx(resnet20, example)) != structure_hash(a)
    assert conv_shapes_onnx(a) != conv_shapes_onnx(to_onnx(resnet20, example))
