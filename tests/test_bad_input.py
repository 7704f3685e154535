"""Bad input of every kind, as a user (or someone hostile) would give it, through the real CLI's ``main``.

Each case must exit 2 with one message naming the file, flag or key at fault, and no traceback; the test
counts how many are refused before Ray starts and before a baseline is trained, and prints the counts.
A case that got past the checks would start Ray and run a real smoke search: it would be seen, not faked.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import torch
from conftest import REPO
from test_weights import USER_MODELS as WEIGHTS_USER_MODELS
from torch import nn

SPACE = (REPO / "search_spaces" / "filter_prune.yaml").read_text()
RECIPE = (REPO / "tests" / "data" / "distiller" / "slimming.yaml").read_text()

USER_MODELS = WEIGHTS_USER_MODELS + "not_callable = 3\n"  # the contract tests' models, and one more


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled",))


def _files(d: Path) -> dict[str, Path]:
    """The bad files the cases name, written once into ``d``."""
    f: dict[str, Path] = {}

    def write(name: str, text: str) -> None:
        f[name] = d / name
        f[name].write_text(text)

    write("undefined_param.yaml", SPACE.replace("${stage2_ratio}", "${stage9_ratio}"))
    write(
        "low_above_high.yaml", SPACE.replace("{type: float, low: 0.0, high: 0.9}", "{type: float, low: 0.9, high: 0.1}")
    )
    write("unknown_type.yaml", SPACE.replace("stage1_ratio: {type: float", "stage1_ratio: {type: real"))
    write("bad_yaml.yaml", SPACE.replace("params:", "params: [", 1))
    write("a_list.yaml", "- 1\n- 2\n")
    write("unused_param.yaml", SPACE.replace("params:\n", "params:\n  unused: {type: float, low: 0.0, high: 0.5}\n"))
    write("unknown_pruner.yaml", SPACE.replace("class: L1RankedStructureParameterPruner", "class: NoSuchPruner", 1))
    write("refused_pruner.yaml", SPACE.replace("class: L1RankedStructureParameterPruner", "class: SplicingPruner", 1))
    write("wrong_weight.yaml", SPACE.replace("module.layer1.0.conv1.weight", "module.layer9.0.conv1.weight"))
    write("unknown_model.yaml", SPACE.replace("model: resnet20", "model: resnet21"))
    write("unknown_dataset.yaml", SPACE.replace("dataset: digits\n\nparams", "dataset: mnist9\n\nparams"))
    write("late_policy.yaml", SPACE.replace("      epochs: [0]\n", "      epochs: [7]\n", 1))
    write("bad_arg.yaml", SPACE.replace("group_type: Filters", "group_type: Rows", 1))
    write("refused_arg.yaml", SPACE.replace("group_type: Filters", "group_type: Filters\n      levels: {a: 1}", 1))
    write("recipe.yaml", RECIPE)
    write("devices_not_a_list.yaml", SPACE.replace("dataset: digits\n", "dataset: digits\ndevices: {CPU: 1}\n", 1))
    write("recipe_bad_weight.yaml", RECIPE.replace("module.layer1.0.bn2.weight", "module.layer1.0.bn9.weight"))
    write("recipe_no_policies.yaml", RECIPE.split("policies:")[0])
    write("recipe_list.yaml", "- a\n")
    write("user_models.py", USER_MODELS)
    write("user_broken.py", 'raise RuntimeError("no GPU here")\n')
    f["garbage.pt"] = d / "garbage.pt"
    f["garbage.pt"].write_bytes(b"\x00" * 100)
    f["code.pt"] = d / "code.pt"
    torch.save(nn.Linear(2, 2), f["code.pt"])
    f["exploit.pt"] = d / "exploit.pt"
    f["exploit.pt"].write_bytes(__import__("pickle").dumps(_Exploit()))
    f["resnet32.pt"] = d / "resnet32.pt"
    torch.save({k: v[:1].clone() for k, v in nn.Conv2d(3, 4, 3).state_dict().items()}, f["resnet32.pt"])
    f["empty.pt"] = d / "empty.pt"
    f["empty.pt"].write_bytes(b"")
    for name in ("empty_dir", "images_one_class/a", "idx_garbage", "cifar_empty"):
        (d / name).mkdir(parents=True)
    f["empty_dir"], f["cifar_empty"], f["idx_garbage"] = d / "empty_dir", d / "cifar_empty", d / "idx_garbage"
    (d / "images_one_class" / "a" / "x.png").write_bytes(b"not a png")
    f["images_one_class"] = d / "images_one_class"
    (d / "idx_garbage" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    f["no_run_file"] = d / "no_run_file"
    f["no_run_file"].mkdir()
    for name, text in [
        ("damaged_run", '{"argv": ["--space", "filter_'),
        ("run_not_a_dict", "[1, 2]"),
        ("run_bad_argv", json.dumps({"argv": ["--nosuch"], "space": "filter_prune", "cwd": "/"})),
        ("run_not_recorded", json.dumps({"argv": ["--space", "filter_prune"], "space": "filter_prune", "cwd": "/"})),
    ]:
        (d / name).mkdir()
        (d / name / "edge_tune_run.json").write_text(text)
        f[name] = d / name
    f["a_file"] = REPO / "README.md"
    return f


def _cases(f: dict[str, Path], tmp: Path) -> list[tuple[str, list[str], str]]:
    """(what, argv, what the message must name). argv is completed with a smoke run's flags."""
    fp = ["--space", "filter_prune"]
    return [
        # flags: their form
        ("abbreviated flag", [*fp, "--smok"], "--smok"),
        ("unknown flag", [*fp, "--nosuch"], "--nosuch"),
        ("a number that is not one", [*fp, "--num-samples", "many"], "--num-samples"),
        ("a searcher that is not one", [*fp, "--searcher", "hyperband"], "--searcher"),
        ("a W&B mode that is not one", [*fp, "--wandb", "sometimes"], "--wandb"),
        ("an objective that is not one", [*fp, "--objective", "fastest"], "--objective"),
        ("neither --space nor --schedule", ["--smoke"], "--space"),
        ("both --space and --schedule", [*fp, "--schedule", str(f["recipe.yaml"])], "--schedule"),
        ("--trust-folder without --resume", [*fp, "--trust-folder"], "--trust-folder"),
        ("--resume with another flag", ["--resume", str(f["damaged_run"]), "--epochs", "2"], "--resume"),
        # flags: values that parse but make no sense
        ("no trials", [*fp, "--num-samples", "0"], "--num-samples"),
        ("no concurrency", [*fp, "--max-concurrent", "0"], "--max-concurrent"),
        ("no devices", [*fp, "--devices", "0"], "--devices"),
        ("no fine-tuning epochs", [*fp, "--epochs", "0"], "--epochs"),
        ("nothing to screen", [*fp, "--searcher", "sieve", "--screen", "0"], "--screen"),
        ("confirmation in part-candidates", [*fp, "--num-samples", "8", "--confirm", "3"], "--confirm-seeds"),
        ("confirmation of every trial", [*fp, "--num-samples", "4", "--confirm", "4", "--confirm-seeds", "1"],
         "--confirm 4"),
        ("confirmation without repeats", [*fp, "--confirm-seeds", "0"], "--confirm-seeds"),
        ("confirmation with a negative margin", [*fp, "--confirm-margin", "-1"], "--confirm-margin"),
        ("an ONNX Runtime provider not here", [*fp, "--device", "ort:NoSuch"], "ort:CPU"),
        ("ONNX Runtime at bf16", [*fp, "--device", "ort:CPU", "--precision", "bf16"], "--precision bf16"),
        ("ONNX Runtime and INT8", ["--space", "filter_prune_int8", "--device", "ort:CPU"], "schedule.quantizers"),
        ("ONNX Runtime beside, and INT8", ["--space", "filter_prune_int8", "--also-device", "ort:CPU"],
         "--also-device ort:CPU"),
        ("a kind measured twice", [*fp, "--device", "CPU", "--also-device", "cpu"], "--also-device cpu"),
        ("another kind not here", [*fp, "--also-device", "ort:NoSuch"], "--also-device ort:NoSuch"),
        ("the worst of one kind", [*fp, "--speedup-of", "worst"], "--speedup-of worst"),
        ("a devices list that is not one", ["--space", str(f["devices_not_a_list.yaml"])], "devices"),
        ("confirmation of a fixed schedule", ["--schedule", str(f["recipe.yaml"]), "--confirm", "2"], "--confirm 2"),
        ("sieve where no architecture is fixed", ["--space", "fine_grained_agp", "--searcher", "sieve"], "sieve"),
        ("sieve without the constraint", [*fp, "--searcher", "sieve", "--objective", "combined"], "sieve"),
        ("negative baseline epochs", [*fp, "--baseline-epochs", "-1"], "--baseline-epochs"),
        ("no initial points", [*fp, "--initial-points", "0"], "--initial-points"),
        ("no device threads", [*fp, "--device-threads", "0"], "--device-threads"),
        ("no timing", [*fp, "--time-cap", "0"], "--time-cap"),
        ("negative timing", [*fp, "--time-cap", "-5"], "--time-cap"),
        ("a CI that never converges", [*fp, "--target-ci", "-1"], "--target-ci"),
        ("a CI of 100 %", [*fp, "--target-ci", "100"], "--target-ci"),
        ("a threshold that is a word", [*fp, "--accuracy-threshold", "high"], "--accuracy-threshold"),
        ("a threshold below zero top-1", [*fp, "--accuracy-threshold", "-150"], "--accuracy-threshold"),
        ("a threshold above 100 %", [*fp, "--accuracy-threshold", "101"], "--accuracy-threshold"),
        ("a threshold no configuration reaches", [*fp, "--accuracy-threshold", "100"], "baseline itself scores"),
        ("a negative accuracy weight", [*fp, "--accuracy-weight", "-1"], "--accuracy-weight"),
        ("a negative latency weight", [*fp, "--latency-weight", "-1"], "--latency-weight"),
        ("no learning rate", [*fp, "--lr", "0"], "--lr"),
        ("GPUs that are a word", [*fp, "--gpus-per-trial", "some"], "--gpus-per-trial"),
        ("more GPUs than the machine", [*fp, "--gpus-per-trial", "64"], "--gpus-per-trial"),
        ("an input size of 0", [*fp, "--input-size", "0"], "--input-size"),
        ("an input size that is a word", [*fp, "--input-size", "abc"], "--input-size"),
        ("an input size the model collapses", [*fp, "--input-size", "2"], "--input-size"),
        ("a mean that is not numbers", [*fp, "--mean", "0.1,x"], "--mean"),
        ("a std without a mean", [*fp, "--std", "0.2"], "--std"),
        ("a mean of the wrong length", [*fp, "--mean", "0.1,0.2,0.3"], "--mean"),
        ("--cache-dir naming a file", [*fp, "--cache-dir", str(f["a_file"])], "--cache-dir"),
        ("--output-dir naming a file", [*fp, "--output-dir", str(f["a_file"])], "--output-dir"),
        ("a cluster address where nothing listens", [*fp, "--address", "127.0.0.1:1"], "no Ray cluster answers"),
        ("a cluster address that is not host:port", [*fp, "--address", "headnode"], "--address headnode"),
        ("a device OpenVINO does not have", [*fp, "--device", "MYRIAD"], "available: CPU"),
        ("a device interpreter that is not there", [*fp, "--device-python", str(tmp / "py")], "--device-python"),
        ("a precision that is not one", [*fp, "--precision", "f64"], "--precision"),
        ("more trials than a fixed schedule has", ["--schedule", str(f["recipe.yaml"]), "--num-samples", "3"],
         "--num-samples"),
        # space files
        ("an unknown space name", ["--space", "nosuch"], "filter_prune"),
        ("a space file that is not there", ["--space", str(tmp / "nope.yaml")], "nope.yaml"),
        ("a space file of broken YAML", ["--space", str(f["bad_yaml.yaml"])], "bad_yaml.yaml"),
        ("a space file that is a list", ["--space", str(f["a_list.yaml"])], "a_list.yaml"),
        ("a schedule naming an undefined parameter", ["--space", str(f["undefined_param.yaml"])], "stage9_ratio"),
        ("a parameter with low above high", ["--space", str(f["low_above_high.yaml"])], "params.stage1_ratio"),
        ("a parameter of an unknown type", ["--space", str(f["unknown_type.yaml"])], "params.stage1_ratio"),
        ("a parameter the schedule never uses", ["--space", str(f["unused_param.yaml"])], "unused"),
        ("an unknown pruner class", ["--space", str(f["unknown_pruner.yaml"])], "NoSuchPruner"),
        ("a refused pruner class", ["--space", str(f["refused_pruner.yaml"])], "SplicingPruner"),
        ("a weight the model does not have", ["--space", str(f["wrong_weight.yaml"])], "module.layer9.0.conv1.weight"),
        ("a space's unknown model", ["--space", str(f["unknown_model.yaml"])], "resnet21"),
        ("a space's unknown dataset", ["--space", str(f["unknown_dataset.yaml"])], "mnist9"),
        ("a policy after fine-tuning ends", ["--space", str(f["late_policy.yaml"]), "--epochs", "3"],
         "late_policy.yaml"),
        ("a pruner argument of the wrong value", ["--space", str(f["bad_arg.yaml"])], "stage1_filters"),
        ("a refused pruner argument", ["--space", str(f["refused_arg.yaml"])], "levels"),
        # Distiller schedules
        ("a schedule that is not there", ["--schedule", str(tmp / "nope.yaml")], "nope.yaml"),
        ("a schedule naming a weight the model lacks", ["--schedule", str(f["recipe_bad_weight.yaml"])],
         "module.layer1.0.bn9.weight"),
        ("a schedule without policies", ["--schedule", str(f["recipe_no_policies.yaml"])], "policies"),
        ("a schedule that is a list", ["--schedule", str(f["recipe_list.yaml"])], "recipe_list.yaml"),
        # model specs
        ("an unknown zoo model", [*fp, "--model", "resnet21"], "resnet21"),
        ("a module that is not there", [*fp, "--model", "no_such_module:Net"], "no_such_module"),
        ("a module raising on import", [*fp, "--model", "user_broken:f"], "user_broken"),
        ("a name the module lacks", [*fp, "--model", "user_models:Missing"], "Missing"),
        ("a name that is not callable", [*fp, "--model", "user_models:not_callable"], "not_callable"),
        ("a builtin that is not a model", [*fp, "--model", "os:system"], "os:system"),
        ("a constructor raising", [*fp, "--model", "user_models:raises"], "user_models:raises"),
        ("a model ignoring in_channels", [*fp, "--model", "user_models:ignores_channels"], "ignores_channels"),
        ("a model with the wrong output shape", [*fp, "--model", "user_models:thousand_classes"], "(2, 1000)"),
        # weights files
        ("weights that are not there", [*fp, "--weights", str(tmp / "nope.pt")], "nope.pt"),
        ("weights that are not a PyTorch file", [*fp, "--weights", str(f["garbage.pt"])], "garbage.pt"),
        ("weights of an empty file", [*fp, "--weights", str(f["empty.pt"])], "empty.pt"),
        ("weights that need code to unpickle", [*fp, "--weights", str(f["code.pt"])], "code.pt"),
        ("a pickle that would run code", [*fp, "--weights", str(f["exploit.pt"])], "exploit.pt"),
        ("weights of another architecture", [*fp, "--weights", str(f["resnet32.pt"])], "resnet32.pt"),
        # data folders
        ("an unknown dataset", [*fp, "--dataset", "mnist9"], "mnist9"),
        ("CIFAR without --data-dir", [*fp, "--dataset", "cifar10"], "cifar-10-batches-py"),
        ("CIFAR in an empty folder", [*fp, "--dataset", "cifar10", "--data-dir", str(f["cifar_empty"])], "cifar_empty"),
        ("a data folder that is a file", [*fp, "--dataset", "imagefolder", "--data-dir", str(f["a_file"])],
         "README.md"),
        ("an image folder with nothing in it", [*fp, "--dataset", "imagefolder", "--data-dir", str(f["empty_dir"])],
         "empty_dir"),
        ("an image folder of one class", [*fp, "--dataset", "imagefolder", "--data-dir", str(f["images_one_class"])],
         "images_one_class"),
        ("broken IDX files", [*fp, "--dataset", "fashion-mnist", "--data-dir", str(f["idx_garbage"])], "idx_garbage"),
        # experiment folders
        ("--resume of a folder that is not an experiment", ["--resume", str(f["no_run_file"])], "no_run_file"),
        ("--resume of a damaged run file", ["--resume", str(f["damaged_run"])], "damaged_run"),
        ("--resume of a run file that is a list", ["--resume", str(f["run_not_a_dict"])], "run_not_a_dict"),
        ("--resume of a run file with a bad command line", ["--resume", str(f["run_bad_argv"])], "run_bad_argv"),
        ("--resume of a folder this user did not write", ["--resume", str(f["run_not_recorded"])], "--trust-folder"),
        ("--resume of a folder that is not there", ["--resume", str(tmp / "gone")], "gone"),
    ]  # fmt: skip


def test_bad_input_exits_2_naming_what_is_wrong_and_mostly_before_ray(tmp_path, cache_dir, monkeypatch, capsys):
    import edge_tune.baseline as baseline
    import edge_tune.experiment as experiment
    from edge_tune.run import main

    files = _files(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the user's model modules
    rays, trainings = [], []
    real_ray, real_train = experiment.start_ray, baseline._train
    monkeypatch.setattr(experiment, "start_ray", lambda *a, **k: (rays.append(1), real_ray(*a, **k))[1])
    monkeypatch.setattr(baseline, "_train", lambda *a, **k: (trainings.append(1), real_train(*a, **k))[1])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    smoke = ["--smoke", "--cache-dir", str(cache_dir), "--output-dir", str(tmp_path / "out"), "--wandb", "off"]
    cases = _cases(files, tmp_path)
    failures, before_ray, before_training = [], 0, 0
    for what, argv, needle in cases:
        n_ray, n_train = len(rays), len(trainings)
        resume = argv[0] == "--resume"
        try:
            code = main(argv if resume else [*smoke, *argv])  # the case's flags come last: they win
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        except Exception as exc:  # a traceback
            code = f"{type(exc).__name__}: {exc}"
        err = capsys.readouterr().err
        before_ray += len(rays) == n_ray
        before_training += len(trainings) == n_train
        if code != 2 or needle not in err or "Traceback" in err or len(err.strip().splitlines()) > 3:
            failures.append(f"{what}: exit {code}, stderr {err.strip()[-400:]!r}")
    for s, h in handlers.items():
        signal.signal(s, h)
    with capsys.disabled():
        print(
            f"\n{len(cases)} bad inputs: {len(cases) - len(failures)} exit 2 naming the fault, "
            f"{before_ray} before Ray starts, {before_training} before any baseline training",
            file=sys.stderr,
        )
    assert not failures, "\n".join(failures)
    assert len(cases) >= 60 and before_ray == len(cases)
    assert "distiller" not in sys.modules and not (tmp_path / "out").exists()
