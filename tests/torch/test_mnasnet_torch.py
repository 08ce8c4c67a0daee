"""``kfnas.torch.mnasnet.build_mnasnet`` against the TensorFlow classification build.

The references (MobileNetV2 of ``mnasnet``, MnasNet-A1 of ``mnasnet_a1``) have, at 224 px and
1000 classes, the TF build's parameter count, both counted the same way: all weights including
the batch norm moving statistics (torch parameters plus ``running_mean``/``running_var``, TF
``count_params()``), and trainable only (torch ``requires_grad`` parameters, TF
``trainable_weights``). With the TF model's weights copied over (and batch norm statistics
calibrated on the batch, so that the logits depend on the image), the torch model gives the TF
logits on 40 px images, whose stride-2 convs see even sides (TF's asymmetric ``'same'`` padding)
and odd ones; the architectures cover ``conv`` and ``mbconv`` blocks, squeeze-and-excitation and
the relu, swish and hard_swish activations. Random architectures and small option settings build
and run forward without TensorFlow.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import numpy as np
import pyglove as pg
import pytest

torch = pytest.importorskip("torch")

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec  # noqa: E402
from kfnas.spaces.base import dna_spec, materialize  # noqa: E402
from kfnas.spaces.mnasnet import MNASNET, MNASNET_A1, MnasNetSpace  # noqa: E402
from kfnas.torch.mnasnet import (  # noqa: E402
    Conv2dSame,
    InvertedBottleneck,
    SqueezeExcitation,
    StochasticDepth,
    build_mnasnet,
    same_padding,
)

#: MobileNetV2 (1.0, 224, 1000 classes) as published (Keras applications): trainable weights.
MOBILENET_V2_TRAINABLE = 3_504_872
SMALL = TaskSpec(kind="classification", num_classes=5, image_size=32)


def torch_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters + batch norm running mean/var, trainable parameters)."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        b.numel()
        for name, b in model.named_buffers()
        if name.endswith(("running_mean", "running_var"))
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return params + stats, trainable


def tf_model(space: MnasNetSpace, arch, task: TaskSpec):
    """The TF classification model of ``arch``, as a trial builds it (task + space network)."""
    import tf_keras

    from kfnas.tasks import TASKS

    kind = TASKS.get("classification")
    official_task = kind.build_task(task, DataSpec(), BudgetSpec(batch_size=2))
    specs = tf_keras.layers.InputSpec(shape=[None, *kind.input_shape(task)])
    return kind.build_model(official_task, space.build_network(arch, task, specs))


def random_arch(space: MnasNetSpace, seed: int):
    return materialize(space, pg.random_dna(dna_spec(space), random.Random(seed)))


@pytest.mark.tf
@pytest.mark.parametrize("space", [MNASNET, MNASNET_A1], ids=lambda s: s.reference_name)
def test_reference_has_the_tf_parameter_count(space: MnasNetSpace) -> None:
    task = TaskSpec(kind="classification", num_classes=1000, image_size=224)
    arch = space.reference()
    model = build_mnasnet(arch, task)
    tf_net = tf_model(space, arch, task)
    tf_trainable = sum(int(w.shape.num_elements()) for w in tf_net.trainable_weights)
    # MobileNetV2: 3,538,984 with BN statistics, 3,504,872 trainable; MnasNet-A1: 3,920,526 and
    # 3,887,038.
    assert torch_counts(model) == (tf_net.count_params(), tf_trainable)
    if space is MNASNET:
        assert tf_trainable == MOBILENET_V2_TRAINABLE
    has_se = any(isinstance(m, SqueezeExcitation) for m in model.modules())
    assert has_se is (space is MNASNET_A1)
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def copy_tf_weights(tf_net, model: torch.nn.Module) -> None:
    """Copies the TF weights in creation order (trainable, then BN statistics), checking shapes."""
    params = list(model.parameters())
    stats = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    pairs = list(zip(tf_net.trainable_weights, params, strict=True))
    pairs += list(zip(tf_net.non_trainable_weights, stats, strict=True))
    with torch.no_grad():
        for variable, tensor in pairs:
            value = variable.numpy()
            if value.ndim == 4:  # (k, k, in, out) or depthwise (k, k, in, 1) -> torch layout.
                depthwise = "depthwise" in variable.name
                value = value.transpose((2, 3, 0, 1) if depthwise else (3, 2, 0, 1))
            elif value.ndim == 2:
                value = value.T
            assert tuple(value.shape) == tuple(tensor.shape), variable.name
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def calibrate(model: torch.nn.Module, tf_net, images: torch.Tensor) -> None:
    """Sets every batch norm's statistics to those of ``images`` and widens the logits layer.

    With untrained statistics (mean 0, variance 1) eval-mode batch norm shrinks the signal layer
    after layer until the logits no longer depend on the input; calibrated ones keep it. The
    logits kernel (uniform in [-0.05, 0.05] at the start) is redrawn from a unit normal so that
    the logits differ between images by more than the tolerance. Torch's values go to TF.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(1)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # Cumulative average: one batch gives its own statistics.
        norm.weight.data.uniform_(0.5, 1.5, generator=generator)
        norm.bias.data.uniform_(-0.1, 0.1, generator=generator)
    with torch.no_grad():
        model.train()(images)
        model.classifier.weight.normal_(generator=generator)
    model.eval()
    tf_net.trainable_weights[-2].assign(model.classifier.weight.detach().numpy().T)
    tf_gammas = [w for w in tf_net.trainable_weights if "gamma" in w.name]
    tf_betas = [w for w in tf_net.trainable_weights if "beta" in w.name]
    stats = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    pairs = list(zip(tf_net.non_trainable_weights, stats, strict=True))
    pairs += list(zip(tf_gammas, [m.weight for m in norms], strict=True))
    pairs += list(zip(tf_betas, [m.bias for m in norms], strict=True))
    for variable, tensor in pairs:
        variable.assign(tensor.detach().numpy())


@pytest.mark.tf
@pytest.mark.parametrize(
    ("space", "seed", "options"),
    [
        (MNASNET_A1, None, {}),
        (MNASNET, 3, {"activation": "swish", "add_head_batch_norm": True}),
        (MNASNET, 8, {"activation": "hard_swish", "endpoints_num_filters": 24}),
    ],
)
def test_copied_tf_weights_give_the_tf_logits(space, seed, options) -> None:
    # 40 px: stride-2 convs see even sides (40, 20, 10) and odd ones (5, 3).
    task = TaskSpec(kind="classification", num_classes=7, image_size=40, options=options)
    arch = space.reference() if seed is None else random_arch(space, seed)
    tf_net = tf_model(space, arch, task)
    model = build_mnasnet(arch, task).eval()
    copy_tf_weights(tf_net, model)
    images = np.random.default_rng(0).standard_normal((8, 40, 40, 3)).astype("float32")
    inputs = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    calibrate(model, tf_net, inputs)
    expected = tf_net(images, training=False).numpy()
    with torch.no_grad():
        got = model(inputs).numpy()
    assert got.shape == (8, 7)
    # The logits depend on the image (a wrong padding or block would show), and match TF's.
    assert np.ptp(expected, axis=0).min() > 0.1
    # float32 sums in another order: 1e-4 of the logits' scale (a wrong layer is off by ~ptp).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("space", "seed"),
    [(MNASNET, 0), (MNASNET, 1), (MNASNET, 2), (MNASNET, 5), (MNASNET_A1, 0)],
    ids=lambda v: getattr(v, "name", v),
)
def test_random_architectures_run_forward(space: MnasNetSpace, seed: int) -> None:
    arch = random_arch(space, seed)
    model = build_mnasnet(arch, SMALL)
    logits = model.eval()(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, SMALL.num_classes)
    assert torch.isfinite(logits).all()
    blocks = sum(block.num_repeats for block in arch.blocks)
    assert len(model.blocks) == blocks


def test_small_options_train_with_stochastic_depth() -> None:
    options = {
        "endpoints_num_filters": 16,
        "activation": "relu6",
        "init_stochastic_depth_rate": 0.2,
        "dropout_rate": 0.0,
        "norm_momentum": 0.9,
        "norm_epsilon": 1e-5,
    }
    task = TaskSpec(kind="classification", num_classes=3, image_size=32, options=options)
    model = build_mnasnet(MNASNET.reference(), task).train()
    assert model.classifier.in_features == 16
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(round(m.momentum, 6), m.eps) for m in norms} == {(0.1, 1e-5)}
    drops = [m for m in model.modules() if isinstance(m, StochasticDepth)]
    # Residual MobileNetV2 blocks only (stride 1, same width): 10 of 17; not the last (rate 0.2).
    assert len(drops) == 10 and max(d.rate for d in drops) < 0.2
    assert all(not isinstance(m, torch.nn.ReLU) for m in model.modules())
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(dim=1).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_defaults_follow_the_tf_build() -> None:
    model = build_mnasnet(MNASNET.reference(), SMALL)
    assert model.classifier.in_features == 1280  # The classification head conv.
    assert model.dropout.p == pytest.approx(0.2)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (bn.momentum, bn.eps) == (pytest.approx(0.01), 1e-3)
    assert not any(isinstance(m, StochasticDepth) for m in model.modules())
    first = model.blocks[0]
    assert isinstance(first, InvertedBottleneck)
    assert isinstance(first.expand, torch.nn.Identity)  # Expansion 1: no 1x1 expansion.


@pytest.mark.parametrize(
    ("size", "kernel", "stride"), [(32, 3, 2), (5, 5, 2), (7, 3, 1), (9, 5, 2)]
)
def test_conv_pads_like_tf_same(size: int, kernel: int, stride: int) -> None:
    conv = Conv2dSame(2, 2, kernel, stride)
    assert conv(torch.zeros(1, 2, size, size)).shape[-1] == -(-size // stride)
    assert same_padding(32, 3, 2) == (0, 1) and same_padding(32, 5, 2) == (1, 2)
    assert same_padding(5, 3, 2) == (1, 1)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="materialized"):
        build_mnasnet(MNASNET.hyper(), SMALL)
    task = TaskSpec(kind="classification", options={"activation": "gelu"})
    with pytest.raises(ValueError, match="activation 'gelu'"):
        build_mnasnet(MNASNET.reference(), task)
    arch = MNASNET.reference().clone(override={"blocks[0].block_fn": "sep"})
    with pytest.raises(ValueError, match="'sep'"):
        build_mnasnet(arch, SMALL)


def test_registry_entry_and_no_tensorflow_import() -> None:
    from kfnas.torch.networks import TORCH_NETWORKS

    assert TORCH_NETWORKS.get("mnasnet") is build_mnasnet
    assert TORCH_NETWORKS.get("mnasnet_a1") is build_mnasnet
    code = (
        "import sys, kfnas.torch.mnasnet as m; from kfnas.config.spec import TaskSpec;"
        "from kfnas.spaces.mnasnet import MNASNET;"
        "m.build_mnasnet(MNASNET.reference(), TaskSpec(kind='classification'));"
        "sys.exit(int(any(k in sys.modules for k in ('tensorflow', 'tf_keras', 'official'))))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
