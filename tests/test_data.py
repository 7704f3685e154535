import io
import pickle
import re
import signal
import struct
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from edge_tune.data import available_datasets, load_dataset
from edge_tune.errors import UserError

CIFAR10_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
PER_BATCH = 3  # images in each tiny CIFAR file


def test_digits_shapes_and_fixed_stratified_split(digits):
    assert digits.input_shape == (1, 32, 32) and digits.num_classes == 10
    assert digits.classes == tuple("0123456789")
    assert len(digits.x_train) + len(digits.x_val) == 1797
    assert torch.bincount(digits.y_val).min() >= 17  # every class is in validation
    again = load_dataset("digits")
    assert torch.equal(again.y_val, digits.y_val) and torch.equal(again.x_val, digits.x_val)
    assert abs(float(digits.x_train.mean())) < 1e-3 and abs(float(digits.x_train.std()) - 1) < 1e-2


def test_unknown_dataset_lists_names():
    assert available_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "imagefolder", "mnist"]
    with pytest.raises(UserError, match="available: cifar10, cifar100, digits, fashion-mnist, imagefolder, mnist"):
        load_dataset("imagenet")


# CIFAR: tiny trees in the published layout ---------------------------------


def pixel(i: np.ndarray, c: np.ndarray, h: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A value for pixel (c, h, w) of image i that differs between neighbours on every axis."""
    return (i * 37 + c * 101 + h * 7 + w * 3) % 256


def cifar_rows(first: int, n: int) -> np.ndarray:
    """Images first..first+n-1 as published: (n, 3072) uint8, each row R, G, B planes, each row-major."""
    i, k = np.meshgrid(np.arange(first, first + n), np.arange(3072), indexing="ij")
    return pixel(i, k // 1024, k // 32 % 32, k % 32).astype(np.uint8)


class Py2Pickler(pickle._Pickler):
    """Writes text and byte strings as Python 2's str, as the published CIFAR files were written."""

    def save_py2_str(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else obj.encode("latin1")
        head = (
            pickle.SHORT_BINSTRING + bytes([len(data)])
            if len(data) < 256
            else pickle.BINSTRING + struct.pack("<i", len(data))
        )
        self.write(head + data)
        self.memoize(obj)

    dispatch: ClassVar[dict] = {**pickle._Pickler.dispatch, bytes: save_py2_str, str: save_py2_str}


def dump(path: Path, obj, writer: str = "py2") -> None:
    """Pickle ``obj`` as Python 2 with numpy 1 did ("py2") or as this Python does ("py3")."""
    if writer == "py3":
        path.write_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        return
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def write_cifar10(root: Path, writer: str = "py2") -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b, name in enumerate([*CIFAR10_TRAIN, "test_batch"]):
        labels = [(b * PER_BATCH + j) % 10 for j in range(PER_BATCH)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": cifar_rows(b * PER_BATCH, PER_BATCH),
            b"filenames": [f"{name}_{j}.png".encode() for j in range(PER_BATCH)],
        }
        dump(folder / name, batch, writer)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": names, b"num_vis": 3072}
    dump(folder / "batches.meta", meta, writer)
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for first, name, fine in [(0, "train", [99, 0, 42, 7]), (4, "test", [5, 98])]:
        split = {
            b"filenames": [f"{name}_{j}.png".encode() for j in range(len(fine))],
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": cifar_rows(first, len(fine)),
        }
        dump(folder / name, split)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20}
    dump(folder / "meta", meta)
    return folder


def unnormalise(x: torch.Tensor, raw_train: torch.Tensor) -> torch.Tensor:
    """``x`` back in [0, 255], with the training split's per-channel statistics."""
    raw = raw_train.double() / 255
    mean, std = raw.mean(dim=(0, 2, 3), keepdim=True), raw.std(dim=(0, 2, 3), keepdim=True)
    return (x.double() * std + mean) * 255


@pytest.mark.parametrize("writer", ["py2", "py3"])
def test_cifar10_reads_the_published_layout(tmp_path, writer):
    folder = write_cifar10(tmp_path, writer)
    data = load_dataset("cifar10", tmp_path)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10 and data.classes[9] == "truck"
    assert data.x_train.shape == (5 * PER_BATCH, 3, 32, 32) and data.x_val.shape == (PER_BATCH, 3, 32, 32)
    assert data.y_train.tolist() == [j % 10 for j in range(5 * PER_BATCH)]
    assert data.y_val.tolist() == [(5 * PER_BATCH + j) % 10 for j in range(PER_BATCH)]  # the test file

    # Pixel (c, h, w) of image i comes from column c*1024 + h*32 + w of its row.
    i, c, h, w = np.meshgrid(*(np.arange(n) for n in (6 * PER_BATCH, 3, 32, 32)), indexing="ij")
    expected = torch.from_numpy(pixel(i, c, h, w).astype(np.float64))  # (18, 3, 32, 32): train, then test
    raw_train = expected[: 5 * PER_BATCH]
    assert torch.allclose(unnormalise(data.x_train, raw_train), raw_train, atol=1e-3)
    assert torch.allclose(unnormalise(data.x_val, raw_train), expected[5 * PER_BATCH :], atol=1e-3)
    assert data.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (data.x_train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-5

    same = load_dataset("cifar10", folder)  # the archive's folder itself
    assert torch.equal(same.x_train, data.x_train) and torch.equal(same.y_val, data.y_val)


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path)
    data = load_dataset("cifar100", str(tmp_path))
    assert data.num_classes == 100 and data.classes[42] == "fine42" and len(data.classes) == 100
    assert data.x_train.shape == (4, 3, 32, 32) and data.x_val.shape == (2, 3, 32, 32)
    assert data.y_train.tolist() == [99, 0, 42, 7] and data.y_val.tolist() == [5, 98]
    i, c, h, w = np.meshgrid(*(np.arange(n) for n in (6, 3, 32, 32)), indexing="ij")
    expected = torch.from_numpy(pixel(i, c, h, w).astype(np.float64))
    assert torch.allclose(unnormalise(data.x_val, expected[:4]), expected[4:], atol=1e-3)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder", "mnist"])
def test_datasets_on_disk_require_the_data_dir_flag(name):
    with pytest.raises(UserError, match=f"^--data-dir is required for {name}: it should be "):
        load_dataset(name)


def test_data_dir_that_is_not_a_folder_is_named(tmp_path):
    with pytest.raises(
        UserError,
        match=rf"--data-dir {re.escape(str(tmp_path / 'nope'))} is not a folder; for cifar10 .*cifar-10-batches-py/",
    ):
        load_dataset("cifar10", tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "write", "file"),
    [
        ("cifar10", write_cifar10, "data_batch_3"),
        ("cifar10", write_cifar10, "batches.meta"),
        ("cifar100", write_cifar100, "test"),
    ],
)
def test_missing_cifar_file_is_named_with_the_layout(tmp_path, name, write, file):
    folder = write(tmp_path)
    (folder / file).unlink()
    with pytest.raises(UserError) as err:
        load_dataset(name, tmp_path)
    message = str(err.value)
    assert message.startswith(f"missing file {folder / file}: for {name}, --data-dir should be the folder that holds")
    assert f"{folder.name}/ itself" in message


def test_folder_without_cifar_names_the_first_expected_file(tmp_path):
    with pytest.raises(
        UserError,
        match=rf"missing file {re.escape(str(tmp_path / 'data_batch_1'))}: .*cifar-10-batches-py/ \(data_batch_1",
    ):
        load_dataset("cifar10", tmp_path)


def batch(data=None, labels=None, **extra) -> dict:
    data = cifar_rows(0, PER_BATCH) if data is None else data
    return {b"data": data, b"labels": list(range(PER_BATCH)) if labels is None else labels, **extra}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            {b"data": cifar_rows(0, PER_BATCH), b"label": [0, 1, 2]},
            r"lacks b'labels'; expected a pickled dict with keys",
            id="wrong-key",
        ),
        pytest.param(
            batch(data=cifar_rows(0, PER_BATCH)[:, :3000]),
            r"b'data' must be a uint8 array of shape \(N, 3072\).*\(3, 3000\)",
            id="wrong-shape",
        ),
        pytest.param(
            batch(data=cifar_rows(0, PER_BATCH).astype(np.float32)),
            r"b'data' must be a uint8 array .*got float32",
            id="wrong-dtype",
        ),
        pytest.param(
            batch(labels=[0, 10, 2]),
            r"b'labels' holds label 10, outside 0..9 for cifar10",
            id="label-out-of-range",
        ),
        pytest.param(
            batch(labels=[0, 1]),
            r"b'labels' must list 3 integer labels, one per row of b'data'; got int64 of shape \(2,\)",
            id="too-few-labels",
        ),
        pytest.param([1, 2, 3], r"holds a list; expected a pickled dict", id="not-a-dict"),
        pytest.param(
            OrderedDict(batch()),
            r": it names collections.OrderedDict, which is not part of a numpy array",
            id="foreign-global",
        ),
        pytest.param(
            b"not a pickle at all",
            r": invalid load key, 'n'; expected a pickled dict with keys b'data', b'labels'",
            id="not-a-pickle",
        ),
    ],
)
def test_malformed_cifar_pickle_is_named(tmp_path, content, message):
    folder = write_cifar10(tmp_path)
    if isinstance(content, bytes):
        (folder / "data_batch_2").write_bytes(content)
    else:
        dump(folder / "data_batch_2", content)
    with pytest.raises(UserError, match=f"{re.escape(str(folder / 'data_batch_2'))}.*{message}"):
        load_dataset("cifar10", tmp_path)


def test_meta_with_wrong_class_count_is_named(tmp_path):
    folder = write_cifar100(tmp_path)
    dump(folder / "meta", {b"fine_label_names": [b"a"] * 20})
    with pytest.raises(
        UserError, match=rf"{re.escape(str(folder / 'meta'))}: b'fine_label_names' must list 100 class names"
    ):
        load_dataset("cifar100", folder)


# Image folder --------------------------------------------------------------

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "emu": (0, 0, 255)}  # class name -> solid RGB


def write_images(root: Path, colours: dict[str, tuple[int, int, int]], n: int = 5, mode: str = "RGB") -> None:
    for name, colour in colours.items():
        (root / name / "sub").mkdir(parents=True)
        for j in range(n):
            size = (20 + 7 * j, 40 - 3 * (j % 10))  # varied sizes: every image is resized
            fill = colour if mode == "RGB" else colour[0]
            where = root / name / ("sub" if j == 0 else "") / f"{j}.png"  # nested folders are searched too
            Image.new(mode, size, fill).save(where)
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"")


IMAGENET = (torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225]))


def pixels(x: torch.Tensor, mean: torch.Tensor = IMAGENET[0], std: torch.Tensor = IMAGENET[1]) -> torch.Tensor:
    """Normalised images (N, C, H, W) back in [0, 255]."""
    return (x.double() * std.double().view(1, -1, 1, 1) + mean.double().view(1, -1, 1, 1)) * 255


def every_batch(split, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*split.batches(4, **kwargs), strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_imagefolder_loads_classes_sorted_and_split_stratified(tmp_path):
    write_images(tmp_path, dict(reversed(COLOURS.items())))
    data = load_dataset("imagefolder", tmp_path)
    assert data.classes == ("cat", "dog", "emu") and data.num_classes == 3 and not data.in_memory
    assert (len(data.train), len(data.val)) == (12, 3) and data.input_shape == (3, 224, 224)  # ImageNet's size
    assert torch.bincount(data.y_train).tolist() == [4, 4, 4] and data.y_val.tolist() == [0, 1, 2]
    colours = torch.tensor(list(COLOURS.values()), dtype=torch.float64)  # (3, 3): label -> RGB
    small = load_dataset("imagefolder", tmp_path, input_size=(32, 32))
    x, y = every_batch(small.val)
    assert x.shape == (3, 3, 32, 32) and torch.allclose(pixels(x), colours[y][:, :, None, None].expand_as(x), atol=1)
    x, y = every_batch(small.train, shuffle=torch.Generator().manual_seed(0), augment=True)
    assert sorted(y.tolist()) == small.y_train.tolist() and y.tolist() != small.y_train.tolist()  # shuffled
    assert torch.allclose(pixels(x), colours[y][:, :, None, None].expand_as(x), atol=1)  # a crop of a solid colour
    with pytest.raises(TypeError, match="read from files batch by batch"):
        _ = small.x_train


def test_imagefolder_augments_the_same_whatever_the_number_of_workers(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for j in range(3):
            rng = np.random.default_rng(j + (label == "b") * 10)
            Image.fromarray(rng.integers(0, 256, (30 + j, 50, 3), dtype=np.uint8)).save(tmp_path / label / f"{j}.png")
    one = load_dataset("imagefolder", tmp_path, input_size=(16, 16), workers=0)
    two = load_dataset("imagefolder", tmp_path, input_size=(16, 16), workers=2)
    before = signal.getsignal(signal.SIGCHLD)
    runs = [every_batch(d.train, shuffle=torch.Generator().manual_seed(3), augment=True) for d in (one, two, one)]
    assert signal.getsignal(signal.SIGCHLD) == before  # the workers' SIGCHLD handler goes with them
    assert all(torch.equal(runs[0][0], r[0]) and torch.equal(runs[0][1], r[1]) for r in runs[1:])
    plain = one.train.images(range(len(one.train)))[torch.argsort(torch.argsort(runs[0][1]))]
    assert not torch.equal(runs[0][0], plain)  # random crops, not the centre
    again = every_batch(one.train, shuffle=torch.Generator().manual_seed(4), augment=True)
    assert not torch.equal(again[0], runs[0][0])  # another epoch, other crops


def test_evaluation_resizes_to_cover_and_takes_the_centre(tmp_path):
    from edge_tune.data.imagefolder import CROP_FRACTION

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for j in range(2):  # 80x40: a red left border 10 pixels wide, a green centre, a blue right border
            im = np.zeros((40, 80, 3), dtype=np.uint8)
            im[:, :10, 0], im[:, 10:70, 1], im[:, 70:, 2] = 255, 255, 255
            Image.fromarray(im).save(tmp_path / label / f"{j}.png")
    data = load_dataset("imagefolder", tmp_path, input_size=(32, 32))
    x = pixels(data.val.images([0]))[0]  # (3, 32, 32): the 40-pixel side becomes 32 / 0.875, the rest is cropped off
    assert CROP_FRACTION == 0.875 and x.shape == (3, 32, 32)
    assert x[1].min() > 250 and x[0].max() < 5 and x[2].max() < 5  # only the green centre survives


def test_random_crops_keep_to_the_recipe():
    from edge_tune.data.imagefolder import _random_crop

    for seed in range(200):
        w, h = (640, 480) if seed % 2 else (30, 300)
        left, top, cw, ch = _random_crop(w, h, np.random.default_rng(seed))
        assert 0 <= left and left + cw <= w and 0 <= top and top + ch <= h
        if (w, h) == (640, 480):  # a draw always fits an image of ordinary shape
            assert 0.08 * w * h * 0.95 <= cw * ch <= w * h and 3 / 4 * 0.95 <= cw / ch <= 4 / 3 * 1.05


def test_mean_and_std_replace_the_default_normalisation(tmp_path, digits):
    write_images(tmp_path, {"a": (10, 0, 0), "b": (200, 0, 0)}, n=3, mode="L")
    grey = load_dataset("imagefolder", tmp_path, input_size=(8, 8), mean=(0.5,), std=(0.25,))
    x, y = every_batch(grey.val)
    assert grey.mean == (0.5,) and torch.allclose(x[:, 0, 0, 0], (torch.tensor([10.0, 200.0])[y] / 255 - 0.5) / 0.25)
    mine = load_dataset("digits", mean=(0.1,), std=(0.2,))
    assert mine.mean == (0.1,) and torch.allclose(pixels(mine.x_val, *map(torch.tensor, (mine.mean, mine.std))),
                                                  pixels(digits.x_val, *map(torch.tensor, (digits.mean, digits.std))),
                                                  atol=1e-3)  # fmt: skip
    with pytest.raises(UserError, match=r"^--mean: 2 values for digits's 1-channel images; give 1$"):
        load_dataset("digits", mean=(0.1, 0.2), std=(0.2,))
    with pytest.raises(UserError, match=r"^--std 0\.0: every standard deviation must be above 0"):
        load_dataset("digits", mean=(0.1,), std=(0.0,))


def test_a_truncated_image_is_named_when_it_is_read(tmp_path):
    write_images(tmp_path, COLOURS)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, format="PNG")
    (tmp_path / "dog" / "cut.png").write_bytes(buf.getvalue()[:60])  # the header is whole, the pixels are not
    data = load_dataset("imagefolder", tmp_path, input_size=(8, 8), workers=1)
    with pytest.raises(UserError, match=rf"^cannot read image {re.escape(str(tmp_path / 'dog' / 'cut.png'))}: "):
        for split in (data.train, data.val):
            every_batch(split)


def test_imagefolder_is_one_channel_only_if_every_image_is_grey(tmp_path):
    write_images(tmp_path, {"a": (10, 0, 0), "b": (200, 0, 0)}, n=3, mode="L")
    grey = load_dataset("imagefolder", tmp_path)
    assert grey.input_shape == (1, 224, 224) and grey.mean == (0.449,)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a" / "colour.jpg")
    assert load_dataset("imagefolder", tmp_path).input_shape == (3, 224, 224)


def test_imagefolder_needs_two_classes(tmp_path):
    write_images(tmp_path, {"only": (1, 2, 3)})
    with pytest.raises(
        UserError,
        match=rf"^--data-dir {re.escape(str(tmp_path))} holds 1 class folder\(s\); it should be a folder with",
    ):
        load_dataset("imagefolder", tmp_path)


@pytest.mark.parametrize("n", [0, 1])
def test_imagefolder_class_without_enough_images_is_named(tmp_path, n):
    write_images(tmp_path, COLOURS)
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "readme.txt").write_text("no images here")
    if n:
        Image.new("RGB", (8, 8)).save(tmp_path / "fox" / "one.png")
    with pytest.raises(
        UserError,
        match=rf"^class folder {re.escape(str(tmp_path / 'fox'))} holds {n} image\(s\); each class needs at least 2",
    ):
        load_dataset("imagefolder", tmp_path)


@pytest.mark.parametrize("content", [b"not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_unreadable_image_is_named(tmp_path, content):
    write_images(tmp_path, COLOURS)
    (tmp_path / "dog" / "broken.png").write_bytes(content)
    with pytest.raises(
        UserError,
        match=rf"^cannot read image {re.escape(str(tmp_path / 'dog' / 'broken.png'))}: .*remove or replace it",
    ):
        load_dataset("imagefolder", tmp_path)


# The MNIST family: tiny IDX files in the published format ----------------------


def write_idx(path: Path, array: np.ndarray, gz: bool = False, count: int | None = None) -> None:
    """An IDX file of unsigned bytes; ``count`` overrides the first dimension in the header."""
    import gzip

    shape = (count if count is not None else array.shape[0], *array.shape[1:])
    data = (
        struct.pack(">I", 0x0800 | array.ndim)
        + struct.pack(f">{array.ndim}I", *shape)
        + array.astype(np.uint8).tobytes()
    )
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def mnist_tree(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = False) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28)) // 2 + (labels * 12)[:, None, None]  # class-dependent brightness
        write_idx(root / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_keep_the_official_split_at_28x28(tmp_path, name, gz):
    data = load_dataset(name, mnist_tree(tmp_path / name, gz=gz))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and len(data.classes) == 10
    assert len(data.x_train) == 30 and len(data.x_val) == 10  # the test files are the validation set, whole
    assert data.y_val.tolist() == list(range(10))
    assert abs(float(data.x_train.mean())) < 1e-3 and abs(float(data.x_train.std()) - 1) < 1e-2
    assert (data.classes[0] == "T-shirt/top") == (name == "fashion-mnist")


def test_idx_images_and_labels_of_different_lengths_are_named(tmp_path):
    root = mnist_tree(tmp_path / "m")
    write_idx(root / "t10k-labels-idx1-ubyte", np.arange(9) % 10)
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte holds 10 images but .*t10k-labels-idx1-ubyte holds 9"):
        load_dataset("mnist", root)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: (root / "train-labels-idx1-ubyte").unlink(),
            "no train-labels-idx1-ubyte or train-labels-idx1-ubyte.gz",
        ),
        (
            lambda root: (root / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20),
            "not an IDX file",
        ),
        (lambda root: write_idx(root / "train-images-idx3-ubyte", np.zeros((30, 28, 28)), count=31), "header says"),
    ],
)
def test_broken_idx_files_are_named(tmp_path, damage, message):
    root = mnist_tree(tmp_path / "m")
    damage(root)
    with pytest.raises(UserError, match=message):
        load_dataset("mnist", root)


# --input-size ----------------------------------------------------------------


def test_input_size_resizes_every_image_and_keeps_the_split(digits):
    from edge_tune.data import parse_input_size

    assert parse_input_size("224") == (224, 224) and parse_input_size("96x128") == (96, 128)
    resized = load_dataset("digits", input_size=(40, 24))
    assert resized.input_shape == (1, 40, 24) and torch.equal(resized.y_val, digits.y_val)
    assert load_dataset("digits", input_size=(32, 32)).input_shape == digits.input_shape


@pytest.mark.parametrize("text", ["0", "abc", "3x", "-4", "10x10x3", "", "1.5"])
def test_bad_input_sizes_name_the_flag(text):
    from edge_tune.data import parse_input_size

    with pytest.raises(UserError, match=f"^--input-size {re.escape(text)}: "):
        parse_input_size(text)


def test_an_input_size_too_large_to_hold_in_memory_is_refused():
    with pytest.raises(UserError, match=r"--input-size 4000x4000: digits is held in memory.* GiB"):
        load_dataset("digits", input_size=(4000, 4000))


def test_imagefolder_train_and_val_are_used_as_given(tmp_path):
    write_images(tmp_path / "train", COLOURS, n=3)
    write_images(tmp_path / "val", COLOURS, n=1)
    data = load_dataset("imagefolder", tmp_path)
    assert data.classes == ("cat", "dog", "emu") and len(data.train) == 9 and len(data.val) == 3
    assert data.y_val.tolist() == [0, 1, 2] and torch.bincount(data.y_train).tolist() == [3, 3, 3]


@pytest.mark.parametrize("only", ["train", "val"])
def test_imagefolder_with_train_but_no_val_is_named(tmp_path, only):
    write_images(tmp_path / only, COLOURS)
    other = "val" if only == "train" else "train"
    with pytest.raises(UserError, match=rf"^--data-dir {re.escape(str(tmp_path))} has {only}/ but no {other}/"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_val_with_other_classes_is_named(tmp_path):
    write_images(tmp_path / "train", COLOURS)
    write_images(tmp_path / "val", {"cat": (1, 2, 3), "dog": (4, 5, 6), "fox": (7, 8, 9)}, n=1)
    with pytest.raises(UserError, match="only in train/: emu; only in val/: fox"):
        load_dataset("imagefolder", tmp_path)
