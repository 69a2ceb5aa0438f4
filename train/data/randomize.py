"""Domain-randomised appearance of a phantom slice: random tissue intensities, deformation, bias, blur.

After SynthSeg (Billot et al., Med Image Anal 2023): the network sees the phantom's label map
rendered with intensities drawn at random per image, so it must learn shape rather than one
scanner's contrast. Each tissue is split into intensity sub-classes by a smooth random field
(FetalSynthSeg, Zalevskyi et al., MELBA 2026), and every image also gets a random elastic
deformation (shared with its labels), within-tissue texture, a smooth or steep coil bias
(including the anterior fall-off of a posterior spine coil), blur, resolution loss, gamma and
Rician noise. The anatomy comes unchanged from `train.data.phantom`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.data.phantom import (
    _BASE,
    MAX_VALUE,
    N_TISSUES,
    OVERSAMPLE,
    SIZE,
    SPACING_MM,
    PatientAnatomy,
    SliceImages,
    T,
    _acquire,
    _dilate,
    _gaussian_blur,
    _rng,
    _smooth_field,
    _upsample,
    build_scene,
    render_labels,
    render_tissue,
)

CONTRAST_PRIORS = ("T1", "T2", "random")
"""How tissue means are drawn: jittered around T1 or T2 signal tables, or uniform at random."""
N_SUBCLASSES = 3
_TRABECULAR = (T.MARROW, T.PE_MARROW)
_SMOOTH = (T.ANNULUS, T.TRANSITION, T.NUCLEUS, T.HERNIA)
_SIGNAL_VOID = (T.AIR, T.BOWEL_GAS, T.CORTEX, T.PE_CORTEX)
"""No MR signal in any sequence: cortical bone and gas are dark on T1, T2 and everything between."""
_GROUPS: tuple[tuple[T, ...], ...] = (
    (T.SUBCUT_FAT, T.FAT, T.BOWEL_FAT, T.RETRO_FAT, T.EPIDURAL_FAT),
    (T.WALL_MUSCLE, T.MUSCLE),
    (T.ANNULUS, T.TRANSITION, T.NUCLEUS, T.HERNIA),
    (T.MARROW, T.PE_MARROW),
    (T.CSF, T.FACET_FLUID, T.BOWEL_FLUID),
    (T.CAUDA, T.ROOT, T.DURA, T.FLAVUM),
    (T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA),
    (T.BOWEL, T.BOWEL_WALL, T.BOWEL_CONTENT),
    (T.ARTERY, T.VEIN),
    (T.SKIN,),
    (T.AIR, T.BOWEL_GAS, T.CORTEX, T.PE_CORTEX),
)
"""Tissues that share most of their random intensity factor."""
_GROUP_OF = np.zeros(N_TISSUES, dtype=np.intp)
for _index, _members in enumerate(_GROUPS):
    _GROUP_OF[list(_members)] = _index
assert sorted(t for g in _GROUPS for t in g) == list(range(N_TISSUES)), "every tissue in exactly one group"


@dataclass(frozen=True)
class Randomization:
    """Ranges of the random appearance (one draw per image); defaults cover real axial lumbar MRI.

    prior_weights: probability of a T1-like, T2-like and fully random intensity table for the
    images written as T1 and as T2 (the rest of the mass goes to "random"); jitter: log-normal
    sigma of each tissue mean around its table value; deform_mm: largest elastic displacement;
    blur_px: Gaussian sigma range (pixels) per axis; falloff: probability of an anterior signal
    fall-off; snr: range of the signal-to-noise ratio; gamma: log-range of the intensity exponent;
    uniform_disc: probability that all parts of a disc share one mean (degenerated discs, and
    every real T1 disc, show no nucleus); soft_nucleus: probability that the signal inside a disc
    is smoothed so no sharp inner ellipse remains; fat_streaks: probability of bright, thin fat
    streaks inside the muscles (real paraspinal muscles are marbled with fat); dark_rim: probability
    of a dark outer annulus (its collagen lamellae have little signal in every sequence), so a dark
    ring around a round structure is not the vertebral body's cortex alone; roots: probability of
    5-60 extra cauda-equina roots scattered in the sac, mostly posteriorly (real T2 sacs are
    speckled with dark roots, and they are still thecal sac); hidden_dura: probability that the
    dura takes the CSF's signal (a 0.3 mm membrane is seldom a visible line on a real slice, so the
    sac must end where the CSF does, not at a dark ring); clear_sac: probability that the sac's
    fixed cauda-equina roots become CSF (some real T2 sacs are a uniform bright triangle, and a
    network that only ever saw speckled sacs labels that as epidural fat).
    """

    prior_weight: float = 0.7
    jitter: float = 0.35
    subclass_jitter: float = 0.15
    texture: tuple[float, float] = (0.0, 0.25)
    deform_mm: float = 3.0
    blur_px: tuple[float, float] = (0.3, 1.6)
    falloff: float = 0.75
    snr: tuple[float, float] = (6.0, 45.0)
    gamma: float = 0.45
    uniform_disc: float = 0.5
    soft_nucleus: float = 0.8
    fat_streaks: float = 0.7
    dark_rim: float = 0.6
    roots: float = 0.6
    hidden_dura: float = 0.7
    clear_sac: float = 0.4


def _deform(tissue: np.ndarray, labels: np.ndarray, rng: np.random.Generator, max_mm: float) -> tuple[np.ndarray, ...]:
    """Apply one smooth random displacement field to the 2x tissue map and the 1x labels (nearest)."""
    amp = rng.uniform(0.0, max_mm) / SPACING_MM  # in 1x pixels
    n2 = tissue.shape[0]
    field = [_upsample(rng.standard_normal((6, 6)).astype(np.float32), n2) * np.float32(amp / 1.5) for _ in range(2)]
    dy2, dx2 = (f * OVERSAMPLE for f in field)
    rows2, cols2 = np.mgrid[0:n2, 0:n2].astype(np.float32)
    r2 = np.clip(np.rint(rows2 + dy2), 0, n2 - 1).astype(np.intp)
    c2 = np.clip(np.rint(cols2 + dx2), 0, n2 - 1).astype(np.intp)
    n1 = labels.shape[0]
    dy1, dx1 = (f.reshape(n1, OVERSAMPLE, n1, OVERSAMPLE).mean(axis=(1, 3)) for f in field)
    rows1, cols1 = np.mgrid[0:n1, 0:n1].astype(np.float32)
    r1 = np.clip(np.rint(rows1 + dy1), 0, n1 - 1).astype(np.intp)
    c1 = np.clip(np.rint(cols1 + dx1), 0, n1 - 1).astype(np.intp)
    return tissue[r2, c2], labels[r1, c1]


def _tissue_means(prior: str, rng: np.random.Generator, cfg: Randomization, nucleus_t2: float) -> np.ndarray:
    """(N_TISSUES, N_SUBCLASSES) mean signal in [0, 1.2] for one image.

    Tissues of one group (all fats, the parts of a disc, ...) share a random factor and differ by a
    smaller one, so a disc is as often homogeneous as layered; tissues without MR signal in any
    sequence (air, gas, cortical bone) stay dark.
    """
    group_draw = rng.normal(0.0, cfg.jitter, len(_GROUPS))[_GROUP_OF]
    tissue_draw = rng.normal(0.0, cfg.jitter / 2, N_TISSUES)
    if prior == "random":
        base = rng.uniform(0.0, 1.0, len(_GROUPS))[_GROUP_OF] * np.exp(tissue_draw)
    else:
        table = _BASE[CONTRAST_PRIORS.index(prior)].copy()
        if prior == "T2":
            table[T.NUCLEUS] *= nucleus_t2
        base = table * np.exp(group_draw + tissue_draw) + rng.uniform(0.0, 0.05, N_TISSUES)
    means = base[:, None] * np.exp(rng.normal(0.0, cfg.subclass_jitter, (N_TISSUES, N_SUBCLASSES)))
    if rng.random() < cfg.uniform_disc:
        means[list(_SMOOTH)] = means[T.ANNULUS].mean() * np.exp(rng.normal(0.0, 0.04, (len(_SMOOTH), N_SUBCLASSES)))
    if rng.random() < cfg.hidden_dura:
        means[T.DURA] = means[T.CSF] * np.exp(rng.normal(0.0, 0.1, N_SUBCLASSES))
    means[list(_SIGNAL_VOID)] = rng.uniform(0.0, 0.12, (len(_SIGNAL_VOID), N_SUBCLASSES))
    means[T.AIR] = rng.uniform(0.0, 0.04)  # outside the body there is only noise
    return np.clip(means, 0.0, 1.2).astype(np.float32)


def _blur(img: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Separable Gaussian blur with a sigma (pixels) per axis: anisotropic resolution loss."""
    out = img
    for axis, sigma in ((0, sigma_y), (1, sigma_x)):
        radius = max(1, int(np.ceil(2.5 * sigma)))
        k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        k = (k / k.sum()).astype(np.float32)
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def _bias(rng: np.random.Generator, cfg: Randomization) -> np.ndarray:
    """Multiplicative coil sensitivity: a smooth random field, often times a steep anterior fall-off."""
    log_field = _upsample(rng.standard_normal((4, 4)).astype(np.float32), SIZE) * np.float32(rng.uniform(0.05, 0.35))
    field = np.exp(log_field)
    if rng.random() < cfg.falloff:  # posterior spine coil: signal fades towards the anterior abdomen
        rows = np.arange(SIZE, dtype=np.float32)[:, None]
        centre, width = rng.uniform(0.2, 0.55) * SIZE, rng.uniform(8.0, 50.0)
        floor = rng.uniform(0.02, 0.6)
        field = field * (floor + (1.0 - floor) / (1.0 + np.exp(-(rows - centre) / width)))
    return field.astype(np.float32)


def _soften_disc(fine: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Smooth the signal inside the disc only (normalised convolution), in place: no sharp nucleus edge.

    Real nuclei fade into the annulus over several millimetres; the phantom paints them as crisp
    ellipses, which a network learns as the disc's signature.
    """
    disc = np.isin(tissue, _SMOOTH)
    rows, cols = np.nonzero(disc)
    if rows.size == 0:
        return
    sigma = float(rng.uniform(4.0, 14.0))  # 2x pixels: ~1.4-4.8 mm
    pad = int(3 * sigma)
    r0, c0 = max(rows.min() - pad, 0), max(cols.min() - pad, 0)
    side = min(max(rows.max() - r0, cols.max() - c0) + pad + 1, tissue.shape[0] - max(r0, c0))
    crop = (slice(r0, r0 + side), slice(c0, c0 + side))
    weight = disc[crop].astype(np.float32)
    smooth = _gaussian_blur(fine[crop] * weight, sigma) / np.maximum(_gaussian_blur(weight, sigma), 1e-3)
    mix = np.float32(rng.uniform(0.6, 1.0))
    inside = disc[crop]
    fine[crop][inside] = mix * smooth[inside] + (1 - mix) * fine[crop][inside]


def _dark_rim(fine: np.ndarray, tissue: np.ndarray, rng: np.random.Generator) -> None:
    """Darken the outer 0.7-2 mm of the disc, in place."""
    disc = np.isin(tissue, _SMOOTH)
    width = int(rng.integers(2, 7))  # 2x pixels of 0.34 mm
    rim = disc & _dilate(~disc, width)
    fine[rim] *= np.float32(rng.uniform(0.25, 0.75))


def scatter_roots(tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of the 2x tissue map with 0.45-1 mm cauda-equina roots painted over CSF (same TS class)."""
    rows, cols = np.nonzero(tissue == T.CSF)
    if rows.size == 0:
        return tissue
    count = int(rng.integers(5, 61))
    depth = (rows - rows.min()) / max(int(np.ptp(rows)), 1)  # 0 anterior .. 1 posterior
    weight = np.exp(rng.uniform(0.0, 3.0) * depth)
    pick = rng.choice(rows.size, count, p=weight / weight.sum())
    radius = rng.uniform(0.45, 1.0, count) * OVERSAMPLE / SPACING_MM
    r0, c0 = rows.min(), cols.min()
    box = (slice(r0, rows.max() + 1), slice(c0, cols.max() + 1))
    yy, xx = np.mgrid[box]
    out = tissue.copy()
    region = out[box]
    for r, c, rad in zip(rows[pick], cols[pick], radius, strict=True):
        region[((yy - r) ** 2 + (xx - c) ** 2 <= rad * rad) & (region == T.CSF)] = T.CAUDA
    return out


def sac_contents(tissue: np.ndarray, rng: np.random.Generator, cfg: Randomization) -> np.ndarray:
    """The sac's roots for one image: the fixed cauda equina cleared to CSF (cfg.clear_sac), then
    scattered roots (cfg.roots); the labels are the same either way (all of it is thecal sac)."""
    if rng.random() < cfg.clear_sac:
        tissue = np.where(tissue == T.CAUDA, np.uint8(T.CSF), tissue)
    if rng.random() < cfg.roots:
        tissue = scatter_roots(tissue, rng)
    return tissue


def _fat_streaks(fine: np.ndarray, tissue: np.ndarray, means: np.ndarray, rng: np.random.Generator) -> None:
    """Paint thin curved fat streaks into muscle, in place (zero crossings of a smooth random field)."""
    field = _smooth_field(rng, int(rng.integers(16, 48)), tissue.shape[0])
    streak = (np.abs(field) < np.float32(rng.uniform(0.05, 0.2))) & np.isin(tissue, (T.MUSCLE, T.WALL_MUSCLE))
    fine[streak] = means[T.FAT, 0] * np.float32(rng.uniform(0.5, 1.0))


def randomized_image(tissue: np.ndarray, prior: str, rng: np.random.Generator, cfg: Randomization,
                     nucleus_t2: float = 1.0) -> np.ndarray:
    """One 12-bit image (SIZE, SIZE) of a 2x tissue map with a freshly drawn random appearance."""
    means = _tissue_means(prior, rng, cfg, nucleus_t2)
    sub_field = _smooth_field(rng, int(rng.integers(6, 20)), tissue.shape[0])
    cuts = np.sort(rng.normal(0.0, 1.0, N_SUBCLASSES - 1))
    sub = np.digitize(sub_field, cuts).astype(np.intp)
    texture_amp = rng.uniform(*cfg.texture, N_TISSUES).astype(np.float32)
    texture_amp[T.AIR] = 0.0
    texture_amp[list(_SMOOTH)] = rng.uniform(0.0, 0.05)  # fibrocartilage is smooth in every contrast
    texture = _smooth_field(rng, int(rng.integers(40, 160)), tissue.shape[0])
    fine = means[tissue, sub] * (1.0 + texture_amp[tissue] * texture)
    # trabecular marrow is mottled in every contrast: a fine (1-2 px) speckle of its own
    speckle = _smooth_field(rng, int(rng.integers(200, 400)), tissue.shape[0])
    marrow = np.isin(tissue, _TRABECULAR)
    fine[marrow] *= 1.0 + np.float32(rng.uniform(0.12, 0.4)) * speckle[marrow]
    if rng.random() < cfg.soft_nucleus:
        _soften_disc(fine, tissue, rng)
    if rng.random() < cfg.dark_rim:
        _dark_rim(fine, tissue, rng)
    if rng.random() < cfg.fat_streaks:
        _fat_streaks(fine, tissue, means, rng)
    n = SIZE
    signal = fine.reshape(n, OVERSAMPLE, n, OVERSAMPLE).mean(axis=(1, 3))  # partial volume
    signal = _blur(signal, *rng.uniform(*cfg.blur_px, 2)) * _bias(rng, cfg)
    signal = np.clip(signal, 0.0, None) ** np.float32(np.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    gain = float(MAX_VALUE) * 0.7 / max(float(np.percentile(signal, 99.5)), 1e-3)
    return _acquire(signal.astype(np.float32) * np.float32(gain), gain, rng.uniform(*cfg.snr), rng)


def render_randomized_slice(p: PatientAnatomy, disc: int, zone: str = "disc", slice_key: int = 0,
                            cfg: Randomization = Randomization()) -> SliceImages:
    """Render one slice with a random deformation and two random appearances.

    The image written as "T1" draws its intensity table around T1 signal (probability
    cfg.prior_weight) or fully at random, likewise "T2"; (patient, disc, zone, slice_key)
    fully determine the pixels.
    """
    scene = build_scene(p, disc, zone)
    rng = _rng(p.seed, p.index, 7, disc, slice_key)
    tissue, labels = _deform(render_tissue(scene, rng), render_labels(scene), rng, cfg.deform_mm)
    tissue = sac_contents(tissue, rng, cfg)
    images = {}
    for name in ("T1", "T2"):
        prior = name if rng.random() < cfg.prior_weight else "random"
        images[name] = randomized_image(tissue, prior, rng, cfg, p.levels[disc].nucleus_t2)
    return SliceImages(images["T1"], images["T2"], labels)
