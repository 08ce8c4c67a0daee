"""The augmentation ops (TensorFlow): each moves boxes and masks with the image it transforms.

Imported at trial time only (it imports TensorFlow). Every op in ``OPS`` is called as
``op.fn(image, boxes, mask, magnitude, prob)`` and returns ``(image, boxes, mask)``:

* ``image``: uint8 ``[H, W, 3]``;
* ``boxes``: normalized ``[N, 4]`` (ymin, xmin, ymax, xmax) or ``None``; an op never drops boxes
  (their classes stay aligned): a box moved out of the image is clipped to zero area, which the
  input pipeline then drops;
* ``mask``: a ``[H, W, 1]`` segmentation mask or ``None``; pixels a geometric op uncovers get
  ``MASK_REPLACE`` (255, ignored by the loss);
* ``magnitude``: an int 0..10, mapped to the op's parameter as in Vertex AI NAS (section 7.2 of the
  reference): enhance factor ``m/10*1.8+0.1``, solarize threshold ``int(m/10*256)``, solarize-add
  ``int(m/10*110)``, cutout half-side ``int(m/10*100)`` px, shift ``m/10*250`` px (120 inside
  boxes), shear ``m/10*0.3``, rotation ``m/10*30`` degrees; shifts, shears and rotations take a
  random sign;
* ``prob``: only the ``*OnlyBBoxes`` ops (``Op.per_box``) read it: each box is augmented with
  probability ``prob / 3``. Other ops are applied whenever called; policies gate them.

Randomness comes from TensorFlow's op-level random ops (``tf.random.uniform``), as in
official.vision; ``tf.random.set_seed`` makes a run repeatable.

The pixel ops are official.vision's (``official.vision.ops.augment``) except solarize; the
geometric ops are written here (``warp``).

To add an op: write ``fn(image, boxes, mask, magnitude, prob)`` and add it to ``OPS``, then add its
name to the op tables of ``kfnas.augment.tables``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import tensorflow as tf
from official.vision.ops import augment

from kfnas.augment.tables import MAX_MAGNITUDE

#: Fill of the image pixels a geometric op or a cutout uncovers.
REPLACE = (128, 128, 128)
#: Fill of the mask pixels a geometric op or a segmentation cutout uncovers (ignored label).
MASK_REPLACE = 255
#: Cutout half-side at magnitude 10, in pixels.
MAX_PAD_SIZE = 100
#: Image shift at magnitude 10, in pixels.
MAX_SHIFT = 250
#: Shift inside a box at magnitude 10, in pixels (``Translate*OnlyBBoxes``).
MAX_BBOX_SHIFT = 120
#: Shear level at magnitude 10.
MAX_SHEAR = 0.3
#: Rotation at magnitude 10, in degrees.
MAX_ROTATE_DEGREES = 30.0
#: ``*OnlyBBoxes`` ops augment each box with probability ``prob * BBOX_PROB_SCALE``.
BBOX_PROB_SCALE = 1.0 / 3.0

Tensors = tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]
OpFn = Callable[[tf.Tensor, tf.Tensor | None, tf.Tensor | None, int, float], Tensors]


@dataclasses.dataclass(frozen=True)
class Op:
    """One op of ``OPS``.

    Attributes:
        fn: ``(image, boxes, mask, magnitude, prob) -> (image, boxes, mask)``.
        geometric: Whether it moves pixels (and so boxes and masks), rather than changing values.
        per_box: Whether it augments inside each box with probability ``prob / 3`` (detection's
            ``*OnlyBBoxes`` ops); boxes and masks stay as they are.
    """

    fn: OpFn
    geometric: bool = False
    per_box: bool = False


def _level(magnitude: int) -> float:
    return magnitude / MAX_MAGNITUDE


def _enhance_factor(magnitude: int) -> float:
    return _level(magnitude) * 1.8 + 0.1


def _random_sign(value: float) -> tf.Tensor:
    value = tf.constant(value, tf.float32)
    return tf.where(tf.random.uniform([]) < 0.5, -value, value)


def _size(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    shape = tf.shape(image)
    return tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)


# Geometry. A forward matrix maps input pixel-centre coordinates (x, y, 1) to output ones.


def _matrix(rows: list[list[tf.Tensor | float]]) -> tf.Tensor:
    return tf.stack(
        [tf.stack([tf.cast(v, tf.float32) for v in row]) for row in [*rows, [0.0, 0.0, 1.0]]]
    )


def _translation(dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    return _matrix([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def _shear(level: tf.Tensor, horizontal: bool) -> tf.Tensor:
    if horizontal:
        return _matrix([[1.0, level, 0.0], [0.0, 1.0, 0.0]])
    return _matrix([[1.0, 0.0, 0.0], [level, 1.0, 0.0]])


def _rotation(degrees: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """Rotation about the image centre (clockwise on screen for positive degrees)."""
    radians = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(radians), tf.sin(radians)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    return _matrix(
        [
            [cos, -sin, cx - cos * cx + sin * cy],
            [sin, cos, cy - sin * cx - cos * cy],
        ]
    )


def _warp_boxes(boxes: tf.Tensor, forward: tf.Tensor, height: tf.Tensor, width: tf.Tensor):
    """The boxes enclosing the warped corners of ``boxes``, clipped to the image."""
    dtype = boxes.dtype
    b = tf.cast(boxes, tf.float32)
    # Box edges in pixel-centre coordinates: a box over pixels a..b-1 spans [a - 0.5, b - 0.5].
    y0, x0 = b[:, 0] * height - 0.5, b[:, 1] * width - 0.5
    y1, x1 = b[:, 2] * height - 0.5, b[:, 3] * width - 0.5
    xs = tf.stack([x0, x1, x0, x1], axis=1)
    ys = tf.stack([y0, y0, y1, y1], axis=1)
    nx = forward[0, 0] * xs + forward[0, 1] * ys + forward[0, 2]
    ny = forward[1, 0] * xs + forward[1, 1] * ys + forward[1, 2]
    out = tf.stack(
        [
            (tf.reduce_min(ny, axis=1) + 0.5) / height,
            (tf.reduce_min(nx, axis=1) + 0.5) / width,
            (tf.reduce_max(ny, axis=1) + 0.5) / height,
            (tf.reduce_max(nx, axis=1) + 0.5) / width,
        ],
        axis=1,
    )
    return tf.cast(tf.clip_by_value(out, 0.0, 1.0), dtype)


def warp(
    image: tf.Tensor, boxes: tf.Tensor | None, mask: tf.Tensor | None, forward: tf.Tensor
) -> Tensors:
    """Warps the image, the boxes and the mask by one forward matrix (constant fills).

    The geometric ops are written here, on official.vision's projective ``transform`` and its
    ``wrap``/``unwrap`` fill, because official.vision's translate, shear and rotate fill uncovered
    pixels by reflection (so boxes no longer enclose what they show) and handle no masks: here one
    forward matrix warps the image, the mask and the box corners alike, with a constant fill.

    Args:
        image: uint8 ``[H, W, 3]``.
        boxes: Normalized ``[N, 4]`` boxes, or ``None``.
        mask: ``[H, W, 1]`` mask, or ``None``.
        forward: ``[3, 3]`` float32 matrix from input to output pixel-centre coordinates.

    Returns:
        The warped ``(image, boxes, mask)``; uncovered pixels hold ``REPLACE`` in the image and
        ``MASK_REPLACE`` in the mask, boxes enclose their warped corners, clipped to the image.
    """
    inverse = tf.linalg.inv(forward)  # The op samples each output pixel from the input.
    transform = tf.concat([tf.reshape(inverse[:2], [6]), tf.zeros([2], tf.float32)], axis=0)
    warped = augment.transform(
        augment.wrap(image), transform, interpolation="nearest", fill_mode="constant"
    )
    image = augment.unwrap(warped, tf.constant(REPLACE, image.dtype))
    if mask is not None:
        mask = augment.transform(
            mask,
            transform,
            interpolation="nearest",
            fill_mode="constant",
            fill_value=float(MASK_REPLACE),
        )
    if boxes is not None:
        height, width = _size(image)
        boxes = _warp_boxes(boxes, forward, height, width)
    return image, boxes, mask


def _translate(horizontal: bool, max_shift: float) -> Callable[..., Tensors]:
    def fn(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
        del prob
        shift = tf.round(_random_sign(_level(magnitude) * max_shift))
        forward = _translation(shift, 0.0) if horizontal else _translation(0.0, shift)
        return warp(image, boxes, mask, forward)

    return fn


def _shear_op(horizontal: bool) -> Callable[..., Tensors]:
    def fn(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
        del prob
        level = _random_sign(_level(magnitude) * MAX_SHEAR)
        return warp(image, boxes, mask, _shear(level, horizontal))

    return fn


def _rotate(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
    del prob
    degrees = _random_sign(_level(magnitude) * MAX_ROTATE_DEGREES)
    height, width = _size(image)
    return warp(image, boxes, mask, _rotation(degrees, height, width))


# Pixel ops: the image changes, boxes and masks do not.


def _solarize(image: tf.Tensor, threshold: int) -> tf.Tensor:
    """official.vision's solarize compares uint8 pixels with 256, which wraps to 0: not reused."""
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


# Equalize, color, sharpness, solarize-add and cutout are official.vision's.
_PIXEL_FNS: dict[str, Callable[[tf.Tensor, int], tf.Tensor]] = {
    "Equalize": lambda image, m: augment.equalize(image),
    "Solarize": lambda image, m: _solarize(image, int(_level(m) * 256)),
    "Color": lambda image, m: augment.color(image, _enhance_factor(m)),
    "Sharpness": lambda image, m: augment.sharpness(image, _enhance_factor(m)),
    "SolarizeAdd": lambda image, m: augment.solarize_add(image, int(_level(m) * 110), 128),
    "CutoutImage": lambda image, m: augment.cutout(
        image, int(_level(m) * MAX_PAD_SIZE), REPLACE[0]
    ),
}


def _pixel(name: str) -> Callable[..., Tensors]:
    image_fn = _PIXEL_FNS[name]

    def fn(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
        del prob
        return image_fn(image, magnitude), boxes, mask

    return fn


def _cutout_segmentation(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
    """A square of side ``2 * pad`` at a random centre, filled in the image and the mask."""
    del prob
    pad = int(_level(magnitude) * MAX_PAD_SIZE)
    shape = tf.shape(image)
    cy = tf.random.uniform([], 0, shape[0], tf.int32)
    cx = tf.random.uniform([], 0, shape[1], tf.int32)
    rows = tf.range(shape[0])[:, None]
    cols = tf.range(shape[1])[None, :]
    inside = (rows >= cy - pad) & (rows < cy + pad) & (cols >= cx - pad) & (cols < cx + pad)
    inside = inside[:, :, None]
    image = tf.where(inside, tf.constant(REPLACE, image.dtype), image)
    if mask is not None:
        mask = tf.where(inside, tf.cast(MASK_REPLACE, mask.dtype), mask)
    return image, boxes, mask


# Ops inside each box (detection): the crop of a box is augmented in place; boxes stay.


def _in_each_box(image: tf.Tensor, boxes: tf.Tensor, prob: float, crop_fn) -> tf.Tensor:
    """Applies ``crop_fn`` to the pixels of each box with probability ``prob * BBOX_PROB_SCALE``."""
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    hf, wf = _size(image)
    boxes = tf.cast(boxes, tf.float32)
    chance = prob * BBOX_PROB_SCALE

    def body(i: tf.Tensor, current: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        box = boxes[i]
        y0 = tf.clip_by_value(tf.cast(tf.floor(box[0] * hf), tf.int32), 0, height - 1)
        x0 = tf.clip_by_value(tf.cast(tf.floor(box[1] * wf), tf.int32), 0, width - 1)
        y1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[2] * hf), tf.int32), y0 + 1, height)
        x1 = tf.clip_by_value(tf.cast(tf.math.ceil(box[3] * wf), tf.int32), x0 + 1, width)
        nonempty = (box[2] > box[0]) & (box[3] > box[1])

        def augmented() -> tf.Tensor:
            crop = crop_fn(current[y0:y1, x0:x1])
            paddings = [[y0, height - y1], [x0, width - x1], [0, 0]]
            inside = tf.pad(tf.ones([y1 - y0, x1 - x0, 1], tf.bool), paddings)
            return tf.ensure_shape(tf.where(inside, tf.pad(crop, paddings), current), current.shape)

        apply = nonempty & (tf.random.uniform([]) < chance)
        return i + 1, tf.cond(apply, augmented, lambda: current)

    _, image = tf.while_loop(lambda i, _: i < tf.shape(boxes)[0], body, [tf.constant(0), image])
    return image


def _only_boxes(crop_op: Callable[[tf.Tensor, int], tf.Tensor]) -> Callable[..., Tensors]:
    def fn(image, boxes, mask, magnitude: int, prob: float = 1.0) -> Tensors:
        if boxes is None or prob <= 0:
            return image, boxes, mask
        return _in_each_box(image, boxes, prob, lambda crop: crop_op(crop, magnitude)), boxes, mask

    return fn


def _warp_crop(op: Callable[..., Tensors]) -> Callable[[tf.Tensor, int], tf.Tensor]:
    return lambda crop, magnitude: op(crop, None, None, magnitude)[0]


#: Op name -> ``Op``. Names are those of ``kfnas.augment.tables``.
OPS: dict[str, Op] = {
    **{name: Op(_pixel(name)) for name in _PIXEL_FNS},
    "CutoutSegmentation": Op(_cutout_segmentation),
    "TranslateX": Op(_translate(True, MAX_SHIFT), geometric=True),
    "TranslateY": Op(_translate(False, MAX_SHIFT), geometric=True),
    "ShearX": Op(_shear_op(True), geometric=True),
    "ShearY": Op(_shear_op(False), geometric=True),
    "Rotate": Op(_rotate, geometric=True),
    "SolarizeOnlyBBoxes": Op(_only_boxes(_PIXEL_FNS["Solarize"]), per_box=True),
    "CutoutOnlyBBoxes": Op(_only_boxes(_PIXEL_FNS["CutoutImage"]), per_box=True),
    "EqualizeOnlyBBoxes": Op(_only_boxes(_PIXEL_FNS["Equalize"]), per_box=True),
    "FlipOnlyBBoxes": Op(_only_boxes(lambda crop, m: tf.image.flip_left_right(crop)), per_box=True),
    "TranslateXOnlyBBoxes": Op(
        _only_boxes(_warp_crop(_translate(True, MAX_BBOX_SHIFT))), per_box=True
    ),
    "TranslateYOnlyBBoxes": Op(
        _only_boxes(_warp_crop(_translate(False, MAX_BBOX_SHIFT))), per_box=True
    ),
    "ShearXOnlyBBoxes": Op(_only_boxes(_warp_crop(_shear_op(True))), per_box=True),
    "ShearYOnlyBBoxes": Op(_only_boxes(_warp_crop(_shear_op(False))), per_box=True),
    "RotateOnlyBBoxes": Op(_only_boxes(_warp_crop(_rotate)), per_box=True),
}


def apply_op(
    name: str,
    image: tf.Tensor,
    boxes: tf.Tensor | None = None,
    mask: tf.Tensor | None = None,
    magnitude: int = MAX_MAGNITUDE,
    prob: float = 1.0,
) -> Tensors:
    """Applies the op ``name`` of ``OPS`` (see the module docstring), keeping static shapes.

    Raises:
        KeyError: Unknown op (the message lists the known ones).
    """
    if name not in OPS:
        raise KeyError(f"unknown augmentation op {name!r}; known ops: {', '.join(sorted(OPS))}")
    new_image, new_boxes, new_mask = OPS[name].fn(image, boxes, mask, magnitude, prob)
    new_image = tf.ensure_shape(new_image, image.shape)
    if boxes is not None:
        new_boxes = tf.ensure_shape(new_boxes, boxes.shape)
    if mask is not None:
        new_mask = tf.ensure_shape(new_mask, mask.shape)
    return new_image, new_boxes, new_mask


__all__ = [
    "BBOX_PROB_SCALE",
    "MASK_REPLACE",
    "MAX_BBOX_SHIFT",
    "MAX_PAD_SIZE",
    "MAX_ROTATE_DEGREES",
    "MAX_SHEAR",
    "MAX_SHIFT",
    "OPS",
    "REPLACE",
    "Op",
    "apply_op",
    "warp",
]
