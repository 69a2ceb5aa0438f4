"""Synthetic axial lumbar-spine MRI phantom: anatomy, T1/T2 contrast and acquisition model (numpy only).

Each patient is a random draw of body habitus and three disc levels (D3 = L3-L4, D4 = L4-L5,
D5 = L5-S1). A slice is an ordered list of shapes in millimetres, each painted with a tissue.
Large soft-tissue layers are rasterised at 1x, the spine region at 2x; the 2x2 average gives
partial volume. Labels are the tissues' classes at 1x pixel centres, painted from the same
shapes, so every labelled pixel belongs to a structure that is also drawn in intensity.

Size (~840 lines): the sampled shape parameters, the positions derived from them (`_Derived`) and
the paint operations that read those positions are one model of a slice and change together; the
acquisition half (rendering, noise, bias) is the natural first cut when the module is split.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from enum import IntEnum

import numpy as np

from edge_runtime.cutoffs import ABSOLUTE_STENOSIS_MM2
from edge_runtime.labels import BY_SHORT
from train.data.phantom_geometry import (
    SIZE,
    SPACING_MM,
    Diff,
    Frame,
    Grid,
    Inter,
    Op,
    Paint,
    Prim,
    RadialLayers,
    Shape,
    Union,
    capsule,
    ellipse,
    halfplane_curve,
    paint,
    polygon,
    superellipse,
)

__all__ = [
    "DISCS", "MAX_VALUE", "SIZE", "SPACING_MM", "STENOSIS_MM2", "LevelAnatomy", "PatientAnatomy",
    "Scene", "SliceImages", "Tissue", "build_scene", "render_labels", "render_slice", "sample_patient",
]

DISCS = (3, 4, 5)
"""The three lowest disc levels, as in the Mendeley set: L3-L4, L4-L5, L5-S1."""
STENOSIS_MM2 = ABSOLUTE_STENOSIS_MM2
"""Absolute central stenosis: thecal-sac cross-sectional area below this (mm2)."""
MAX_VALUE = 4095
"""12-bit intensities."""
OVERSAMPLE = 2
ZONES = ("disc", "endplate", "pedicle")
"""Slice positions: through a disc, through a vertebral body near its endplate, at its pedicles."""


class Tissue(IntEnum):
    """Tissue types painted into the phantom; each maps to one segmentation class."""

    AIR = 0
    SKIN = 1
    SUBCUT_FAT = 2
    WALL_MUSCLE = 3
    BOWEL = 4
    BOWEL_FAT = 5
    BOWEL_WALL = 6
    BOWEL_FLUID = 7
    BOWEL_GAS = 8
    FAT = 9
    MUSCLE = 10
    ARTERY = 11
    VEIN = 12
    CORTEX = 13
    MARROW = 14
    ANNULUS = 15
    TRANSITION = 16
    NUCLEUS = 17
    HERNIA = 18
    PE_CORTEX = 19
    PE_MARROW = 20
    FACET_FLUID = 21
    CSF = 22
    DURA = 23
    CAUDA = 24
    EPIDURAL_FAT = 25
    FLAVUM = 26
    ROOT = 27
    BOWEL_CONTENT = 28
    RETRO_FAT = 29
    KIDNEY_CORTEX = 30
    KIDNEY_MEDULLA = 31


T = Tissue
# tissue: (class short name, T1 signal, T2 signal, texture amplitude). Signals are relative to
# fat on T1 and CSF on T2 (turbo spin echo: CSF dark on T1, bright on T2; fat bright on both;
# flowing blood and cortical bone dark on both).
_TISSUES: dict[Tissue, tuple[str, float, float, float]] = {
    T.AIR: ("BG", 0.0, 0.0, 0.0),
    T.SKIN: ("BG", 0.55, 0.45, 0.05),
    T.SUBCUT_FAT: ("BG", 1.0, 0.80, 0.05),
    T.WALL_MUSCLE: ("BG", 0.33, 0.23, 0.10),
    T.BOWEL: ("BG", 0.5, 0.5, 0.1),
    T.BOWEL_FAT: ("BG", 0.95, 0.74, 0.06),
    T.BOWEL_WALL: ("BG", 0.42, 0.32, 0.12),
    T.BOWEL_FLUID: ("BG", 0.24, 0.95, 0.15),
    T.BOWEL_CONTENT: ("BG", 0.45, 0.42, 0.25),
    T.RETRO_FAT: ("BG", 0.97, 0.76, 0.05),
    T.BOWEL_GAS: ("BG", 0.02, 0.02, 0.0),
    T.FAT: ("BG", 0.97, 0.76, 0.05),
    T.MUSCLE: ("BG", 0.32, 0.21, 0.10),
    T.ARTERY: ("BG", 0.04, 0.03, 0.0),
    T.VEIN: ("BG", 0.22, 0.30, 0.10),
    T.CORTEX: ("BG", 0.05, 0.04, 0.0),
    T.MARROW: ("BG", 0.80, 0.52, 0.14),
    T.ANNULUS: ("IVD", 0.30, 0.12, 0.06),
    T.TRANSITION: ("IVD", 0.34, 0.45, 0.08),
    T.NUCLEUS: ("IVD", 0.40, 0.90, 0.06),
    T.HERNIA: ("IVD", 0.36, 0.45, 0.06),
    T.PE_CORTEX: ("PE", 0.06, 0.05, 0.0),
    T.PE_MARROW: ("PE", 0.70, 0.46, 0.12),
    T.FACET_FLUID: ("PE", 0.18, 0.70, 0.0),
    T.CSF: ("TS", 0.12, 1.00, 0.02),
    T.DURA: ("TS", 0.20, 0.25, 0.0),
    T.CAUDA: ("TS", 0.30, 0.34, 0.0),
    T.EPIDURAL_FAT: ("AAP", 0.95, 0.72, 0.05),
    T.FLAVUM: ("AAP", 0.26, 0.20, 0.04),
    T.ROOT: ("AAP", 0.34, 0.30, 0.0),
    T.KIDNEY_CORTEX: ("BG", 0.45, 0.55, 0.08),
    T.KIDNEY_MEDULLA: ("BG", 0.33, 0.72, 0.08),
}
N_TISSUES = max(Tissue) + 1
_ORDER = sorted(Tissue)  # tables are indexed by tissue value
assert [int(t) for t in _ORDER] == list(range(N_TISSUES)) and set(_TISSUES) == set(Tissue)
CLASS_OF_TISSUE = np.array([BY_SHORT[_TISSUES[t][0]].id for t in _ORDER], dtype=np.uint8)
_BASE = (np.array([_TISSUES[t][1] for t in _ORDER]), np.array([_TISSUES[t][2] for t in _ORDER]))
_TEXTURE = np.array([_TISSUES[t][3] for t in _ORDER], dtype=np.float32)
_BOWEL = frozenset({T.BOWEL, T.BOWEL_FAT, T.BOWEL_WALL, T.BOWEL_FLUID, T.BOWEL_GAS, T.BOWEL_CONTENT})
_SOFT = _BOWEL | {T.RETRO_FAT, T.FAT, T.WALL_MUSCLE, T.MUSCLE}  # what muscles and vessels may displace


@dataclass(frozen=True)
class LevelAnatomy:
    """Shape parameters of one disc level (millimetres, radians; u = patient left, v = posterior)."""

    disc: int
    frame: Frame
    disc_a: tuple[float, float]  # lateral half-widths (patient right, patient left)
    disc_b: tuple[float, float]  # anterior and posterior half-depths
    disc_p: float
    notch_depth: float
    notch_ru: float
    notch_rv: float
    bulge: float
    hernia: tuple[float, float, float] | None  # (u centre, half width, protrusion)
    nucleus_t2: float
    nucleus_size: float
    cleft: bool
    ts_w: float
    ts_ap: float
    ts_du: float
    ant_fat: float
    post_fat: float
    lat_fat: float
    flavum_r: float
    facet_angle: float
    facet_scale: tuple[float, float]
    lamina_r: float
    spinous_len: float
    spinous_r: float
    spinous_tilt: float
    psoas: tuple[float, float, float]  # radii (u, v) and v offset of the centre
    psoas_asym: float
    paraspinal: tuple[float, float, float]  # half width, bulge behind spinous tip, fat septum radius
    fat_streaks: tuple[tuple[float, float, float, float, float], ...]  # (u, v) in lobe units, angle, length, r
    iliac: bool
    vessel_jitter: tuple[float, float, float]
    kidney: tuple[float, float, float] | None = None  # lower pole: (lateral offset, radius u, radius v) mm
    sac_triangle: float = 0.0  # 0 oval thecal sac ... 1 triangular (trefoil canal of the low levels)


@dataclass(frozen=True)
class PatientAnatomy:
    """One synthetic patient: habitus, three levels, contrast and acquisition settings."""

    seed: int
    index: int
    theta: float
    body_a: float
    body_b: tuple[float, float]  # anterior / posterior half-depth
    body_p: tuple[float, float]
    body_dx: float
    body_harmonics: tuple[tuple[int, float, float], ...]
    groove: float
    fat: float
    fat_bias: tuple[float, float]  # extra anterior / posterior share
    wall: float
    levels: dict[int, LevelAnatomy]
    gain: tuple[float, float]
    snr: tuple[float, float]
    blur_sigma: float
    bias: tuple[float, float, float, float, float]
    contrast_jitter: tuple[np.ndarray, np.ndarray]
    slice_spacing: float
    extra_slices: tuple[int, int]  # DICOM slices above D3 / below D5
    series_number: int

    @property
    def pid(self) -> str:
        """Zero-padded 4-digit patient id, as in the file names."""
        return f"{self.index + 1:04d}"


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(key)))


def sample_patient(seed: int, index: int) -> PatientAnatomy:
    """Draw patient `index` (0-based) of data set `seed`; independent of how many are drawn."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = _rng(seed, index, 0)
    scale = rng.uniform(0.9, 1.1)
    theta = float(np.clip(rng.normal(0.0, 0.06), -0.12, 0.12))
    cx, cy = rng.uniform(-8.0, 8.0), rng.uniform(-14.0, 0.0)
    levels = {d: _sample_level(rng, d, scale, theta, cx, cy) for d in DISCS}
    variety = _rng(seed, index, 3)  # a stream of its own: adding it left every other draw as it was
    levels = {d: replace(lv, **_sample_variety(variety, d, scale)) for d, lv in levels.items()}
    return PatientAnatomy(
        seed=seed, index=index, theta=theta,
        body_a=rng.uniform(130.0, 185.0),
        body_b=(rng.uniform(75.0, 150.0), rng.uniform(85.0, 130.0)),
        body_p=(rng.uniform(2.0, 2.4), rng.uniform(2.4, 3.2)),
        body_dx=rng.normal(0.0, 4.0),
        body_harmonics=tuple((k, rng.uniform(0.0, 0.02), rng.uniform(0, 2 * math.pi)) for k in (2, 3, 4, 5)),
        groove=rng.uniform(0.0, 5.0),
        fat=rng.uniform(5.0, 26.0),
        fat_bias=(rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.5)),
        wall=rng.uniform(6.0, 12.0),
        levels=levels,
        gain=(rng.uniform(1800.0, 3000.0), rng.uniform(1800.0, 3200.0)),
        snr=(rng.uniform(18.0, 45.0), rng.uniform(12.0, 35.0)),
        blur_sigma=rng.uniform(0.4, 0.75),
        bias=tuple(float(b) for b in (rng.normal(0, 0.12), rng.uniform(0.05, 0.3), rng.normal(0, 0.1),
                                      rng.normal(0, 0.1), rng.normal(0, 0.08))),
        contrast_jitter=(rng.normal(1.0, 0.04, N_TISSUES), rng.normal(1.0, 0.04, N_TISSUES)),
        slice_spacing=rng.uniform(6.6, 8.0),
        extra_slices=(int(rng.integers(0, 3)), int(rng.integers(1, 3))),
        series_number=int(rng.integers(3, 10)),
    )


def _sample_variety(rng: np.random.Generator, disc: int, scale: float) -> dict[str, object]:
    """Kidney lower poles at the upper levels; triangular sacs, commoner low down."""
    k = disc - DISCS[0]
    kidney = None
    if rng.random() < (0.4, 0.12, 0.0)[k]:
        kidney = (rng.uniform(10.0, 22.0), rng.uniform(14.0, 24.0) * scale, rng.uniform(10.0, 17.0) * scale)
    triangle = rng.uniform(0.5, 1.0) if rng.random() < (0.3, 0.55, 0.75)[k] else 0.0
    return {"kidney": kidney, "sac_triangle": float(triangle)}


def _sample_level(rng: np.random.Generator, disc: int, scale: float, theta: float, cx: float,
                  cy: float) -> LevelAnatomy:
    k = disc - DISCS[0]
    lvl_theta = float(np.clip(theta + rng.uniform(-0.05, 0.05), -math.radians(10), math.radians(10)))
    centre = (cx + rng.uniform(-3.0, 3.0), cy + rng.uniform(-3.0, 3.0) + (0.0, 2.0, 5.0)[k])
    bulge = rng.uniform(0.5, 2.0) if rng.random() < (0.15, 0.35, 0.35)[k] else 0.0
    # outer disc (with bulge) 41-54 mm wide and 28.5-37.5 mm deep
    a = float(np.clip(scale * (22.0 + 1.3 * k) + rng.normal(0.0, 1.0), 20.5, 27.0 - bulge))
    asym = rng.uniform(-0.05, 0.05)
    ap = float(np.clip(scale * (31.5 + 0.8 * k) + rng.normal(0.0, 1.5), 28.5, 37.5 - 2 * bulge))
    b_front = ap * rng.uniform(0.52, 0.57)
    hernia = None
    if rng.random() < (0.10, 0.25, 0.20)[k]:
        hernia = (float(rng.choice([-6.5, -3.5, 0.0, 3.5, 6.5]) + rng.normal(0, 0.8)),
                  rng.uniform(4.0, 7.5), rng.uniform(3.0, 6.5))
    degenerate = rng.random() < (0.2, 0.45, 0.5)[k]
    stenotic = rng.random() < (0.12, 0.28, 0.22)[k]
    if stenotic:
        ts_w, ts_ap = rng.uniform(7.5, 11.0), rng.uniform(5.0, 7.8)
        post_fat, hyper, flavum = rng.uniform(0.5, 1.5), rng.uniform(1.2, 1.45), rng.uniform(2.4, 3.4)
        lat_fat = rng.uniform(0.3, 1.0)
    else:
        ts_w, ts_ap = rng.uniform(13.0, 20.0), rng.uniform(10.5, 16.0)  # real sacs: ~16 x 14 mm, 140-230 mm2
        # real sacs fill most of the canal: often no visible fat beside them, a thin pad behind (a thick
        # pad taught the model to call the back third of a bright T2 sac epidural space)
        post_fat = rng.uniform(0.2, 1.8) if rng.random() < 0.75 else rng.uniform(1.8, 4.5)
        hyper, flavum = rng.uniform(0.9, 1.12), rng.uniform(1.2, 2.0)
        lat_fat = rng.uniform(0.1, 2.5)
    # a tight canal template: on real slices the sac reaches the flava and the recesses are slits, and
    # a wider template taught every model to keep a ring of epidural space inside a real T2 sac
    lat_fat *= 0.3
    flavum *= 0.75
    psoas_r = np.array([(10.0, 13.0), (14.0, 17.0), (17.0, 20.0)][k]) * scale * rng.uniform(0.85, 1.15)
    return LevelAnatomy(
        disc=disc,
        frame=Frame(centre[0], centre[1], lvl_theta),
        disc_a=(a * (1 - asym), a * (1 + asym)),
        disc_b=(b_front, ap - b_front),
        disc_p=rng.uniform(2.0, 2.6),
        notch_depth=rng.uniform(1.5, 4.0) * (0.6 if k == 2 else 1.0),
        notch_ru=a * rng.uniform(0.36, 0.48),
        notch_rv=rng.uniform(5.0, 8.0),
        bulge=bulge,
        hernia=hernia,
        nucleus_t2=rng.uniform(0.3, 0.55) if degenerate else rng.uniform(0.85, 1.0),
        nucleus_size=rng.uniform(0.6, 0.8) if degenerate else rng.uniform(0.85, 1.0),
        cleft=bool(rng.random() < 0.5),
        ts_w=ts_w, ts_ap=ts_ap, ts_du=rng.normal(0.0, 0.7),
        ant_fat=rng.uniform(0.1, 1.3), post_fat=post_fat, lat_fat=lat_fat,
        flavum_r=flavum,
        facet_angle=math.radians((35.0, 42.0, 50.0)[k] + rng.normal(0.0, 5.0)),
        facet_scale=(hyper * rng.uniform(0.92, 1.08), hyper * rng.uniform(0.92, 1.08)),
        lamina_r=rng.uniform(3.0, 4.0),
        spinous_len=rng.uniform(24.0, 33.0) * scale * (1.0, 0.95, 0.85)[k],
        spinous_r=rng.uniform(3.0, 4.2),
        spinous_tilt=rng.normal(0.0, 1.5),
        psoas=(float(psoas_r[0]), float(psoas_r[1]), (-1.0, -5.0, -12.0)[k] + rng.normal(0.0, 1.5)),
        psoas_asym=rng.uniform(-0.08, 0.08),
        paraspinal=(rng.uniform(21.0, 27.0) * scale * (1.0, 0.97, 0.92)[k], rng.uniform(0.0, 5.0),
                    rng.uniform(0.3, 0.7)),
        fat_streaks=tuple((rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.9), rng.uniform(0.1, 0.9),
                           rng.uniform(1.2, 1.9), rng.uniform(2.0, 8.0), rng.uniform(0.25, 0.6))
                          for _ in range(int(rng.integers(0, 5)))),
        iliac=k == 2 or (k == 1 and rng.random() < 0.3),
        vessel_jitter=(rng.normal(0, 2.0), rng.normal(0, 1.5), rng.uniform(0.85, 1.15)),
    )


# ----------------------------------------------------------------------------------- scene


@dataclass(frozen=True)
class _Derived:
    """Positions computed once per level from the sampled shape parameters."""

    a_r: float
    a_l: float
    b_front: float
    b_back: float
    notch: float
    vpb: float  # posterior disc border in the midline
    ts_v: float  # centre of the thecal sac
    w_in: float  # half-width / half-depth of the epidural space inside the ligamenta flava
    h_in: float
    w_out: float  # half-width / half-depth of the bony canal behind the sac's centre
    h_out: float
    apex: float  # v of the canal's posterior apex (where the laminae meet)
    s0: tuple[float, float]  # base of the spinous process
    muscle_back: float  # posterior surface of the paraspinal muscles


TRIANGLE_DEPTH = 0.35
"""How far a triangular sac's apex reaches behind an oval's, as a share of its half-depth: real
low-lumbar sacs fill the V of the flava down to the laminae."""
APEX_FAT_MM = 0.8
"""Epidural fat between the flava's V and the laminae's junction: a sliver on real slices."""


def _derive(lv: LevelAnatomy) -> _Derived:
    bulge = lv.bulge
    notch = max(lv.notch_depth - 0.8 * bulge, 0.3)
    b_back = lv.disc_b[1] + bulge
    vpb = b_back - notch
    ts_v = vpb + lv.ant_fat + lv.ts_ap / 2
    w_in, h_in = lv.ts_w / 2 + lv.lat_fat, lv.ts_ap / 2 + lv.post_fat
    w_out, h_out = w_in + 2 * lv.flavum_r, h_in + 2 * lv.flavum_r
    apex = ts_v + h_out * (1.0 + TRIANGLE_DEPTH * lv.sac_triangle) + APEX_FAT_MM
    s0 = (0.0, apex + lv.lamina_r * 0.7)
    return _Derived(lv.disc_a[0] + bulge, lv.disc_a[1] + bulge, lv.disc_b[0] + bulge, b_back, notch,
                    vpb, ts_v, w_in, h_in, w_out, h_out, apex, s0,
                    s0[1] + lv.spinous_len + 2.0 + lv.paraspinal[1])


def _disc_back(lv: LevelAnatomy, d: _Derived, u: float) -> float:
    """Posterior disc border (v) at lateral position u, ignoring the central notch."""
    a = d.a_l if u > 0 else d.a_r
    x = min(abs(u) / a, 1.0)
    return d.b_back * (1.0 - x ** lv.disc_p) ** (1.0 / lv.disc_p)


def _body_tables(p: PatientAnatomy, level_scale: float, n_phi: int = 1024) -> tuple[np.ndarray, ...]:
    """Radius over angle of the skin, subcutaneous fat, abdominal wall and abdominal cavity."""
    phi = (np.arange(n_phi) + 0.5) * (2 * math.pi / n_phi) - math.pi
    c, s = np.cos(phi), np.sin(phi)
    posterior = s > 0
    b = np.where(posterior, p.body_b[1], p.body_b[0])
    pw = np.where(posterior, p.body_p[1], p.body_p[0])
    a = p.body_a * level_scale
    r = (np.abs(c / a) ** pw + np.abs(s / b) ** pw) ** (-1.0 / pw)
    for k, amp, ph in p.body_harmonics:
        r *= 1.0 + amp * np.cos(k * phi + ph)
    r -= p.groove * np.exp(-(((phi - math.pi / 2) / 0.07) ** 2))
    fat = p.fat * (0.85 + 0.45 * c * c + p.fat_bias[0] * np.clip(-s, 0, 1) + p.fat_bias[1] * np.clip(s, 0, 1))
    wall = p.wall * (0.25 + 0.75 * np.clip(-s, 0, 1) + 0.5 * c * c)
    return r, r - 1.3, r - fat, r - fat - wall


def _body_ops(p: PatientAnatomy, lv: LevelAnatomy, d: _Derived) -> list[Op]:
    skin_r, sub_r, wall_r, inner_r = _body_tables(p, (1.0, 1.03, 1.08)[lv.disc - DISCS[0]])
    mid = len(skin_r) * 3 // 4  # phi = +pi/2: straight posterior
    body_v = d.muscle_back + float(skin_r[mid] - inner_r[mid]) - float(skin_r[mid])
    cx, cy = lv.frame.world(p.body_dx, body_v)
    return [RadialLayers(Frame(cx, cy, p.theta), (skin_r, sub_r, wall_r, inner_r),
                         (T.SKIN, T.SUBCUT_FAT, T.WALL_MUSCLE, T.BOWEL))]


def _back_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    """Retroperitoneal fat, paraspinal muscle mass with fat septa, quadratus lumborum."""
    f = lv.frame
    k = lv.disc - DISCS[0]
    a = max(d.a_l, d.a_r)
    pr_u = lv.psoas[0]
    half_w = lv.paraspinal[0]
    front = d.vpb + 1.0
    ops: list[Op] = [
        Paint(halfplane_curve(f, d.vpb - 6.0, 0.004), T.RETRO_FAT, frozenset({T.BOWEL})),
        Paint(ellipse(f, 0.0, -d.b_front * 0.2, a + 2 * pr_u + 6, d.b_front + 12), T.RETRO_FAT,
              frozenset({T.BOWEL})),
    ]
    over = frozenset({T.BOWEL, T.RETRO_FAT, T.FAT, T.WALL_MUSCLE})
    for side in (-1.0, 1.0):
        cu = side * (3.0 + half_w)
        depth = (d.muscle_back - front) / 2 + 5.0  # reaches into the fascia; clipped by the fat
        mass = superellipse(f, cu, front + depth, half_w + 3.0, half_w + 3.0, depth, depth, 2.6)
        ops.append(Paint(mass, T.MUSCLE, over))
        if k < 2:  # quadratus lumborum, lateral to psoas above the iliac crest
            qu = side * (a + 2 * pr_u + 10)
            ops.append(Paint(ellipse(f, qu, d.vpb + 2.0, 17.0, 7.5, -side * 0.35), T.MUSCLE, over))
    return ops


def _septa_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    """Thin fat planes between multifidus, longissimus and iliocostalis; fatty streaks."""
    f = lv.frame
    half_w, _, septum = lv.paraspinal
    ops: list[Op] = []
    v0, v2 = d.apex - 2.0, d.muscle_back - 1.0
    for side in (-1.0, 1.0):
        for u0, u1, u2, r in ((d.w_out + 5.0, d.w_out + 8.0 + 0.1 * half_w, d.w_out + 11.0 + 0.2 * half_w, septum),
                              (d.w_out + 0.9 * half_w, d.w_out + 1.05 * half_w, d.w_out + 1.1 * half_w,
                               septum * 0.7)):
            mid = (side * u1, (v0 + v2) / 2)
            ops.append(Paint(capsule(f, (side * u0, v0), mid, r * 0.6, r), T.FAT, frozenset({T.MUSCLE})))
            ops.append(Paint(capsule(f, mid, (side * u2, v2), r, r * 0.5), T.FAT, frozenset({T.MUSCLE})))
    for su, sv, ang, length, r in lv.fat_streaks:  # fatty infiltration of the paraspinal muscles
        cu = su * (d.w_out + 2 * half_w)
        cv = v0 + sv * (v2 - v0)
        du, dv = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        ops.append(Paint(capsule(f, (cu - du, cv - dv), (cu + du, cv + dv), r), T.FAT, frozenset({T.MUSCLE})))
    return ops


def _pelvic_muscle_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    """Gluteus medius outside the iliac wing; iliacus on its inner face (below the crest only)."""
    if not lv.iliac:
        return []
    f = lv.frame
    k = lv.disc - DISCS[0]
    ops: list[Op] = []
    for side in (-1.0, 1.0):
        base = side * _iliac_base(lv, d)
        ops.append(Paint(ellipse(f, base + side * 36, d.vpb + 2, 17.0, 36.0, side * 0.45), T.MUSCLE, _SOFT))
        if k == 2:
            ops.append(Paint(ellipse(f, base + side * 4, d.vpb - 16, 9.0, 24.0, side * 0.4), T.MUSCLE, _SOFT))
    return ops


def _iliac_base(lv: LevelAnatomy, d: _Derived) -> float:
    return max(d.a_l, d.a_r) + 2 * lv.psoas[0] + 8


def _psoas_iliac_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    """Psoas muscles beside the disc; iliac wings (cortex, then marrow) at the low levels."""
    f = lv.frame
    k = lv.disc - DISCS[0]
    pr_u, pr_v, pdv = lv.psoas
    ops: list[Op] = []
    marrow: list[Op] = []
    if lv.kidney is not None:  # lower poles, anterolateral to quadratus lumborum, in perirenal fat
        off, kru, krv = lv.kidney
        for side in (-1.0, 1.0):
            ku, kv = side * (max(d.a_l, d.a_r) + 2 * pr_u + off + kru * 0.6), d.vpb - krv * 0.6
            ops.append(Paint(ellipse(f, ku, kv, kru + 4.0, krv + 4.0, side * 0.5), T.FAT, _SOFT))
            ops.append(Paint(ellipse(f, ku, kv, kru, krv, side * 0.5), T.KIDNEY_CORTEX, _SOFT | {T.FAT}))
            ops.append(Paint(ellipse(f, ku - side * kru * 0.2, kv, kru * 0.55, krv * 0.5, side * 0.5),
                             T.KIDNEY_MEDULLA, frozenset({T.KIDNEY_CORTEX})))
    for side in (-1.0, 1.0):
        s_asym = 1.0 + side * lv.psoas_asym
        ru, rv = pr_u * s_asym, pr_v * s_asym
        pu = side * ((d.a_l if side > 0 else d.a_r) + ru * 0.85 + 1.8)
        ops.append(Paint(ellipse(f, pu, pdv, ru, rv * 0.95), T.MUSCLE, _SOFT))
        if lv.iliac:
            base = side * _iliac_base(lv, d)
            pts = [(base - side * 2, d.vpb + 38), (base + side * 10, d.vpb + 15),
                   (base + side * 17, d.vpb - 10), (base + side * 20, d.vpb - (40 if k == 2 else 14))]
            radii = [7.5, 5.5, 4.5, 3.5]
            for i in range(3):
                ops.append(Paint(capsule(f, pts[i], pts[i + 1], radii[i], radii[i + 1]), T.CORTEX, _SOFT))
                marrow.append(Paint(capsule(f, pts[i], pts[i + 1], radii[i] - 1.6, radii[i + 1] - 1.6), T.MARROW,
                                    frozenset({T.CORTEX})))
    return ops + marrow


def _vessel_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    f = lv.frame
    du, dv, sz = lv.vessel_jitter
    vf = -d.b_front
    k = lv.disc - DISCS[0]
    over = _BOWEL | {T.RETRO_FAT, T.FAT}
    if k == 0:  # aorta on the patient's left, inferior vena cava on the right
        return [Paint(ellipse(f, 7 + du, vf - 11 + dv, 9.5 * sz, 9.5 * sz), T.ARTERY, over),
                Paint(ellipse(f, -15 + du, vf - 9 + dv, 11.0 * sz, 7.0 * sz, 0.2), T.VEIN, over)]
    if k == 1:  # common iliac arteries, confluence of the iliac veins
        return [Paint(ellipse(f, -9 + du, vf - 10 + dv, 6.0 * sz, 6.0 * sz), T.ARTERY, over),
                Paint(ellipse(f, 9 + du, vf - 10 + dv, 6.0 * sz, 6.0 * sz), T.ARTERY, over),
                Paint(ellipse(f, -6 + du, vf - 4 + dv, 12.0 * sz, 5.5 * sz), T.VEIN, over)]
    a = (d.a_l + d.a_r) / 2
    ops: list[Op] = []
    for side in (-1.0, 1.0):
        ops.append(Paint(ellipse(f, side * (a * 0.5 + 9) + du, vf - 6 + dv, 5.0 * sz, 5.0 * sz), T.ARTERY, over))
        ops.append(Paint(ellipse(f, side * (a * 0.5 + 2) + du, vf - 1 + dv, 7.0 * sz, 4.5 * sz), T.VEIN, over))
    return ops


FORAMEN_OUT = 3.5  # mm from the bony canal's side to the foramen's centre


def _canal_shape(lv: LevelAnatomy, d: _Derived, foramina: bool) -> Shape:
    """Bony canal: rounded in front of the sac's centre, a V behind it, lateral recesses, foramina."""
    f = lv.frame
    du, tv = lv.ts_du, d.ts_v
    parts: list[Shape] = [
        superellipse(f, du, tv, d.w_out, d.w_out, tv - d.vpb + 3.0, d.h_out, 2.0),
        polygon(f, [(du - d.w_out * 0.6, tv + d.h_out * 0.6), (du + d.w_out * 0.6, tv + d.h_out * 0.6),
                    (0.0, d.apex)]),
    ]
    for side in (-1.0, 1.0):
        ru = d.w_out - 0.5
        parts.append(ellipse(f, side * ru, _disc_back(lv, d, ru) + 1.8, 2.8, 1.8, -side * 0.3))
        if foramina:
            fu = d.w_out + FORAMEN_OUT
            parts.append(ellipse(f, side * fu, _disc_back(lv, d, fu) + 2.2, 3.0, 2.0, -side * 0.45))
    return Union(*parts)


def _sac_shape(f: Frame, du: float, tv: float, ru: float, rv: float, triangle: float) -> Shape:
    """Thecal sac: an oval, or (triangle > 0) an oval flattened behind into a posterior-pointing triangle."""
    if triangle <= 0.0:
        return ellipse(f, du, tv, ru, rv)
    front = ellipse(f, du, tv - rv * 0.25 * triangle, ru, rv * (1.0 - 0.25 * triangle))
    wide = ru * (1.0 + 0.15 * triangle)
    apex = (du, tv + rv * (1.0 + TRIANGLE_DEPTH * triangle))
    return Union(front, polygon(f, [(du - wide, tv - rv * 0.3), (du + wide, tv - rv * 0.3), apex]))


def _canal_ops(lv: LevelAnatomy, d: _Derived, foramina: bool) -> list[Op]:
    """Epidural fat, ligamenta flava and nerve roots (AAP), thecal sac with cauda equina (TS).

    Painted after the posterior arch, so the bony canal is exactly this shape and the sac is never
    cut by bone; thick ligamenta flava and small sacs make the stenotic levels.
    """
    f = lv.frame
    canal = _canal_shape(lv, d, foramina)
    du, tv = lv.ts_du, d.ts_v
    ops: list[Op] = [Paint(canal, T.EPIDURAL_FAT)]
    inner = _sac_shape(f, du, tv, d.w_in, d.h_in, lv.sac_triangle)  # the flava's V follows a triangular sac
    behind = Prim(f, (-d.w_out - 1, d.w_out + 1, tv - 1.0, d.apex + 1), lambda u, v: v >= tv - 1.0)
    ops.append(Paint(Inter(Diff(canal, inner), behind), T.FLAVUM))
    for side in (-1.0, 1.0):  # traversing root in the lateral recess, exiting root in the foramen
        ru = d.w_out - 0.5
        ops.append(Paint(ellipse(f, side * ru, _disc_back(lv, d, ru) + 1.9, 1.5, 1.2),
                         T.ROOT, frozenset({T.EPIDURAL_FAT})))
        if foramina:
            fu = d.w_out + FORAMEN_OUT + 0.3
            ops.append(Paint(ellipse(f, side * fu, _disc_back(lv, d, fu) + 2.3, 1.8, 1.4),
                             T.ROOT, frozenset({T.EPIDURAL_FAT})))
    tsr = (lv.ts_w / 2, lv.ts_ap / 2)
    ops.append(Paint(_sac_shape(f, du, tv, *tsr, lv.sac_triangle), T.DURA))
    ops.append(Paint(_sac_shape(f, du, tv, tsr[0] - 0.6, tsr[1] - 0.6, lv.sac_triangle), T.CSF, frozenset({T.DURA})))
    # cauda equina: roots settle in the dependent (posterior) half of the sac, patient supine
    roots = [ellipse(f, du + cu * tsr[0], tv + cv * tsr[1], 0.75, 0.75)
             for cu, cv in ((-0.55, 0.3), (0.55, 0.3), (-0.25, 0.5), (0.25, 0.5), (0.0, 0.6), (-0.75, 0.05),
                            (0.75, 0.05), (-0.4, 0.1), (0.4, 0.1))]
    ops.append(Paint(Union(*roots), T.CAUDA, frozenset({T.CSF})))
    return ops


def _bone(shape_out: Shape, shape_in: Shape | None) -> list[Op]:
    ops: list[Op] = [Paint(shape_out, T.PE_CORTEX)]
    if shape_in is not None:
        ops.append(Paint(shape_in, T.PE_MARROW, frozenset({T.PE_CORTEX})))
    return ops


def _arch_ops(lv: LevelAnatomy, d: _Derived, zone: str) -> list[Op]:
    """Posterior elements (PE): facets and laminae at disc level, pedicles at mid-body level."""
    f = lv.frame
    ops: list[Op] = []
    s0 = d.s0
    phi = lv.facet_angle
    for i, side in enumerate((-1.0, 1.0)):
        hyp = lv.facet_scale[i]
        joint = (side * (d.w_out + 3.0), d.ts_v + 1.0)
        dirn = (side * math.sin(phi), math.cos(phi))  # along the joint line
        nrm = (-side * math.cos(phi), math.sin(phi))  # from the superior to the inferior process
        ang = math.atan2(dirn[1], dirn[0])
        sap_t, iap_t = 3.8 * hyp, 4.2 * hyp
        iap_c = (joint[0] + nrm[0] * (iap_t + 0.5), joint[1] + nrm[1] * (iap_t + 0.5))
        if zone == "pedicle":
            ped_from = (side * (d.w_out - 1.0), d.vpb - 3.0)
            ped_to = (side * (d.w_out + 3.0), d.ts_v + 1.0)
            tp_to = (side * (max(d.a_l, d.a_r) + 22.0), d.ts_v)
            ops += _bone(Union(capsule(f, ped_from, ped_to, 4.2), capsule(f, ped_to, tp_to, 4.0, 2.8)),
                         Union(capsule(f, ped_from, ped_to, 2.9), capsule(f, ped_to, tp_to, 2.7, 1.5)))
            lam_from = ped_to
        else:
            sap_c = (joint[0] - nrm[0] * (sap_t + 0.5), joint[1] - nrm[1] * (sap_t + 0.5))
            ops.append(Paint(capsule(f, (joint[0] - dirn[0] * 6, joint[1] - dirn[1] * 6),
                                     (joint[0] + dirn[0] * 6, joint[1] + dirn[1] * 6), 0.8), T.FACET_FLUID))
            ops += _bone(ellipse(f, *sap_c, 8.0 * hyp, sap_t, ang),
                         ellipse(f, *sap_c, 8.0 * hyp - 1.3, sap_t - 1.3, ang))
            ops += _bone(ellipse(f, *iap_c, 7.5 * hyp, iap_t, ang),
                         ellipse(f, *iap_c, 7.5 * hyp - 1.3, iap_t - 1.3, ang))
            lam_from = iap_c
        ops += _bone(capsule(f, lam_from, s0, lv.lamina_r), capsule(f, lam_from, s0, lv.lamina_r - 1.3))
    tip = (lv.spinous_tilt, s0[1] + lv.spinous_len)
    r = lv.spinous_r
    ops += _bone(Union(capsule(f, s0, tip, r + 0.6, r * 0.8), ellipse(f, *tip, r * 1.1, 3.5)),
                 Union(capsule(f, s0, tip, r - 0.7, r * 0.8 - 1.2), ellipse(f, *tip, r * 1.1 - 1.2, 2.3)))
    return ops


def _disc_ops(lv: LevelAnatomy, d: _Derived) -> list[Op]:
    """Kidney-shaped disc: annulus with a concave posterior border, nucleus, optional herniation."""
    f = lv.frame
    outer = superellipse(f, 0.0, 0.0, d.a_r, d.a_l, d.b_front, d.b_back, lv.disc_p)
    notch = ellipse(f, 0.0, d.b_back + lv.notch_rv - d.notch, lv.notch_ru, lv.notch_rv)
    shape: Shape = Diff(outer, notch)
    core = None
    if lv.hernia is not None:
        hu, hw, hh = lv.hernia
        base = _disc_back(lv, d, hu) - (d.notch if abs(hu) < lv.notch_ru else 0.0)
        shape = Union(shape, ellipse(f, hu, base + hh / 2 - 1.0, hw, hh / 2 + 1.5))
        core = ellipse(f, hu, base + hh / 2 - 2.0, hw - 1.5, hh / 2 + 0.3)
    ops: list[Op] = [Paint(shape, T.ANNULUS)]
    size = lv.nucleus_size
    na, nb = 0.66 * size * (d.a_l + d.a_r) / 2, 0.55 * size * (d.b_front + d.b_back) / 2
    ops.append(Paint(ellipse(f, 0.0, 1.2, na + 3.0, nb + 2.4), T.TRANSITION, frozenset({T.ANNULUS})))
    ops.append(Paint(ellipse(f, 0.0, 1.5, na, nb), T.NUCLEUS, frozenset({T.TRANSITION})))
    if lv.cleft:  # intranuclear cleft: a thin dark horizontal band in adult discs
        ops.append(Paint(capsule(f, (-na * 0.6, 1.2), (na * 0.6, 1.8), 0.55), T.TRANSITION,
                         frozenset({T.NUCLEUS})))
    if core is not None:
        ops.append(Paint(core, T.HERNIA, frozenset({T.ANNULUS})))
    return ops


def _vertebral_body_ops(lv: LevelAnatomy, d: _Derived, sacrum: bool = False) -> list[Op]:
    """Vertebral body (background class): cortical rim, fatty marrow, basivertebral vein; sacral alae at S1."""
    f = lv.frame
    a_r, a_l, bf, bb = d.a_r * 0.94, d.a_l * 0.94, d.b_front * 0.96, d.b_back * 0.96
    notch = ellipse(f, 0.0, bb + 6.0 - 2.0, lv.notch_ru, 6.0)
    outer = Diff(superellipse(f, 0.0, 0.0, a_r, a_l, bf, bb, lv.disc_p), notch)
    inner = superellipse(f, 0.0, 0.0, a_r - 1.6, a_l - 1.6, bf - 1.6, bb - 1.6, lv.disc_p)
    ops: list[Op] = [Paint(outer, T.CORTEX), Paint(inner, T.MARROW, frozenset({T.CORTEX})),
                     Paint(ellipse(f, 0.0, bb - 4.5, 3.0, 2.0), T.VEIN, frozenset({T.MARROW}))]
    if sacrum:  # S1: the alae reach out from the body towards the iliac wings
        reach = _iliac_base(lv, d) + 4.0
        for side in (-1.0, 1.0):
            start, end = (side * a_r * 0.6, bb * 0.2), (side * reach, bb * 0.45)
            ops.append(Paint(capsule(f, start, end, 9.0, 6.0), T.CORTEX, _SOFT))
            ops.append(Paint(capsule(f, start, end, 7.4, 4.4), T.MARROW, frozenset({T.CORTEX})))
    return ops


@dataclass(frozen=True)
class Scene:
    """Paint operations of one slice: `coarse` (large, painted at 1x) then `fine` (at 2x)."""

    coarse: list[Op]
    fine: list[Op]


def build_scene(p: PatientAnatomy, disc: int, zone: str = "disc") -> Scene:
    """Ordered paint operations for one slice at `disc`; zone is one of ZONES."""
    if zone not in ZONES:
        raise ValueError(f"zone must be one of {ZONES}, got {zone!r}")
    if disc not in p.levels:
        raise ValueError(f"disc must be one of {DISCS}, got {disc!r}")
    lv = p.levels[disc]
    d = _derive(lv)
    coarse = _body_ops(p, lv, d) + _back_ops(lv, d) + _pelvic_muscle_ops(lv, d)
    fine = _septa_ops(lv, d) + _psoas_iliac_ops(lv, d) + _vessel_ops(lv, d) + _arch_ops(lv, d, zone)
    fine += _canal_ops(lv, d, foramina=zone == "disc")
    sacrum = disc == DISCS[-1] and zone == "pedicle"  # below L5-S1 the slice cuts S1
    fine += _disc_ops(lv, d) if zone == "disc" else _vertebral_body_ops(lv, d, sacrum)
    return Scene(coarse, fine)


# ----------------------------------------------------------------------------- acquisition


@dataclass(frozen=True)
class SliceImages:
    """One rendered slice: 12-bit T1 and T2 images (uint16) and class ids (uint8)."""

    t1: np.ndarray | None
    t2: np.ndarray
    labels: np.ndarray


@functools.lru_cache(maxsize=8)
def _upsampler(n_coarse: int, n_fine: int, taps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-kernel interpolation from a coarse to a fine 1-D grid, as (indices, weights) per fine sample.

    A banded gather instead of a dense matrix product: OpenBLAS threads on a busy machine made
    the tiny products several times slower than this.
    """
    fine = (np.arange(n_fine) + 0.5) / n_fine * n_coarse - 0.5
    nearest = np.rint(fine).astype(np.intp)
    idx = nearest[:, None] + np.arange(taps)[None, :] - taps // 2
    w = np.exp(-0.5 * ((fine[:, None] - idx) / 0.8) ** 2)
    w[(idx < 0) | (idx >= n_coarse)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, n_coarse - 1), w.astype(np.float32)


def _upsample(coarse: np.ndarray, n_fine: int) -> np.ndarray:
    """Smoothly interpolate a square coarse array to (n_fine, n_fine), separably."""
    idx, w = _upsampler(coarse.shape[0], n_fine)
    rows = sum(w[:, k, None] * coarse[idx[:, k], :] for k in range(idx.shape[1]))
    return sum(rows[:, idx[:, k]] * w[None, :, k] for k in range(idx.shape[1]))


def _smooth_field(rng: np.random.Generator, n_coarse: int, n_fine: int) -> np.ndarray:
    """Random field with unit-ish variance and correlation length ~ n_fine / n_coarse pixels."""
    coarse = rng.standard_normal((n_coarse, n_coarse), dtype=np.float32)
    return _upsample(coarse, n_fine) * np.float32(2.2)


def _texture_bowel(tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Replace the BOWEL placeholder with loops: wall, fluid or gas lumen, mesenteric fat."""
    n = tissue.shape[0]
    retro = tissue == T.RETRO_FAT
    mask = (tissue == T.BOWEL) | retro
    # loops fade out (not get cut) towards the retroperitoneum
    block = n // 40
    coarse = retro.reshape(40, block, 40, block).mean(axis=(1, 3), dtype=np.float32)
    loops = _smooth_field(rng, 30, n) - 2.5 * _upsample(coarse, n)
    kind = _smooth_field(rng, 10, n)
    lumen = (loops > 0.1) & mask
    wall = _dilate(lumen, 2) & ~lumen  # walls of even thickness (~2-3 mm) around every lumen
    out = np.full(tissue.shape, T.BOWEL_FAT, dtype=np.uint8)  # mesenteric and retroperitoneal fat
    out[wall] = T.BOWEL_WALL
    out[lumen] = T.BOWEL_FLUID
    out[lumen & (kind < -0.4)] = T.BOWEL_CONTENT
    out[lumen & (kind > 0.9)] = T.BOWEL_GAS
    tissue[mask] = out[mask]


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1) square, with array shifts (no scipy)."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(2.5 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    n = img.shape[0]
    padded = np.pad(img, radius, mode="edge")
    rows = sum(w * padded[i:i + n, :] for i, w in enumerate(k))
    return sum(w * rows[:, i:i + n] for i, w in enumerate(k))


@functools.lru_cache(maxsize=64)
def _bias_field(bias: tuple[float, ...]) -> np.ndarray:
    """Smooth multiplicative coil sensitivity, stronger posteriorly (spine array coil)."""
    g = (np.arange(SIZE) + 0.5) / SIZE * 2 - 1
    x, y = g[None, :], g[:, None]
    c = bias
    return np.exp(c[0] * x + c[1] * y + c[2] * x * x + c[3] * y * y + c[4] * x * y).astype(np.float32)


def _acquire(signal: np.ndarray, gain: float, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Rician noise (magnitude of complex Gaussian noise) and 12-bit quantisation."""
    sigma = np.float32(gain / snr)
    re = signal + rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    im = rng.standard_normal(signal.shape, dtype=np.float32) * sigma
    mag = np.sqrt(re * re + im * im)
    return np.clip(np.rint(mag), 0, MAX_VALUE).astype(np.uint16)


@functools.lru_cache(maxsize=2)
def _grid(oversample: int) -> Grid:
    return Grid.make(oversample)


def render_labels(scene: Scene) -> np.ndarray:
    """Class ids (uint8) at 1x pixel centres.

    Only operations from the first labelled tissue on can change a label, so the background
    layers before it are skipped.
    """
    ops = [*scene.coarse, *scene.fine]
    first = next((i for i, op in enumerate(ops)
                  if isinstance(op, Paint) and CLASS_OF_TISSUE[op.tissue] != 0), len(ops))
    return CLASS_OF_TISSUE[paint(ops[first:], _grid(1), N_TISSUES)]


def render_tissue(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Tissue map at 2x: coarse layers (with bowel loops) at 1x upsampled, fine shapes at 2x."""
    coarse = paint(scene.coarse, _grid(1), N_TISSUES)
    _texture_bowel(coarse, rng)
    tissue = np.repeat(np.repeat(coarse, OVERSAMPLE, axis=0), OVERSAMPLE, axis=1)
    return paint(scene.fine, _grid(OVERSAMPLE), N_TISSUES, canvas=tissue)


def render_slice(p: PatientAnatomy, disc: int, zone: str = "disc", slice_key: int = 0,
                 with_t1: bool = True) -> SliceImages:
    """Render one slice; (patient, disc, zone, slice_key) fully determine the pixels.

    The T2 image does not depend on `with_t1` (each modality has its own noise stream).
    """
    scene = build_scene(p, disc, zone)
    labels = render_labels(scene)
    rng = _rng(p.seed, p.index, 1, disc, slice_key)
    tissue = render_tissue(scene, rng)
    # the four 2x sub-samples of every pixel: averaging their signals is the partial-volume effect
    subs = [np.ascontiguousarray(tissue[i::OVERSAMPLE, j::OVERSAMPLE]) for i in (0, 1) for j in (0, 1)]
    texture = 1.0 + _TEXTURE[subs[0]] * _smooth_field(rng, 64, SIZE)
    bias = _bias_field(p.bias)
    out: dict[str, np.ndarray] = {}
    for i, name in enumerate(("T1", "T2")):
        if name == "T1" and not with_t1:
            continue
        lut = (_BASE[i] * p.contrast_jitter[i]).astype(np.float32)
        if name == "T2":
            lut[T.NUCLEUS] *= p.levels[disc].nucleus_t2
        mean = (lut[subs[0]] + lut[subs[1]] + lut[subs[2]] + lut[subs[3]]) * np.float32(0.25)
        signal = _gaussian_blur(mean * texture, p.blur_sigma) * (bias * np.float32(p.gain[i]))
        out[name] = _acquire(signal, p.gain[i], p.snr[i], _rng(p.seed, p.index, 2 + i, disc, slice_key))
    return SliceImages(out.get("T1"), out["T2"], labels)
