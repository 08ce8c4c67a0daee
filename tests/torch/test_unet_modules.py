"""Tests for the torch modules of the 3-D UNet spaces (kfnas.torch.unet)."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator

import pyglove as pg
import pytest

torch = pytest.importorskip("torch")

from kfnas.config.spec import TaskSpec  # noqa: E402
from kfnas.spaces.base import dna_spec, materialize  # noqa: E402
from kfnas.spaces.nasfpn import NASFPN, block_specs  # noqa: E402
from kfnas.spaces.unet import UNET_BASELINE, UNET_ENCODER, UNET_NASFPN  # noqa: E402
from kfnas.torch.unet import NasFpnCell3d, build_unet  # noqa: E402

SPACES = {s.name: s for s in (UNET_ENCODER, UNET_NASFPN, UNET_BASELINE)}
SIZE = 16
CLASSES = 3
#: Seeds of random architectures per space; ``test_seeds_cover_the_choices`` checks that they
#: hold bottleneck and basic blocks, identity skips, SE, and both combine functions.
SEEDS = {"unet_encoder": (0, 1, 2, 3), "unet_nasfpn": (0, 1, 2), "unet_baseline": (0,)}
CASES = [(name, seed) for name, seeds in SEEDS.items() for seed in seeds]


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These volumes are tiny: one thread is fastest, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def cached_spec(name: str) -> pg.DNASpec:
    return dna_spec(SPACES[name])


def random_arch(name: str, seed: int) -> pg.Object:
    dna = pg.random_dna(cached_spec(name), random_generator=random.Random(seed))
    return materialize(SPACES[name], dna)


def task(**options: object) -> TaskSpec:
    options = {"filter_size_scale": 0.125, **options}
    return TaskSpec(kind="segmentation_3d", num_classes=CLASSES, image_size=SIZE, options=options)


def volume(channels: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(7))


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_seeds_cover_the_choices() -> None:
    blocks = [b for s in SEEDS["unet_encoder"] for b in random_arch("unet_encoder", s).blocks]
    assert {b.block_type for b in blocks} == {"basic_block", "bottleneck_block"}
    assert {b.id_skip for b in blocks} == {False, True}
    assert {b.se_ratio for b in blocks} >= {0.0, 0.25, 0.5}
    assert {random_arch("unet_encoder", s).activation for s in SEEDS["unet_encoder"]} == {
        "relu",
        "swish",
    }
    combines = {
        spec[1] for s in SEEDS["unet_nasfpn"] for spec in block_specs(random_arch("unet_nasfpn", s))
    }
    assert combines == {"sum", "attention"}


@pytest.mark.parametrize(("name", "seed"), CASES)
def test_forward_shape_and_every_parameter_gets_a_gradient(name: str, seed: int) -> None:
    torch.manual_seed(0)
    model = build_unet(random_arch(name, seed), task())
    logits = model(volume())
    assert logits.shape == (2, CLASSES, SIZE, SIZE, SIZE)
    assert logits.dtype == torch.float32
    logits.square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", list(SPACES))
def test_same_seed_same_network(name: str) -> None:
    arch = random_arch(name, 1)
    outputs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        model = build_unet(arch, task()).eval()
        with torch.no_grad():
            outputs.append(model(volume()))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])


@pytest.mark.parametrize("name", list(SPACES))
def test_parameters_grow_with_filter_size_scale(name: str) -> None:
    arch = random_arch(name, 2)
    counts = [num_params(build_unet(arch, task(filter_size_scale=s))) for s in (0.125, 0.25)]
    assert counts[0] < counts[1]


def test_build_network_and_in_channels() -> None:
    network = UNET_ENCODER.build_network(random_arch("unet_encoder", 0), task(in_channels=2), None)
    assert network.decoder is None
    assert network.backbone(volume(2)).shape == (2, CLASSES, SIZE, SIZE, SIZE)


def test_decoder_knobs_of_unet_nasfpn() -> None:
    arch = random_arch("unet_nasfpn", 0)
    model = build_unet(arch, task(decoder_num_filters=4, decoder_num_repeats=3))
    cells = [m for m in model.modules() if isinstance(m, NasFpnCell3d)]
    assert len(cells) == 3
    assert model.head.in_channels == 4
    assert model(volume()).shape == (2, CLASSES, SIZE, SIZE, SIZE)


def test_baseline_is_the_encoder_reference_with_leaky_relu() -> None:
    baseline = build_unet(UNET_BASELINE.reference(), task())
    reference = build_unet(UNET_ENCODER.reference(), task())
    assert num_params(baseline) == num_params(reference)
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in baseline.encoder.modules())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in reference.encoder.modules())


def test_bottleneck_blocks_output_four_times_num_filters() -> None:
    arch = UNET_ENCODER.reference().clone(
        override={"blocks[1].block_type": "bottleneck_block", "blocks[1].id_skip": True}
    )
    model = build_unet(arch, task(filter_size_scale=1.0))
    assert model.encoder.widths == [32, 256, 128, 256]


def test_build_unet_refusals() -> None:
    with pytest.raises(ValueError, match="materialized"):
        build_unet(UNET_ENCODER.hyper(), task())
    with pytest.raises(ValueError, match="not a dict"):
        build_unet({}, task())
    with pytest.raises(ValueError, match="not one over levels"):
        build_unet(NASFPN.reference(), task())
    with pytest.raises(ValueError, match="filter_size_scale"):
        build_unet(UNET_BASELINE.reference(), task(filter_size_scale=0))
