"""The ShadedScenes renderer as it was before the rendering speed-up (issue 15), kept to test that
the faster renderer draws every scene bit for bit the same.

A stored hash of rendered scenes would not do: transcendental float ops (sin, pow, tanh) may differ in
the last bit between CPUs (SIMD vs scalar code paths), so a hash recorded on one machine can fail on
another although nothing changed. Rendering the same factors with both renderers on the same machine
compares like with like. Only the functions that the speed-up rewrote are kept here (verbatim, apart
from names); everything else is shared with the library.
"""

from __future__ import annotations

import math

import torch

from coremtl_lite.data import _random
from coremtl_lite.data import corruptions as C
from coremtl_lite.data import scenes as S
from coremtl_lite.shading import linear_to_srgb, sh_shading


def shape_surface_reference(shape: int, dx: torch.Tensor, dy: torch.Tensor, r: torch.Tensor, hgt: torch.Tensor,
                   ang: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Height above the object's base and its analytic gradient for one shape class.

    ``dx, dy`` are ``(n, H, W)`` offsets from the object centres; ``r, hgt, ang`` are ``(n,)``.
    Returns ``(h, gx, gy)`` with ``h = -inf`` outside the footprint.
    """
    r, hgt = r[:, None, None], hgt[:, None, None]
    name = S.SHAPES[shape]
    if name in ("hemisphere", "cone", "cylinder", "torus"):
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
        elif name == "cylinder":  # flat top
            h = hgt.expand_as(rho)
            gx = gy = torch.zeros_like(rho)
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
    c, s = torch.cos(ang)[:, None, None], torch.sin(ang)[:, None, None]
    u, v = c * dx + s * dy, -s * dx + c * dy  # object-frame coordinates
    if name == "box":  # flat top, half-width 0.8 r
        half = 0.8 * r
        h = hgt.expand_as(u)
        gx = gy = torch.zeros_like(u)
        inside = (u.abs() < half) & (v.abs() < half)
        return torch.where(inside, h, -torch.inf), gx, gy
    # pyramid: h = H (1 - max(|u|, |v|)/r); the gradient points along the dominant axis
    m = torch.maximum(u.abs(), v.abs())
    h = hgt * (1.0 - m / r)
    along_u = u.abs() >= v.abs()
    gu = torch.where(along_u, -hgt / r * torch.sign(u), torch.zeros_like(u))
    gv = torch.where(along_u, torch.zeros_like(v), -hgt / r * torch.sign(v))
    gx, gy = c * gu - s * gv, s * gu + c * gv  # back to the world frame
    return torch.where(m < r, h, -torch.inf), gx, gy



S.NOISE_BANK_SIZE = 64
_BANKS: dict[tuple[int, int], torch.Tensor] = {}


def noise_fields_reference(noise_seed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit Gaussian sensor-noise fields ``(B, 3, H, W)``, a deterministic function of ``noise_seed``.

    Field ``b`` is one of :data:`S.NOISE_BANK_SIZE` fixed white-noise images (drawn once per image size
    from a fixed seed), circularly shifted and sign-flipped by bits of ``noise_seed[b]``: white noise
    either way, at a fraction of the cost of a fresh draw per scene.
    """
    bank = _BANKS.get((height, width))
    if bank is None:
        gen = torch.Generator()
        gen.manual_seed(height * 100003 + width)
        bank = _BANKS.setdefault((height, width), torch.randn(S.NOISE_BANK_SIZE, 3, height, width,
                                                                     generator=gen))
    key = _random.hash32(noise_seed.long())
    idx = key % S.NOISE_BANK_SIZE
    di, dj = (key >> 6) % height, (key >> 16) % width
    sign = 1.0 - 2.0 * ((key >> 31) & 1).float()
    rows = (torch.arange(height)[None, :] + di[:, None]) % height
    cols = (torch.arange(width)[None, :] + dj[:, None]) % width
    out = bank[idx[:, None, None, None], torch.arange(3)[None, :, None, None], rows[:, None, :, None],
               cols[:, None, None, :]]
    return out * sign[:, None, None, None]



def plasma_fractal_reference(mapsize: int, wibbledecay: float, generator: torch.Generator) -> torch.Tensor:
    """Diamond-square height map in [0, 1] (``imagecorruptions.plasma_fractal``), ``mapsize`` a power of 2."""
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma_fractal mapsize must be a power of two, got {mapsize}")
    m = torch.zeros(mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        noise = (torch.rand(a.shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * wibble
        return a / 4 + wibble * noise

    while step >= 2:
        h = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        acc = corner + torch.roll(corner, -1, 0)
        acc = acc + torch.roll(acc, -1, 1)
        m[h:mapsize:step, h:mapsize:step] = wibbled_mean(acc)  # squares
        dr = m[h:mapsize:step, h:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, 0) + ul + torch.roll(ul, -1, 1)
        m[0:mapsize:step, h:mapsize:step] = wibbled_mean(lt)  # diamonds (rows)
        tt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 0)
        m[h:mapsize:step, 0:mapsize:step] = wibbled_mean(tt)  # diamonds (columns)
        step //= 2
        wibble /= wibbledecay
    m = m - m.min()
    return (m / m.max()).float()


def fog_reference(x: torch.Tensor, severity: int = 1, seeds=None, generator=None) -> torch.Tensor:
    """``clip((x + c0 * plasma) * max(x) / (max(x) + c0))`` (ImageNet-C fog; plasma wibble decay c1)."""
    c0, c1 = C.FOG[C._check_severity(severity) - 1]
    xb, single = C._as_batch(x)
    hh, ww = xb.shape[-2:]
    size = 1 << (max(hh, ww) - 1).bit_length()
    gens = C._generators(seeds, generator, len(xb))
    plasma = torch.stack([plasma_fractal_reference(size, c1, g)[:hh, :ww] for g in gens]).to(xb)[:, None]
    max_val = xb.amax(dim=(1, 2, 3), keepdim=True)
    out = ((xb + c0 * plasma) * max_val / (max_val + c0)).clamp(0.0, 1.0)
    return out[0] if single else out



def corrupt_reference(x: torch.Tensor, name: str, severity: int, seeds=None) -> torch.Tensor:
    """``corrupt`` with the pre-speed-up fog (the other corruptions were not changed)."""
    if name == "fog":
        return fog_reference(x, severity, seeds=seeds)
    return C.corrupt(x, name, severity, seeds=seeds)


class ReferenceScenes(S.ShadedScenes):
    """ShadedScenes with the pre-speed-up geometry, sensor noise and fog."""

    def geometry(self, semantic: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Labels from the semantic factors alone: segmentation, depth, normal, and the visible surface.

        The visible surface is the highest one (orthographic view from above): the ground plane
        ``z = a x + b y + c`` or an object resting on it. Each object is evaluated in a fixed-size window
        around its centre, and the windows are merged by a scatter-max into the canvas.

        Returns ``segmentation (B,H,W)``, ``depth (B,1,H,W)``, ``normal (B,3,H,W)``, ``surface (B,H,W)``
        (0-4: object slot, 5: ground) and texture coordinates ``tex_uv (B,2,H,W)`` in the surface frame.
        """
        S._check_keys(semantic, S.SEMANTIC_KEYS, "semantic")
        n_pix, b = self.size, semantic["valid"].shape[0]
        S._check_semantic_ranges(semantic)
        half = int(math.ceil(S.MAX_EXTENT * n_pix / 2.0)) + 1  # window half-width in pixels
        win, pad = 2 * half + 1, half + 1
        side = n_pix + 2 * pad
        step = 2.0 / n_pix
        coord = -1.0 + (torch.arange(side, dtype=torch.float32) - pad + 0.5) * step  # padded canvas coordinates
        tilt, z0 = semantic["ground_tilt"].float(), semantic["ground_height"].float()
        xg, yg = coord[None, None, :], -coord[None, :, None]  # column -> x, row -> y (up)
        zcanvas = (tilt[:, 0, None, None] * xg + tilt[:, 1, None, None] * yg + z0[:, None, None]).reshape(-1)
        ground_z = zcanvas.clone()
        gx = tilt[:, 0, None].expand(b, side * side).reshape(-1).clone()
        gy = tilt[:, 1, None].expand(b, side * side).reshape(-1).clone()
        tu = xg.expand(b, side, side).reshape(-1).clone()
        tv = yg.expand(b, side, side).reshape(-1).clone()
        surface = torch.full((b * side * side,), S.GROUND, dtype=torch.long)

        valid, shape = semantic["valid"].bool(), semantic["shape"].long()
        bi, ki = valid.nonzero(as_tuple=True)
        if len(bi):
            pos = semantic["position"].float()[bi, ki]
            size, hgt, ang = (semantic[k].float()[bi, ki] for k in ("size", "height", "angle"))
            shp = shape[bi, ki]
            # window origin on the padded canvas: centre pixel - half
            ci = ((1.0 - pos[:, 1]) / step).floor().long() + pad - half  # row of the window's top
            cj = ((pos[:, 0] + 1.0) / step).floor().long() + pad - half
            off = torch.arange(win)
            rows, cols = ci[:, None] + off, cj[:, None] + off  # (N, win)
            dx = (coord[cols] - pos[:, 0, None])[:, None, :].expand(-1, win, win)
            dy = (-coord[rows] - pos[:, 1, None])[:, :, None].expand(-1, win, win)
            h = torch.full((len(bi), win, win), -torch.inf)
            ogx, ogy = torch.zeros_like(h), torch.zeros_like(h)
            for s_id in range(S.NUM_SHAPES):
                sel = (shp == s_id).nonzero().squeeze(1)
                if sel.numel():
                    hs, gxs, gys = shape_surface_reference(s_id, dx[sel], dy[sel], size[sel], hgt[sel], ang[sel])
                    h[sel], ogx[sel], ogy[sel] = hs, gxs, gys
            base = tilt[bi, 0] * pos[:, 0] + tilt[bi, 1] * pos[:, 1] + z0[bi]  # objects rest on the plane
            z = base[:, None, None] + h
            lin = (bi[:, None, None] * side + rows[:, :, None]) * side + cols[:, None, :]
            z, lin = z.reshape(-1), lin.reshape(-1)
            inside = torch.isfinite(z)
            z, lin = z[inside], lin[inside]
            obj = torch.arange(len(bi))[:, None].expand(-1, win * win).reshape(-1)[inside]
            zcanvas = zcanvas.scatter_reduce(0, lin, z, reduce="amax")
            win_mask = (z == zcanvas[lin]) & (z > ground_z[lin])
            # ties between objects go to the highest slot, deterministically
            slot = torch.full_like(surface, -1).scatter_reduce(0, lin[win_mask], ki[obj[win_mask]], reduce="amax")
            final = win_mask & (ki[obj] == slot[lin])
            lin_f, obj_f = lin[final], obj[final]
            pix = torch.arange(len(bi) * win * win)[inside][final]
            surface[lin_f] = ki[obj_f]
            gx[lin_f], gy[lin_f] = ogx.reshape(-1)[pix], ogy.reshape(-1)[pix]
            c, sn = torch.cos(ang)[obj_f], torch.sin(ang)[obj_f]
            ddx, ddy = dx.reshape(-1)[pix], dy.reshape(-1)[pix]
            tu[lin_f], tv[lin_f] = c * ddx + sn * ddy, -sn * ddx + c * ddy

        def crop(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, side, side)[:, pad:pad + n_pix, pad:pad + n_pix]

        gx, gy = crop(gx), crop(gy)
        inv = torch.rsqrt(gx * gx + gy * gy + 1.0)  # n = (-z_x, -z_y, 1) / |.|
        normal = torch.stack([-gx * inv, -gy * inv, inv], 1)
        surface = crop(surface).contiguous()
        cls = torch.cat([shape.clamp_min(0) + 1, torch.zeros(b, 1, dtype=torch.long)], 1)
        seg = torch.gather(cls, 1, surface.view(b, -1)).view(b, n_pix, n_pix)
        return {"segmentation": seg, "depth": (S.CAMERA_HEIGHT - crop(zcanvas))[:, None].contiguous(),
                "normal": normal, "surface": surface, "tex_uv": torch.stack([crop(tu), crop(tv)], 1)}


    def shade(self, geometry: dict[str, torch.Tensor], residual: dict[str, torch.Tensor],
              apply_corruption: bool = True, keys: tuple[str, ...] = ("image", "albedo", "shading", "sh")
              ) -> dict[str, torch.Tensor]:
        """The pre-speed-up shading of the whole batch at once (``keys`` selects the outputs)."""
        out = self.shade_reference(geometry, residual, apply_corruption)
        return {k: out[k] for k in keys}

    def shade_reference(self, geometry: dict[str, torch.Tensor], residual: dict[str, torch.Tensor],
                        apply_corruption: bool = True) -> dict[str, torch.Tensor]:
        """Image formation from geometry and residual factors (paper Eq. 13).

        Returns ``image`` (sRGB in [0, 1]), and the linear-RGB intermediates ``albedo`` and ``shading``.
        """
        S._check_keys(residual, S.RESIDUAL_KEYS, "residual")
        surface = geometry["surface"]
        b, hh, ww = surface.shape
        flat = surface.view(b, 1, -1)

        def per_pixel(name: str) -> torch.Tensor:
            return torch.gather(residual[name].float(), 1, flat.squeeze(1)).view(b, hh, ww)

        colour = torch.gather(residual["albedo"].float().transpose(1, 2), 2, flat.expand(b, 3, -1)).view(b, 3, hh, ww)
        freq, phi = per_pixel("texture_freq") * math.pi, per_pixel("texture_angle")
        phase, amp = per_pixel("texture_phase"), per_pixel("texture_amp")
        kind = torch.gather(residual["texture_kind"].long(), 1, flat.squeeze(1)).view(b, hh, ww)
        tex = S._texture(kind, residual["texture_kind"], freq, phi, phase, geometry["tex_uv"][:, 0],
                       geometry["tex_uv"][:, 1])
        albedo = colour * (1.0 - amp + amp * tex)[:, None]
        sh = S.lighting_sh(residual)
        shading = sh_shading(geometry["normal"], sh)  # S(N, L) of Eq. 13
        linear = residual["exposure"].float()[:, None, None, None] * albedo * shading  # Eq. 13
        if (residual["noise_std"] > 0).any():
            eps = noise_fields_reference(residual["noise_seed"].long(), hh, ww)
            linear = linear + residual["noise_std"].float()[:, None, None, None] * eps
        image = linear_to_srgb(linear)  # sRGB(clip(.))
        if apply_corruption and self.corruption is not None:
            image = corrupt_reference(image, self.corruption, self.severity,
                            seeds=_random.hash32(residual["noise_seed"].long() ^ 0x165667B1))
        return {"image": image, "albedo": albedo, "shading": shading, "sh": sh}

