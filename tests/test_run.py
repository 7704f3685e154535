"""The real CLI end to end: real Ray, OpenVINO, torch-pruning and digits; no mocks."""

import csv
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

NAN_SPACE = (REPO / "search_spaces" / "filter_prune.yaml").read_text().replace("lr: 0.01 ", "lr: 1.0e+30 ")


def run_smoke(space: str, cache_dir: Path, out: Path, *extra: str):
    """``--smoke`` on the session's baseline cache, writing under ``out``; W&B off unless asked for."""
    wandb = () if "--wandb" in extra else ("--wandb", "off")
    return run_cli(
        "--space", space, "--smoke", "--cache-dir", str(cache_dir), "--output-dir", str(out), *wandb, *extra,
        cwd=REPO,
    )  # fmt: skip


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("out")
    # Sieve, which screens candidates on the device actors and the driver's data before each suggestion;
    # two search trials, then the better one fine-tuned again with another seed (a threshold both clear).
    # Two kinds: every candidate on OpenVINO CPU and on ONNX Runtime CPU, the search on their geometric mean.
    extra = ("--name", "smoke", "--wandb", "offline", "--searcher", "sieve", "--num-samples", "3", "--confirm", "1",
             "--confirm-seeds", "1", "--accuracy-threshold", "10", "--also-device", "ort:CPU",
             "--speedup-of", "geomean")  # fmt: skip
    return run_smoke("filter_prune", cache_dir, out, *extra), out / "smoke"


def test_smoke_run_writes_results(smoke):
    proc, exp = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dashboard: http://127.0.0.1:" in proc.stdout
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows)
    best = json.loads((exp / "best.json").read_text())
    # Confirmation: the better bet of the two search trials, fine-tuned again with seed + 1000; both clear
    # the threshold by some 80 points, so it is the faster one; the pick is over both runs.
    search, repeats = [r for r in rows if r["repeat"] == "0"], [r for r in rows if r["repeat"] == "1"]
    params = [k for k in rows[0] if k.startswith("config/")]
    better = max(search, key=lambda r: float(r["speedup"]))
    assert len(search) == 2 and len(repeats) == 1 and all(repeats[0][k] == better[k] for k in params)
    assert best["experiment"]["confirm"]["fine_tunes"] == 1 and best["metrics"]["held"] is True
    assert best["experiment"]["confirm"]["margin_se"] == 1.0 and best["experiment"]["confirm"]["noise_sd"] > 0
    assert float(best["metrics"]["top1_lower"]) < float(best["metrics"]["top1_mean"])
    runs = sorted(float(r["top1"]) for r in (better, repeats[0]))  # judged: device and PyTorch agree here
    assert (
        sorted(best["metrics"]["runs"]) == pytest.approx(runs, abs=0.3)
        and "over 2 fine-tunes" in proc.stdout + proc.stderr
    )
    assert (exp / "best" / "model.onnx").stat().st_size > 10_000
    baseline = best["experiment"]["baseline"]
    assert best["experiment"]["precision"] == "f32" and best["experiment"]["searcher"] == "sieve"
    assert best["schedule"]["version"] == 1 and "pruners" in best["schedule"]
    for key in ("top1", "top5", "top1_device", "latency_ms", "speedup", "speedup_cv", "macs", "params", "score"):
        assert key in best["metrics"], key
    pruned = [r for r in rows if int(r["macs"]) < baseline["macs"]]
    assert pruned, "no trial has fewer MACs than the baseline"
    for r in pruned:
        assert math.isfinite(float(r["speedup"])) and float(r["speedup"]) > 0
        assert float(r["speedup_cv"]) >= 0 and r["precision"] == "f32"
    assert (best["feasible"] is True) == (proc.returncode == 0)
    front = list(csv.DictReader(open(exp / "pareto.csv")))
    assert 1 <= len(front) <= 3 and "Pareto front" in proc.stdout


def test_best_onnx_has_the_pruned_shapes(smoke):
    import onnx

    _, exp = smoke
    best = json.loads((exp / "best.json").read_text())
    graph = onnx.load(exp / "best" / "model.onnx").graph
    weights = {t.name: list(t.dims) for t in graph.initializer}
    outs = sorted(weights[n.input[1]][0] for n in graph.node if n.op_type == "Conv")
    assert sum(outs) < 16 * 7 + 32 * 6 + 64 * 6 + 32 + 64  # fewer filters than the unpruned ResNet-20
    assert best["metrics"]["macs"] < best["experiment"]["baseline"]["macs"]


def test_best_folder_is_the_deliverable_in_every_form(smoke):
    """ONNX, f32 IR, the state_dict rebuilt into the pruned architecture, the schedule: one network."""
    import numpy as np
    import openvino as ov
    import torch
    import yaml

    from edge_tune.compression import count_macs_params
    from edge_tune.deliverable import load_pruned

    _, exp = smoke
    best = json.loads((exp / "best.json").read_text())
    folder = exp / "best"
    model, arch = load_pruned(folder)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, *arch["input_shape"]), dtype=np.float32))
    assert count_macs_params(model, x)[0] == best["metrics"]["macs"]
    with torch.no_grad():
        expected = model(x).numpy()
    for name in ("model.xml", "model.onnx"):
        # f32 as the search measured it: the CPU plugin would pick bf16 on CPUs that have it
        compiled = ov.Core().compile_model(folder / name, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        assert np.allclose(compiled(x.numpy())[0], expected, atol=1e-4), name
    assert yaml.safe_load((folder / "schedule.yaml").read_text()) == best["schedule"]
    assert json.loads((folder / "metrics.json").read_text())["trial_id"] == best["trial_id"]
    rebuilt = subprocess.run([sys.executable, "rebuild.py"], cwd=folder, capture_output=True, text=True)
    assert rebuilt.returncode == 0 and "logits (1, 10)" in rebuilt.stdout, rebuilt.stderr


def test_export_writes_any_trial_and_names_bad_input(smoke, tmp_path):
    _, exp = smoke
    rows = list(csv.DictReader(open(exp / "results.csv")))
    other = rows[-1]["trial_id"]  # the lower ranked of the two
    proc = subprocess.run(
        [sys.executable, "-m", "edge_tune.deliverable", str(exp), "--trial", other, "--out", str(tmp_path / "x")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = {p.name for p in (tmp_path / "x").iterdir()}
    assert {"model.onnx", "model.xml", "model.bin", "state_dict.pt", "schedule.yaml", "rebuild.py"} <= files
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["trial_id"] == other
    for args, needle in [((str(exp), "--trial", "nope"), "--trial nope"), ((str(tmp_path),), "no results.json")]:
        bad = subprocess.run([sys.executable, "-m", "edge_tune.deliverable", *args], capture_output=True, text=True)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr


def test_gpus_per_trial():
    from edge_tune.cluster import trial_gpus
    from edge_tune.errors import UserError

    assert trial_gpus("auto", {"CPU": 8.0, "GPU": 2.0}, joined=True) == 1.0
    assert trial_gpus("auto", {"CPU": 8.0}, joined=False) == 0.0
    assert trial_gpus("0.5", {"CPU": 8.0}, joined=True) == 0.5  # an autoscaling cluster adds GPU workers
    assert trial_gpus("0", {}, joined=False) == 0.0
    for flag, cluster in (("1", {"CPU": 8.0}), ("-1", {"GPU": 1.0}), ("nan", {"GPU": 1.0}), ("two", {})):
        with pytest.raises(UserError, match=f"--gpus-per-trial {flag}"):
            trial_gpus(flag, cluster, joined=False)


def test_device_python_hosts_openvino_2021_4_for_a_whole_agp_run(smoke, cache_dir, tmp_path, legacy_python):
    """Two things at once, to spare CI a run: OpenVINO 2021.4 under --device-python measures every trial,
    and the hybrid AGP schedule thins filters in the middle of fine-tuning, through Ray."""
    proc = run_smoke(
        "hybrid", cache_dir, tmp_path, "--name", "legacy", "--num-samples", "1", "--device-python", legacy_python
    )
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "on OpenVINO 2021.4" in proc.stdout
    stats = json.loads((tmp_path / "legacy" / "experiment.json").read_text())["device_stats"]
    assert stats["api"] == "ie" and stats["python"].startswith("3.") and stats["server_pid"]
    (row,) = list(csv.DictReader(open(tmp_path / "legacy" / "results.csv")))
    assert row["status"] == "ok" and int(row["ov_macs"]) == int(row["macs"])  # the thinned network, counted there
    assert abs(float(row["top1"]) - float(row["top1_device"])) <= 0.6  # and the legacy runtime agrees on accuracy
    assert int(row["macs"]) <= 40_518_272 and int(row["zeros"]) >= 0


def test_cifar100_runs_end_to_end_with_a_hundred_classes(cache_dir, tmp_path):
    """Objective O2, a dataset with ten times digits' classes, through the whole pipeline; and, to spare CI
    runs, the INT8 space (the device runs NNCF's quantized model) at an input size of the user's (40x36):
    ONNX, OpenVINO, MACs and the O0 checks all at that size."""
    import onnx
    from test_data import cifar_rows, dump

    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    for first, name, per_class in [(0, "train", 3), (300, "test", 1)]:
        fine = [c for c in range(100) for _ in range(per_class)]
        dump(folder / name, {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                             b"data": cifar_rows(first, len(fine))})  # fmt: skip
    dump(folder / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)]})
    proc = run_smoke(
        "filter_prune_int8", cache_dir, tmp_path / "out", "--name", "c100", "--num-samples", "1",
        "--dataset", "cifar100", "--data-dir", str(tmp_path / "data"), "--accuracy-threshold", "0",
        "--input-size", "40x36",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "out" / "c100"
    (row,) = list(csv.DictReader(open(exp / "results.csv")))
    assert row["status"] == "ok" and int(row["ov_macs"]) == int(row["macs"]) and row["int8"] == "True"
    assert json.loads((exp / "experiment.json").read_text())["dataset"] == "cifar100"
    layers = list(csv.DictReader(open(exp / "layers.csv")))
    assert any("i8" in r["exec_type_best"].lower() for r in layers), layers[:3]  # INT8 kernels ran
    assert (exp / "best" / "model_int8.xml").stat().st_size > 0 and (exp / "best" / "model_int8.bin").stat().st_size > 0
    graph = onnx.load(str(exp / "best" / "model.onnx")).graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 100]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 40, 36]
    assert json.loads((exp / "best" / "architecture.json").read_text())["input_shape"] == [3, 40, 36]
    base = json.loads((exp / "experiment.json").read_text())["baseline"]
    assert base["macs"] > 40_518_272 * (40 * 36) / (32 * 32)  # ResNet-20's 32x32 MACs, scaled to 40x36 pixels


def test_nan_trials_are_recorded_as_errored_and_the_search_goes_on(smoke, cache_dir, tmp_path):
    """To spare CI a run, on an image folder read from disk batch by batch (DataLoader workers in the driver
    and in the trials; the device's validation set sent through Ray's object store in chunks)."""
    from test_data import COLOURS, write_images

    write_images(tmp_path / "photos" / "train", COLOURS, n=24)  # two steps an epoch: the second one is NaN
    write_images(tmp_path / "photos" / "val", COLOURS, n=4)
    space = tmp_path / "nan_lr.yaml"
    space.write_text(NAN_SPACE)
    proc = run_smoke(
        str(space), cache_dir, tmp_path / "out", "--name", "nan", "--searcher", "optuna",
        "--dataset", "imagefolder", "--data-dir", str(tmp_path / "photos"), "--input-size", "32",
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]  # nothing feasible: every trial errored
    experiment = json.loads((tmp_path / "out" / "nan" / "experiment.json").read_text())
    assert experiment["dataset"] == "imagefolder" and experiment["input"]["shape"] == [3, 32, 32]
    assert experiment["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's, for a folder
    # all 12 validation images classified on the device too: at most one image (8.3 points) apart
    assert experiment["baseline"]["top1_device"] == pytest.approx(experiment["baseline"]["top1"], abs=100 / 12)
    rows = list(csv.DictReader(open(tmp_path / "out" / "nan" / "results.csv")))
    assert len(rows) == 2 and all(r["status"] == "error" for r in rows)  # the second trial still ran
    assert all("FloatingPointError" in r["error"] or "loss" in r["error"] for r in rows)
    best = json.loads((tmp_path / "out" / "nan" / "best.json").read_text())
    assert best["feasible"] is False and "trial_id" not in best
    assert "errored, the search goes on" in proc.stdout


def test_a_distiller_schedule_runs_as_written_and_a_threshold_it_misses_names_the_closest(smoke, cache_dir, tmp_path):
    # A Distiller recipe run unchanged with --schedule (AGP to 85% of every block's first filters, ranked with
    # batch norms folded, thinned, its lr scheduler cut at the end of fine-tuning by --truncate-lr) as one
    # trial: it cannot stay within half a point of the baseline, and the run says so and keeps the trial.
    # To spare CI a run, the baseline comes from trained weights (--weights) in the format Distiller saves:
    # keys prefixed by module., beside the optimizer's class and thinning recipes.
    import torch
    from test_recipes import RECIPES
    from test_weights import ThinningRecipe, distiller_checkpoint

    (trained,) = cache_dir.glob("baselines/resnet20-digits-*/model.pt")
    weights = tmp_path / "checkpoint.pth.tar"
    with pytest.MonkeyPatch.context() as mp:  # Distiller's classes exist while the file is written, not read
        mp.setitem(sys.modules, "distiller", types.ModuleType("distiller"))
        mp.setitem(sys.modules, "distiller.thinning", types.SimpleNamespace(ThinningRecipe=ThinningRecipe))
        torch.save(distiller_checkpoint(torch.load(trained, weights_only=True)), weights)
    recipe = RECIPES / "agp_filters_bn_fold.yaml"
    proc = run_cli(
        "--schedule", str(recipe), "--truncate-lr", "--cache-dir", str(tmp_path / "empty-cache"),
        "--output-dir", str(tmp_path / "out"), "--name", "recipe", "--wandb", "off",
        "--accuracy-threshold", "-0.5", "--weights", str(weights), cwd=REPO,
    )  # fmt: skip
    out = tmp_path / "out" / "recipe"
    assert proc.returncode == 3, proc.stderr[-3000:] + proc.stdout[-3000:]
    assert "training baseline" not in proc.stdout and f"from weights {weights} (sha256 " in proc.stdout
    assert (
        "evaluated, not trained" in proc.stdout
        and "searching agp_filters_bn_fold: one fixed configuration" in proc.stdout
    )
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["baseline"]["source"].startswith(f"weights {weights}")
    assert experiment["finetune"]["epochs"] == 2 and experiment["finetune_searched"] == []  # what the schedule needs
    (row,) = list(csv.DictReader(open(out / "results.csv")))
    assert row["status"] == "ok" and row["feasible"] == "False" and int(row["macs"]) == 7_119_488  # as --check plans
    assert float(row["speedup"]) > 1 and float(row["top1_device"]) > 0
    best = json.loads((out / "best.json").read_text())
    assert best["feasible"] is False and best["trial_id"] == row["trial_id"]
    assert best["schedule"] == yaml.safe_load(recipe.read_text()) and best["finetune"]["lr"] == 0.01
    assert (out / "best" / "model.onnx").is_file() and (out / "layers.csv").is_file()  # per-layer latency
    assert "no trial of 1 reached the threshold" in proc.stdout
    assert f"the closest was {best['trial_id']}" in proc.stdout


def test_every_kind_is_measured_against_its_own_baseline_and_reported(smoke):
    """--also-device ort:CPU --speedup-of geomean: each kind's own speed-up, p50 and layers, in every output."""
    proc, exp = smoke
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = json.loads((exp / "best.json").read_text())
    kinds = best["experiment"]["kinds"]
    assert set(kinds) == {"CPU", "ort:CPU"} and best["experiment"]["speedup_of"] == "geomean"
    assert best["experiment"]["also_devices"][0]["resource"] == "edge_device_ort_cpu"
    assert all(k["latency_ms"] > 0 and k["top1_device"] > 50 for k in kinds.values())  # each baseline measured
    for r in csv.DictReader(open(exp / "results.csv")):
        cpu, ort = float(r["speedup_cpu"]), float(r["speedup_ort_cpu"])
        assert float(r["speedup"]) == pytest.approx(math.sqrt(cpu * ort))  # what the search optimised
        assert float(r["speedup_ci_low_ort_cpu"]) <= ort <= float(r["speedup_ci_high_ort_cpu"])
        # Each kind's speed-up is its own baseline's p50 over the candidate's, on the same device.
        for slug in ("cpu", "ort_cpu"):
            assert float(r[f"latency_ms_{slug}"]) > 0 and float(r[f"baseline_latency_ms_{slug}"]) > 0
        # The lowest device top-1 over the kinds is the one judged.
        assert float(r["top1_device"]) == min(float(r["top1_device_cpu"]), float(r["top1_device_ort_cpu"]))
        assert (exp / r["checkpoint"] / "layers_ort_cpu.csv").exists()
    assert list(csv.DictReader(open(exp / "layers_ort_cpu.csv")))  # the chosen trial's, on ONNX Runtime
    page = (exp / "report.html").read_text()
    assert "On every device kind" in page and "figures/layers_ort_cpu.png" in page
    assert "on each kind: CPU " in proc.stderr + proc.stdout


def test_results_dir_is_inside_output_dir(smoke):
    _, exp = smoke
    assert isinstance(exp, Path) and (exp / "experiment.json").exists()


def test_report_html_shows_its_figures(smoke):
    import re

    import numpy as np
    from PIL import Image

    proc, exp = smoke
    page = (exp / "report.html").read_text()
    assert "report: " in proc.stdout and "<table>" in page
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"figures/pareto.png", "figures/progress.png", "figures/layers.png"} <= set(images)
    for src in images:
        pixels = np.asarray(Image.open(exp / src).convert("L"), dtype=float)
        assert pixels.shape[0] > 300 and pixels.std() > 10, src  # drawn on, not a blank canvas
    rows = list(csv.DictReader(open(exp / "results.csv")))
    assert all(r["trial_id"] in page for r in rows)


def test_wandb_offline_runs_hold_config_epochs_results_layers_and_the_model(smoke):
    """W&B offline (no account): each trial's run and the summary run, read back from their files."""
    from wandb_files import run_contents

    proc, exp = smoke
    rows = {r["trial_id"]: r for r in csv.DictReader(open(exp / "results.csv"))}
    trial_runs = sorted(exp.glob("run_trial_*/wandb/offline-run-*"))
    assert len(trial_runs) == len(rows) == 3  # two search trials and one confirmation run
    runs = [run_contents(folder) for folder in trial_runs]
    assert sorted(run["run"].run_id for run in runs if run["run"] is not None) == sorted(rows)  # all written
    for run in runs:
        row = rows[run["run"].run_id]
        assert run["run"].project == "edge_tune" and run["run"].run_group == "smoke"
        for p in ("stage1_ratio", "stage2_ratio", "stage3_ratio"):
            assert run["config"][p] == pytest.approx(float(row[f"config/{p}"]))
        assert run["config"].get("repeat", 0) == int(row["repeat"])  # a confirmation run says which it is
        epochs = [h for h in run["history"] if h.get("final") is False]
        assert epochs and all({"epoch", "loss", "top1", "top5"} <= set(h) for h in epochs)
        (final,) = [h for h in run["history"] if h.get("final") is True]
        assert final["speedup"] == pytest.approx(float(row["speedup"]))
        assert final["top1_device"] == pytest.approx(float(row["top1_device"]))
        assert final["kinds/ort:CPU/speedup"] == pytest.approx(float(row["speedup_ort_cpu"]))  # Tune flattens
        assert run["summary"]["layers_ort_cpu"]["nrows"] > 0  # each kind's per-layer table
        layers = run["summary"]["layers"]  # the trial's per-layer latency table
        n_layers = len(list(csv.DictReader(open(exp / row["checkpoint"] / "layers.csv"))))
        assert layers["_type"] == "table-file" and layers["nrows"] == n_layers > 0
    (folder,) = exp.glob("wandb/offline-run-*")
    summary = run_contents(folder)
    assert summary["config"]["space"] == "filter_prune" and "baseline" in summary["config"]
    assert {"results", "pareto", "layers", "layers_ort_cpu"} <= {k.split("/")[0] for h in summary["history"] for k in h}
    if best_row := json.loads((exp / "best.json").read_text()).get("metrics"):
        assert summary["summary"]["best/speedup_ort_cpu"] == pytest.approx(best_row["kinds"]["ort:CPU"]["speedup"])
    best = json.loads((exp / "best.json").read_text())
    assert summary["summary"]["feasible"] == best["feasible"]
    (files,) = [v for k, v in summary["artifacts"].items() if k.startswith("smoke-best")]
    assert {"model.onnx", "model.xml", "state_dict.pt", "schedule.yaml"} <= set(files)
    assert "wandb sync" in proc.stdout
