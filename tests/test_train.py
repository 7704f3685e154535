import pytest
import torch
from torch import nn

from edge_tune.baseline import load_or_train_baseline
from edge_tune.train import TrainConfig, evaluate, fine_tune


class Tiny(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_evaluate_reports_percentages(digits):
    acc = evaluate(Tiny(), digits.val)
    assert 0 <= acc.top1 <= acc.top5 <= 100


def test_fine_tune_learns(digits):
    torch.manual_seed(0)
    model = Tiny()
    before = evaluate(model, digits.val).top1
    after = fine_tune(model, digits, TrainConfig(epochs=2, lr=0.1, augment=False)).top1
    assert after > before + 20


def test_nan_loss_raises(digits):
    model = Tiny()
    with pytest.raises(FloatingPointError, match="loss"):
        fine_tune(model, digits, TrainConfig(epochs=1, lr=1e30, augment=False))


def test_baseline_is_cached_by_model_dataset_and_recipe(digits, tmp_path):
    cfg = TrainConfig(epochs=1, lr=0.05)
    first = load_or_train_baseline("resnet20", digits, cfg, tmp_path, log=lambda _: None)
    second = load_or_train_baseline("resnet20", digits, cfg, tmp_path, log=lambda _: None)
    assert not first.cached and second.cached and second.accuracy == first.accuracy
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    other = load_or_train_baseline(
        "resnet20", digits, TrainConfig(epochs=1, lr=0.05, seed=1), tmp_path, log=lambda _: None
    )
    assert not other.cached and other.cache_key != first.cache_key


def test_a_damaged_cached_baseline_is_named_moved_aside_and_trained_again(digits, tmp_path):
    cfg = TrainConfig(epochs=1, lr=0.05)
    first = load_or_train_baseline("resnet20", digits, cfg, tmp_path, log=lambda _: None)
    (folder,) = (tmp_path / "baselines").glob("resnet20-digits-*[!k]")  # not the .lock file
    weights = folder / "model.pt"
    weights.write_bytes(weights.read_bytes()[:5000])  # truncated, as a full disk or a kill leaves it
    said = []
    again = load_or_train_baseline("resnet20", digits, cfg, tmp_path, log=said.append)
    assert not again.cached and again.accuracy == first.accuracy  # the same recipe and seed: the same network
    (aside,) = (tmp_path / "baselines").glob("resnet20-digits-*.damaged-*")
    assert f"the cached baseline {folder} is damaged" in said[0] and f"moved to {aside}" in said[0]
    assert load_or_train_baseline("resnet20", digits, cfg, tmp_path, log=said.append).cached


def test_runs_sharing_a_cache_train_a_baseline_once(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    code = (  # the Tiny model above, by its package.module:function name
        "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; "
        "from edge_tune.baseline import load_or_train_baseline; "
        "from edge_tune.data import load_dataset; from edge_tune.train import TrainConfig; "
        "b = load_or_train_baseline('test_train:Tiny', load_dataset('digits'), TrainConfig(epochs=2, lr=0.05), "
        "Path(sys.argv[1]), log=lambda m: print(m, flush=True)); print('cached' if b.cached else 'trained')"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [r.communicate(timeout=600)[0] for r in runs]
    assert all(r.returncode == 0 for r in runs), outs
    assert sorted(o.strip().splitlines()[-1] for o in outs) == ["cached", "trained"]
    assert sum("training baseline" in o for o in outs) == 1
