"""Geometry of a ShadedScenes scene: the semantic factors ``s`` and the labels they fix.

The semantic factors are a rolling ground (a gently tilted plane plus two long sinusoidal waves) and
1-5 objects of 6 shape classes, each with a position, size, height and angle. Their law is the same
in every domain (the shift of paper §2, Assumption 2.2, moves only the residual factors), so the
labels of scene ``i`` -- segmentation, depth and normals -- are bit-identical in every domain for the
same seed.

Camera. An orthographic camera looks straight down the ``-z`` axis from height
:data:`CAMERA_HEIGHT`; the scene is a height field ``z(x, y)`` over ``[-1, 1]^2`` (``x`` to the right
along image columns, ``y`` up along image rows, so row 0 is ``y = +1``). Depth is
``CAMERA_HEIGHT - z`` and the unit normal is ``(-dz/dx, -dz/dy, 1) / norm`` from the analytic
height-field gradient of the visible surface (``z`` towards the camera).

Shapes. Seen from straight above a shape shows only its footprint and its shading, so every class
has a footprint or a relief of its own: a dome (hemisphere: a disc, smooth shading), a cone (a disc
with a peak), a cylinder lying on its side (a long rectangle, shaded across), a box (a flat square),
a three-sided pyramid (a triangle of three facets) and a torus (a ring). Objects are large (size
factor 0.35-0.55 of the half-width, 11-18 pixels at 64 x 64; 3.4 per scene on average) and every
class has its own proportions (:data:`SHAPE_SIZE_RANGES`, :data:`SHAPE_HEIGHT_RANGES`).

Ground. The ground rolls (:data:`GROUND_WAVE_AMPLITUDE`, :data:`GROUND_WAVE_OMEGA`): its normals
tilt by up to about 20 degrees, so that normals and depth are something a model must read from the
image's shading, not a constant it can guess. Objects rest on the ground at their centre (on a
slope, the ground may cut into the low side of a footprint).
"""

from __future__ import annotations

import math

import torch

from coremtl_lite.data import _random

CLASS_NAMES = ("ground", "hemisphere", "cone", "cylinder", "box", "pyramid", "torus")
#: the version of the scene generator: runs and caches keyed by it are never read across versions
#: (3: distinct footprints -- lying cylinder, three-sided pyramid -- and a rolling ground)
SCENES_VERSION = 3
NUM_CLASSES = len(CLASS_NAMES)
SHAPES = CLASS_NAMES[1:]
NUM_SHAPES = len(SHAPES)
MAX_OBJECTS = 5
NUM_SURFACES = MAX_OBJECTS + 1  # residual per-surface arrays: objects 0..4, then the ground (index 5)
GROUND = MAX_OBJECTS
CAMERA_HEIGHT = 3.0

#: P(number of objects = 1, 2, 3, 4, 5): 3.4 on average
NUM_OBJECTS_PROBS = (0.1, 0.15, 0.25, 0.25, 0.25)
#: per shape class (in :data:`SHAPES` order), the uniform ranges of the size factor r (footprint radius
#: or half-length) and of the height: every class has its own proportions -- a tall cone, a flat
#: torus, a long lying cylinder -- as object classes do in street scenes, which makes them learnable
#: from their silhouette and shading alone
SHAPE_SIZE_RANGES = ((0.4, 0.55), (0.35, 0.5), (0.35, 0.5), (0.4, 0.55), (0.4, 0.55), (0.45, 0.55))
SHAPE_HEIGHT_RANGES = ((0.35, 0.5), (0.6, 0.9), (0.25, 0.45), (0.3, 0.55), (0.5, 0.8), (0.15, 0.3))
SIZE_RANGE = (min(r[0] for r in SHAPE_SIZE_RANGES), max(r[1] for r in SHAPE_SIZE_RANGES))
HEIGHT_RANGE = (min(r[0] for r in SHAPE_HEIGHT_RANGES), max(r[1] for r in SHAPE_HEIGHT_RANGES))
POSITION_RANGE = 0.6  # object centres uniform in [-0.6, 0.6]^2
# the ground z = a x + b y + c + sum_k A sin(omega_k (cos t_k x + sin t_k y) + phi_k), k = 1, 2:
# slopes a, b uniform in [-GROUND_TILT, GROUND_TILT], c in [-GROUND_HEIGHT, GROUND_HEIGHT], wave
# directions t_k and phases phi_k uniform on the circle, angular frequencies omega_k uniform in
# GROUND_WAVE_OMEGA (0.4-0.75 periods across the image's width of 2). The tilt and height of a plane
# cannot be seen from straight above (a plane under one light has one colour) and are kept small;
# the waves can (their shading varies), with slopes of up to A * omega = 0.19 each
GROUND_TILT = 0.03
GROUND_HEIGHT = 0.02
GROUND_WAVES = 2
GROUND_WAVE_AMPLITUDE = 0.04
GROUND_WAVE_OMEGA = (0.75 * math.pi, 1.5 * math.pi)
MAX_SIZE = SIZE_RANGE[1]

SEMANTIC_KEYS = (
    "num_objects",
    "valid",
    "shape",
    "position",
    "size",
    "height",
    "angle",
    "ground_tilt",
    "ground_height",
    "ground_waves",
)

#: footprint proportions in units of the size ``r``: the lying cylinder is ``2 r`` long and
#: ``2 * CYLINDER_RADIUS * r`` wide, the box ``2 * BOX_HALF_WIDTH * r`` wide, and the pyramid's
#: triangle has inradius ``PYRAMID_INRADIUS * r`` (circumradius twice that)
CYLINDER_RADIUS = 0.45
BOX_HALF_WIDTH = 0.8
PYRAMID_INRADIUS = 0.6
#: farthest footprint point from the centre per shape, in units of the size ``r`` (a disc containing
#: the footprint: the renderer only evaluates a shape on the pixels of its disc)
FOOTPRINT_REACH = {
    "hemisphere": 1.0,
    "cone": 1.0,
    "cylinder": math.hypot(1.0, CYLINDER_RADIUS),
    "torus": 1.0,
    "box": BOX_HALF_WIDTH * math.sqrt(2.0),
    "pyramid": 2.0 * PYRAMID_INRADIUS,
}
#: the candidate disc of an object reaches this many pixels beyond its footprint: a pixel centre inside
#: the footprint is at most the reach from the centre, so the margin only has to absorb float rounding
#: (the candidates outside the footprint get height -inf and never win a pixel)
CANDIDATE_MARGIN = 0.25
MAX_EXTENT = MAX_SIZE * max(FOOTPRINT_REACH.values())  # farthest footprint point from a centre
_REACH = torch.tensor([FOOTPRINT_REACH[name] for name in SHAPES])  # per class, in SHAPES order
#: the outward normals of the pyramid's three facets in the object frame
_PYRAMID_FACETS = [(math.cos(t), math.sin(t)) for t in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
_PYRAMID_FACET_TABLE = torch.tensor(_PYRAMID_FACETS)


def object_factors(u: torch.Tensor, shape: torch.Tensor) -> dict[str, torch.Tensor]:
    """Position ``(..., 2)``, size, height and angle of objects of classes ``shape`` (``(...)``, 0-5)
    from 5 uniforms ``u (..., 5)`` each (:data:`SHAPE_SIZE_RANGES`, :data:`SHAPE_HEIGHT_RANGES`)."""
    cls = shape.clamp(0, NUM_SHAPES - 1)
    size_lo, size_hi = torch.tensor(SHAPE_SIZE_RANGES)[cls].unbind(-1)
    height_lo, height_hi = torch.tensor(SHAPE_HEIGHT_RANGES)[cls].unbind(-1)
    return {
        "position": (u[..., 0:2] * 2.0 - 1.0) * POSITION_RANGE,
        "size": size_lo + (size_hi - size_lo) * u[..., 2],
        "height": height_lo + (height_hi - height_lo) * u[..., 3],
        "angle": u[..., 4] * math.pi,
    }


def sample_semantic(seed: int, global_indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """The semantic factors of scenes ``global_indices`` (a pure function of seed and index).

    The number of objects follows :data:`NUM_OBJECTS_PROBS`; shapes are uniform over the 6 classes;
    each object's position, size, height and angle come from :func:`object_factors` (by class). Invalid object
    slots hold zeros (shape ``-1``).
    """
    u = _random.uniform(_random.keys(seed, _random.stream_id("semantic"), global_indices), 40)
    b = len(global_indices)
    cdf = torch.tensor(NUM_OBJECTS_PROBS).cumsum(0)[:-1]
    num = 1 + (u[:, 0:1] > cdf[None, :]).sum(1)
    valid = torch.arange(MAX_OBJECTS)[None, :] < num[:, None]
    shape = (u[:, 1:6] * NUM_SHAPES).long().clamp_max(NUM_SHAPES - 1)
    obj = object_factors(u[:, 6:31].view(b, MAX_OBJECTS, 5), shape)
    vf = valid.float()
    return {
        "num_objects": num,
        "valid": valid,
        "shape": torch.where(valid, shape, -1),
        "position": obj["position"] * vf[..., None],
        "size": obj["size"] * vf,
        "height": obj["height"] * vf,
        "angle": obj["angle"] * vf,
        "ground_tilt": (u[:, 31:33] - 0.5) * GROUND_TILT * 2.0,
        "ground_height": (u[:, 33] - 0.5) * GROUND_HEIGHT * 2.0,
        "ground_waves": ground_waves(u[:, 34 : 34 + 3 * GROUND_WAVES].view(b, GROUND_WAVES, 3)),
    }


def ground_waves(u: torch.Tensor) -> torch.Tensor:
    """The ground's waves ``(..., GROUND_WAVES, 3)`` -- direction, angular frequency, phase -- from
    uniforms ``u`` of the same shape."""
    lo, hi = GROUND_WAVE_OMEGA
    return torch.stack([u[..., 0] * (2 * math.pi), lo + (hi - lo) * u[..., 1], u[..., 2] * (2 * math.pi)], -1)


def ground_surface(
    tilt: torch.Tensor, height: torch.Tensor, waves: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Height ``z`` of the rolling ground at ``(x, y)`` and its analytic gradient ``(dz/dx, dz/dy)``.

    ``z = a x + b y + c + sum_k A sin(omega_k (cos t_k x + sin t_k y) + phi_k)`` with ``(a, b) =
    tilt``, ``c = height`` and ``(t_k, omega_k, phi_k) = waves[..., k, :]``. The factors' leading
    dims must broadcast against ``x`` and ``y``: ``tilt (..., 2)``, ``height (...)``, ``waves (...,
    GROUND_WAVES, 3)``.
    """
    a, b = tilt[..., 0], tilt[..., 1]
    a_all, b_all = torch.broadcast_tensors(a, b, x, y)[:2]  # the slopes at every point
    z, gx, gy = a * x + b * y + height, a_all.clone(), b_all.clone()
    for k in range(waves.shape[-2]):
        t, omega, phi = waves[..., k, 0], waves[..., k, 1], waves[..., k, 2]
        ct, st = torch.cos(t), torch.sin(t)
        arg = omega * (ct * x + st * y) + phi
        z = z + GROUND_WAVE_AMPLITUDE * torch.sin(arg)
        slope = GROUND_WAVE_AMPLITUDE * omega * torch.cos(arg)
        gx, gy = gx + slope * ct, gy + slope * st
    return z, gx, gy


def surface_classes(shape: torch.Tensor) -> torch.Tensor:
    """Segmentation class of every surface ``(B, 6)``: objects' shape + 1 (0 for empty slots), ground 0."""
    return torch.cat([shape.clamp_min(0) + 1, torch.zeros(shape.shape[0], 1, dtype=torch.long)], 1)


def _shape_surface(
    shape: int,
    dx: torch.Tensor,
    dy: torch.Tensor,
    r: torch.Tensor,
    hgt: torch.Tensor,
    ang: torch.Tensor,
    obj: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Height above the object's base and its analytic gradient for one shape class.

    ``dx, dy`` are flat ``(P,)`` pixel offsets from the object centres, ``obj`` (``(P,)``) says which
    object each pixel belongs to and ``r, hgt, ang`` are ``(n,)`` per-object sizes, heights and angles.
    Returns ``(h, gx, gy)`` with ``h = -inf`` outside the footprint.
    """
    r, hgt = r.index_select(0, obj), hgt.index_select(0, obj)
    name = SHAPES[shape]
    if name in ("hemisphere", "cone", "torus"):
        rho2 = dx * dx + dy * dy
        rho = rho2.sqrt()
        if name == "hemisphere":  # h = H sqrt(1 - rho^2/r^2)
            q = rho2 / (r * r)
            root = (1.0 - q).clamp_min(1e-4).sqrt()
            h = hgt * root
            g = -hgt / (r * r * root)  # dh/dx = g * dx
            gx, gy = g * dx, g * dy
            inside = q < 1.0
        elif name == "cone":  # h = H (1 - rho/r)
            h = hgt * (1.0 - rho / r)
            g = -hgt / (r * rho.clamp_min(1e-6))
            gx, gy = g * dx, g * dy
            inside = rho < r
        else:  # torus: elliptic tube of radius 0.35 r around a ring of radius 0.65 r
            ring, tube = 0.65 * r, 0.35 * r
            d = rho - ring
            q = d * d / (tube * tube)
            root = (1.0 - q).clamp_min(1e-4).sqrt()
            h = hgt * root
            g = -hgt * d / (tube * tube * root * rho.clamp_min(1e-6))
            gx, gy = g * dx, g * dy
            inside = q < 1.0
        return torch.where(inside, h, -torch.inf), gx, gy
    c, s = torch.cos(ang).index_select(0, obj), torch.sin(ang).index_select(0, obj)
    u, v = c * dx + s * dy, -s * dx + c * dy  # object-frame coordinates
    if name == "box":  # flat top, half-width BOX_HALF_WIDTH r
        half = BOX_HALF_WIDTH * r
        h = hgt.expand_as(u)
        gx = gy = torch.zeros_like(u)
        inside = (u.abs() < half) & (v.abs() < half)
        return torch.where(inside, h, -torch.inf), gx, gy
    if name == "cylinder":  # lying along u: an elliptic tube of half-width w, h = H sqrt(1 - v^2/w^2)
        w = CYLINDER_RADIUS * r
        q = v * v / (w * w)
        root = (1.0 - q).clamp_min(1e-4).sqrt()
        h = hgt * root
        gu, gv = torch.zeros_like(u), -hgt * v / (w * w * root)
        inside = (u.abs() < r) & (q < 1.0)
    else:  # three-sided pyramid: h = H (1 - m / a), m = max_i f_i . (u, v) over its facets' normals f_i
        a = PYRAMID_INRADIUS * r
        proj = torch.stack([fu * u + fv * v for fu, fv in _PYRAMID_FACETS])  # (3, P)
        m, which = proj.max(0)
        f = _PYRAMID_FACET_TABLE.index_select(0, which)  # the facet under each pixel: the gradient is -H/a f
        h = hgt * (1.0 - m / a)
        gu, gv = -hgt / a * f[:, 0], -hgt / a * f[:, 1]
        inside = m < a
    gx, gy = c * gu - s * gv, s * gu + c * gv  # back to the world frame
    return torch.where(inside, h, -torch.inf), gx, gy


def check_semantic(semantic: dict[str, torch.Tensor]) -> None:
    """Semantic factors must have every key, objects must lie in the image and be no larger than
    :data:`MAX_SIZE` (the render windows)."""
    missing = [k for k in SEMANTIC_KEYS if k not in semantic]
    if missing:
        raise KeyError(f"semantic factors are missing keys {missing}")
    valid = semantic["valid"].bool()
    if valid.any():
        if semantic["size"][valid].max() > MAX_SIZE + 1e-6 or semantic["size"][valid].min() <= 0:
            raise ValueError(f"semantic['size'] must be in (0, {MAX_SIZE}] for valid objects")
        if semantic["position"][valid].abs().max() > 1.0:
            raise ValueError("semantic['position'] must lie in [-1, 1]^2 for valid objects")
        if semantic["shape"][valid].min() < 0 or semantic["shape"][valid].max() >= NUM_SHAPES:
            raise ValueError(f"semantic['shape'] must be in 0..{NUM_SHAPES - 1} for valid objects")


#: bit layout of the visibility keys of :func:`geometry`: height (32 bits), surface (3), candidate (28)
_SURFACE_SHIFT, _HEIGHT_SHIFT = 28, 31
_CANDIDATE_MASK = (1 << _SURFACE_SHIFT) - 1


def _visibility_key(
    z: torch.Tensor, surface: torch.Tensor | int, candidate: torch.Tensor | int
) -> torch.Tensor:
    """One int64 per (pixel, surface) whose integer order is the order "higher ``z``, then higher
    ``surface`` index": the visible surface of a pixel is its largest key.

    The float32 height is mapped to an int32 of the same order (negative floats have their
    magnitude bits flipped), then packed above the surface index (0-4 objects, 5 the ground, so the
    ground wins a tie) and the index of the candidate pixel it came from.
    """
    bits = (z + 0.0).view(torch.int32)  # + 0.0: -0.0 and 0.0 are equal heights, give them one key
    ordered = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return (ordered.long() << _HEIGHT_SHIFT) | (surface << _SURFACE_SHIFT) | candidate


def _key_height(key: torch.Tensor) -> torch.Tensor:
    """The float32 height packed in visibility keys (the inverse of :func:`_visibility_key`'s map)."""
    ordered = (key >> _HEIGHT_SHIFT).int()
    return (ordered ^ ((ordered >> 31) & 0x7FFFFFFF)).view(torch.float32)


def _candidates(
    reach: torch.Tensor, centre: tuple[torch.Tensor, torch.Tensor], pos: torch.Tensor, n_pix: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The candidate pixels of every object: the image pixels within ``reach`` (``(n,)``, a radius per
    object that contains its footprint) of the object's centre ``pos`` (``(n, 2)``).

    Each object is looked at through a square window around its centre pixel ``centre`` (rows,
    columns), as large as the largest disc; the window pixels inside the object's disc and inside the
    image are the candidates, object by object. Returns, per candidate, the object (index into the
    ``n`` objects), the image pixel (``row * n_pix + col``) and the offsets ``dx, dy`` of the pixel
    centre from the object centre.
    """
    step = 2.0 / n_pix
    half = int(math.ceil(float(reach.max()) / step)) + 1  # the window's half-width in pixels
    win = 2 * half + 1
    off = torch.arange(-half, half + 1)
    rows, cols = centre[0][:, None] + off, centre[1][:, None] + off  # (n, win) image rows/columns
    # pixel centres: x = -1 + (col + 0.5) step to the right, y = 1 - (row + 0.5) step up; rows and
    # columns outside the image get an infinite offset, which puts them outside every disc
    dxw = (-1.0 + (cols.float() + 0.5) * step) - pos[:, 0, None]
    dyw = -(-1.0 + (rows.float() + 0.5) * step) - pos[:, 1, None]
    dxw = torch.where((cols >= 0) & (cols < n_pix), dxw, torch.inf)
    dyw = torch.where((rows >= 0) & (rows < n_pix), dyw, torch.inf)
    inside = (dxw * dxw)[:, None, :] + (dyw * dyw)[:, :, None] <= (reach * reach)[:, None, None]
    o, wr, wc = inside.nonzero().unbind(1)
    dx = dxw.view(-1).index_select(0, o * win + wc)
    dy = dyw.view(-1).index_select(0, o * win + wr)
    corner = (rows[:, 0] * n_pix + cols[:, 0]).index_select(0, o)  # the window's top-left pixel
    return o, corner + wr * n_pix + wc, dx, dy


def geometry(semantic: dict[str, torch.Tensor], n_pix: int) -> dict[str, torch.Tensor]:
    """Labels from the semantic factors alone: segmentation, depth, normal, and the visible surface.

    The visible surface of a pixel is the highest one (orthographic view from above): the rolling
    ground (:func:`ground_surface`) or an object resting on it (its base at the ground's height under
    its centre). The algorithm, all scenes of the batch at once:

    1. every object is evaluated on its *candidate* pixels only, the image pixels in a disc that
       contains its footprint (:func:`_candidates`), one call of the shape's height function per
       shape class; outside the footprint the height is ``-inf``;
    2. every (pixel, surface) pair gets a visibility key ordered by height, then by surface index
       (:func:`_visibility_key`), and one scatter-max per pixel over the ground and the candidates
       finds the visible surface: the higher surface wins; a tie between objects goes to the
       highest slot, a tie with the ground to the ground;
    3. the depth is read off the winning key, and the gradient and texture coordinates of the
       winning candidate are gathered (the ground's where it won).

    Returns ``segmentation (B,H,W)``, ``depth (B,1,H,W)``, ``normal (B,3,H,W)``, ``surface (B,H,W)``
    (0-4: object slot, 5: ground) and texture coordinates ``tex_uv (B,2,H,W)`` in the surface frame.
    """
    check_semantic(semantic)
    b = semantic["valid"].shape[0]
    step = 2.0 / n_pix
    npix = n_pix * n_pix
    # the rolling ground at the pixel centres (column -> x, row -> y up)
    vis = -1.0 + (torch.arange(n_pix, dtype=torch.float32) + 0.5) * step
    tilt, z0, waves = (semantic[k].float() for k in ("ground_tilt", "ground_height", "ground_waves"))
    xg, yg = vis[None, None, :], -vis[None, :, None]
    ground, gx, gy = ground_surface(tilt[:, None, None], z0[:, None, None], waves[:, None, None], xg, yg)
    canvas = _visibility_key(
        ground.reshape(-1), GROUND, 0
    )  # (B*H*W,): the ground everywhere, then the objects
    tu, tv = xg, yg

    valid, shape = semantic["valid"].bool(), semantic["shape"].long()
    bi, ki = valid.nonzero(as_tuple=True)  # the objects, scene by scene
    if len(bi):
        # the objects in class order, so that each class's candidates are one contiguous run
        by_class = torch.argsort(shape[bi, ki], stable=True)
        bi, ki = bi.index_select(0, by_class), ki.index_select(0, by_class)
        pos = semantic["position"].float()[bi, ki]
        size, hgt, ang = (semantic[k].float()[bi, ki] for k in ("size", "height", "angle"))
        shp = shape[bi, ki]
        centre = ((1.0 - pos[:, 1]) / step).floor().long(), ((pos[:, 0] + 1.0) / step).floor().long()
        base = ground_surface(tilt[bi], z0[bi], waves[bi], pos[:, 0], pos[:, 1])[0]  # rest on the ground
        reach = _REACH.index_select(0, shp) * size + CANDIDATE_MARGIN * step
        obj, pixel, dx, dy = _candidates(reach, centre, pos, n_pix)
        if len(obj) > _CANDIDATE_MASK:
            raise ValueError(
                f"geometry: more than {_CANDIDATE_MASK} candidate pixels; render fewer scenes at once"
            )
        # one call of the shape's height function per class, on its run of candidates
        runs = torch.bincount(shp.index_select(0, obj), minlength=NUM_SHAPES).tolist()
        parts, first = [], 0
        for s_id, count in enumerate(runs):
            if count:
                run = slice(first, first + count)
                parts.append(_shape_surface(s_id, dx[run], dy[run], size, hgt, ang, obj=obj[run]))
                first += count
        h, ogx, ogy = (torch.cat(t) for t in zip(*parts))
        keys = _visibility_key(base.index_select(0, obj) + h, ki.index_select(0, obj), torch.arange(len(obj)))
        canvas.scatter_reduce_(0, bi.index_select(0, obj) * npix + pixel, keys, reduce="amax")
        # texture coordinates of every candidate in its object's frame
        c, sn = torch.cos(ang).index_select(0, obj), torch.sin(ang).index_select(0, obj)
        otu, otv = c * dx + sn * dy, -sn * dx + c * dy
    surface = ((canvas >> _SURFACE_SHIFT) & 7).view(b, n_pix, n_pix)
    if len(bi):
        won = surface != GROUND  # pixels where an object is visible, and the candidate that won them
        winner = torch.where(won, canvas.view(b, n_pix, n_pix) & _CANDIDATE_MASK, 0).view(-1)

        def visible(on_object: torch.Tensor, on_ground: torch.Tensor) -> torch.Tensor:
            return torch.where(won, on_object.index_select(0, winner).view(b, n_pix, n_pix), on_ground)

        gx, gy, tu, tv = visible(ogx, gx), visible(ogy, gy), visible(otu, tu), visible(otv, tv)
    gx, gy = gx.expand(b, n_pix, n_pix), gy.expand(b, n_pix, n_pix)
    tu, tv = tu.expand(b, n_pix, n_pix), tv.expand(b, n_pix, n_pix)
    inv = torch.rsqrt(gx * gx + gy * gy + 1.0)  # n = (-z_x, -z_y, 1) / |.|
    normal = torch.stack([-gx * inv, -gy * inv, inv], 1)
    seg = torch.gather(surface_classes(shape), 1, surface.view(b, -1)).view(b, n_pix, n_pix)
    return {
        "segmentation": seg,
        "depth": (CAMERA_HEIGHT - _key_height(canvas).view(b, n_pix, n_pix))[:, None].contiguous(),
        "normal": normal,
        "surface": surface,
        "tex_uv": torch.stack([tu, tv], 1),
    }
