from pathlib import Path

import pytest

from edge_tune.errors import UserError
from edge_tune.space import find_space, load_space, space_names

VALID = """
model: resnet20
params:
  r: {type: float, low: 0.1, high: 0.7}
  k: {type: int, low: 1, high: 4}
  c: {type: choice, values: [Filters, Channels]}
finetune: {epochs: 1}
schedule:
  version: 1
  pruners:
    p:
      class: L1RankedStructureParameterPruner
      group_type: ${c}
      desired_sparsity: ${r}
      weights: [module.layer1.0.conv1.weight]
  lr_schedulers:
    lr:
      class: StepLR
      step_size: ${k}
  policies:
    - pruner: {instance_name: p}
      epochs: [0]
    - lr_scheduler: {instance_name: lr}
      starting_epoch: 0
      ending_epoch: 3
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_shipped_spaces_load():
    assert "filter_prune" in space_names()
    space = find_space("filter_prune")
    assert set(space.params) == {"stage1_ratio", "stage2_ratio", "stage3_ratio"}
    schedule, _ = space.render({"stage1_ratio": 0.5, "stage2_ratio": 0.25, "stage3_ratio": 0.0})
    assert schedule["pruners"]["stage1_filters"]["desired_sparsity"] == 0.5
    assert schedule["pruners"]["stage3_filters"]["desired_sparsity"] == 0.0


def test_typed_params_render_and_map_to_tune_and_bo(tmp_path):
    space = load_space(write(tmp_path, VALID))
    schedule, finetune = space.render({"r": 0.3, "k": 2, "c": "Channels"})
    assert schedule["pruners"]["p"]["group_type"] == "Channels"
    assert schedule["lr_schedulers"]["lr"]["step_size"] == 2
    assert finetune == {"epochs": 1}
    assert space.bo_bounds() == {"r": (0.1, 0.7), "k": (1, 4, int), "c": ["Filters", "Channels"]}
    domains = space.to_tune()
    assert domains["k"].lower == 1 and domains["k"].upper == 5  # randint's upper bound is exclusive
    assert list(domains["c"].categories) == ["Filters", "Channels"]


def test_unknown_space_lists_the_found_ones():
    with pytest.raises(UserError) as err:
        find_space("nosuch")
    assert "nosuch" in str(err.value) and "filter_prune" in str(err.value)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("desired_sparsity: ${r}", "desired_sparsity: ${undefined}"), "schedule.pruners.p.desired_sparsity"),
        (("low: 0.1, high: 0.7", "low: 0.9, high: 0.7"), "params.r"),  # inverted
        (("low: 0.1, high: 0.7", "low: 0.7, high: 0.7"), "params.r"),  # empty
        (("type: int, low: 1", "type: integer, low: 1"), "params.k.type"),
        (("values: [Filters, Channels]", "values: [Filters]"), "params.c.values"),
        (("model: resnet20", "model: resnet20\nepochs: 3"), "epochs"),
        (("finetune: {epochs: 1}", "finetune: {epochs: 1, lrr: 0.1}"), "finetune.lrr"),
        (("class: L1RankedStructureParameterPruner", "class: MagicPruner"), "schedule.pruners.p.class"),
        (("instance_name: lr}", "instance_name: nosuch}"), "schedule.policies[1].lr_scheduler.instance_name"),
        (("class: StepLR", "class: NoSuchLR"), "schedule.lr_schedulers.lr.class"),
        (("finetune: {epochs: 1}", "finetune: {epochs: 1}\nsearch: {initial_points: 0}"), "search.initial_points"),
        (("finetune: {epochs: 1}", "finetune: {epochs: 1}\nsearch: {num_samples: many}"), "search.num_samples"),
    ],
)
def test_bad_space_names_file_and_key(tmp_path, edit, key):
    path = write(tmp_path, VALID.replace(*edit))
    with pytest.raises(UserError) as err:
        load_space(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


def test_unused_param_is_an_error(tmp_path):
    path = write(tmp_path, VALID.replace("params:\n", "params:\n  spare: {type: float, low: 0, high: 1}\n"))
    with pytest.raises(UserError, match=r"params\.spare"):
        load_space(path)


def test_malformed_yaml_names_file(tmp_path):
    path = write(tmp_path, "params: [unclosed\n")
    with pytest.raises(UserError, match=r"space\.yaml"):
        load_space(path)


@pytest.mark.parametrize(
    ("edit", "line", "words"),
    [
        (
            ("class: L1RankedStructureParameterPruner", "class: SplicingPruner"),
            12,
            "SplicingPruner is not supported",
        ),
        (("      step_size: ${k}", "      step_size: ${k}\n      bogus: 1"), 20, "lr.bogus: unsupported key"),
        (("epochs: [0]", "epochs: zero"), 22, "epochs: must be a list"),
    ],
)
def test_schedule_errors_give_the_line(tmp_path, edit, line, words):
    with pytest.raises(UserError) as err:
        load_space(write(tmp_path, VALID.replace(*edit)))
    assert f"space.yaml, line {line}:" in str(err.value) and words in str(err.value)


def test_weights_input_size_and_normalisation_in_a_space_file(tmp_path):
    text = "weights: nets/w.pt\ninput_size: 40x36\nmean: [0.485, 0.456, 0.406]\nstd: 0.25\n"
    space = load_space(write(tmp_path, text + VALID))
    assert space.weights == (tmp_path / "nets" / "w.pt").resolve() and space.input_size == "40x36"
    assert space.mean == "0.485,0.456,0.406" and space.std == "0.25"  # as the flags --mean and --std take them
    plain = load_space(write(tmp_path, VALID))
    assert plain.weights is None and plain.input_size == "" and plain.mean == plain.std == ""
    for bad, key in (
        ("input_size: 0\n", "input_size"),
        ("input_size: big\n", "input_size"),
        ("weights: 3\n", "weights"),
        ("mean: [0.5, grey]\n", "mean"),
        ("std: {}\n", "std"),
    ):
        with pytest.raises(UserError, match=rf"space\.yaml, line 1: {key}: "):
            load_space(write(tmp_path, bad + VALID))
