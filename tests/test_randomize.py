"""Domain-randomised synthesis: determinism, label/anatomy agreement, contrast variety, training on both contrasts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from train.data.mendeley import index_dataset, with_modalities
from train.data.phantom import CLASS_OF_TISSUE, N_TISSUES, T, build_scene, render_labels, render_tissue, sample_patient
from train.data.randomize import (
    Randomization,
    _dark_rim,
    _deform,
    _fat_streaks,
    _soften_disc,
    _tissue_means,
    randomized_image,
    render_randomized_slice,
    sac_contents,
    scatter_roots,
)
from train.data.synth import synthesize


def test_same_key_same_pixels_other_key_other_appearance() -> None:
    p = sample_patient(4, 1)
    a, b = render_randomized_slice(p, 4, "disc", 0), render_randomized_slice(p, 4, "disc", 0)
    assert np.array_equal(a.t1, b.t1) and np.array_equal(a.t2, b.t2) and np.array_equal(a.labels, b.labels)
    c = render_randomized_slice(p, 4, "disc", 1)
    assert not np.array_equal(a.t2, c.t2)
    assert a.t1.dtype == np.uint16 and a.t1.shape == a.labels.shape == (320, 320) and a.t1.max() <= 4095


def test_deformation_moves_labels_and_tissue_together() -> None:
    """Painting classes from the deformed 2x tissue map gives (nearly) the deformed labels."""
    p = sample_patient(2, 0)
    scene = build_scene(p, 4, "disc")

    rng = np.random.default_rng(0)
    tissue, labels = _deform(render_tissue(scene, rng), render_labels(scene), np.random.default_rng(1), 3.0)
    from_tissue = CLASS_OF_TISSUE[tissue[::2, ::2]]
    moved = render_labels(scene)
    assert not np.array_equal(labels, moved)  # the field did move something
    fg = (labels > 0) | (from_tissue > 0)
    assert np.mean(labels[fg] == from_tissue[fg]) > 0.85  # same shapes, up to the 2x/1x sampling offset


def test_contrast_priors_keep_their_signature_on_average() -> None:
    """T1-like tables keep CSF below fat, T2-like above; 'random' has no such rule (both orders occur)."""
    cfg = Randomization()
    orders = {prior: [] for prior in ("T1", "T2", "random")}
    for seed in range(200):
        for prior in orders:
            means = _tissue_means(prior, np.random.default_rng(seed), cfg, 1.0)
            orders[prior].append(means[T.CSF].mean() > means[T.EPIDURAL_FAT].mean())
    assert np.mean(orders["T1"]) < 0.1
    assert np.mean(orders["T2"]) > 0.6
    assert 0.2 < np.mean(orders["random"]) < 0.8
    assert means.shape == (N_TISSUES, 3)


def test_anterior_falloff_darkens_the_front_of_the_body() -> None:
    p = sample_patient(9, 3)
    scene = build_scene(p, 3, "disc")

    tissue = render_tissue(scene, np.random.default_rng(0))
    always = Randomization(falloff=1.0, texture=(0.0, 0.0))
    never = Randomization(falloff=0.0, texture=(0.0, 0.0))
    ratios = []
    for seed in range(6):
        with_f = randomized_image(tissue, "T2", np.random.default_rng(seed), always).astype(float)
        without = randomized_image(tissue, "T2", np.random.default_rng(seed), never).astype(float)
        front = lambda img: img[40:100].mean() / img[200:260].mean()  # noqa: E731
        ratios.append(front(with_f) / front(without))
    assert np.median(ratios) < 0.9


def test_randomized_synth_writes_both_contrasts_and_records_the_mode(tmp_path: Path) -> None:
    out = tmp_path / "dr"
    summary = synthesize(out, patients=2, seed=1, off_disc=True, randomize=True)
    assert summary.n_slices == 24 and summary.n_rendered == 24  # per level: disc, its redraw, end plate, pedicle
    record = json.loads((out / "synth.json").read_text())
    assert record["appearance"] == "randomized"
    pairs = index_dataset(out)
    samples = with_modalities(pairs, "both")
    assert len(samples) == 48 and {m for _, m in samples} == {"T1", "T2"}
    assert [m for _, m in with_modalities(pairs, "T1")] == ["T1"] * 24
    assert sum(p.tag == "redraw" for p in pairs) == 6
    with pytest.raises(ValueError, match="modality must be one of"):
        with_modalities(pairs, "PD")


def test_randomized_synth_is_reproducible_per_seed(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed in ((first, 7), (second, 7), (other, 8)):
        synthesize(folder, patients=1, seed=seed, randomize=True)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 3 * 2 * 3  # 3 levels x (disc, redraw) x (label, T1, T2)
    assert all((first / rel).read_bytes() == (second / rel).read_bytes() for rel in files)
    t1 = Path("04_Intermediary_Ground_Truth_Data/T1_Output/T1_0001_D4.png")
    assert (first / t1).read_bytes() != (other / t1).read_bytes()


def test_parallel_workers_write_the_same_bytes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    synthesize(one, patients=3, seed=2, randomize=True, preview=True)
    synthesize(two, patients=3, seed=2, randomize=True, preview=True, workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file() and p.name != "synth.json")
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file() and p.name != "synth.json")
    assert all((one / rel).read_bytes() == (two / rel).read_bytes() for rel in files)


def _disc_map(n: int = 160) -> np.ndarray:
    """A 2x tissue map: muscle, an annulus ellipse with a nucleus inside, marrow in one corner."""
    rows, cols = np.mgrid[0:n, 0:n]
    r2 = ((rows - n / 2) / 30.0) ** 2 + ((cols - n / 2) / 45.0) ** 2
    tissue = np.full((n, n), T.MUSCLE, np.uint8)
    tissue[r2 < 1.0] = T.ANNULUS
    tissue[r2 < 0.35] = T.NUCLEUS
    tissue[:20, :20] = T.MARROW
    return tissue


def test_uniform_disc_gives_every_part_of_the_disc_one_mean() -> None:
    always, never = Randomization(uniform_disc=1.0), Randomization(uniform_disc=0.0)
    spread = {"always": [], "never": []}
    for seed in range(40):
        for name, cfg in (("always", always), ("never", never)):
            means = _tissue_means("T2", np.random.default_rng(seed), cfg, 1.0)
            disc = means[[T.ANNULUS, T.TRANSITION, T.NUCLEUS, T.HERNIA]]
            spread[name].append(disc.max() / max(disc.min(), 1e-6))
    assert max(spread["always"]) < 1.4  # one mean, 4 % jitter per part and sub-class
    assert np.median(spread["never"]) > 2.0  # a T2 nucleus is far brighter than its annulus


def test_soft_nucleus_blurs_inside_the_disc_only() -> None:
    tissue = _disc_map()
    fine = np.where(tissue == T.NUCLEUS, 1.0, np.where(tissue == T.ANNULUS, 0.3, 0.5)).astype(np.float32)
    before = fine.copy()
    _soften_disc(fine, tissue, np.random.default_rng(0))
    disc = np.isin(tissue, (T.ANNULUS, T.NUCLEUS))
    np.testing.assert_array_equal(fine[~disc], before[~disc])  # nothing outside the disc moves
    assert fine[disc].min() >= 0.3 and fine[disc].max() <= 1.0  # a weighted mean of disc values only
    row = fine[80, 35:125]  # across the disc, through the nucleus edge
    assert np.abs(np.diff(row)).max() < 0.5 * np.abs(np.diff(before[80, 35:125])).max()


def test_fat_streaks_brighten_muscle_only() -> None:
    tissue = _disc_map()
    means = np.full((N_TISSUES, 3), 0.2, np.float32)
    means[T.FAT] = 0.9
    fine = means[tissue, 0].copy()
    _fat_streaks(fine, tissue, means, np.random.default_rng(3))
    changed = fine != means[tissue, 0]
    assert changed.any() and not changed[tissue != T.MUSCLE].any()
    assert 0.01 < changed[tissue == T.MUSCLE].mean() < 0.5  # thin streaks, not a fat-replaced muscle
    assert (fine[changed] > 0.2).all()


def test_dark_rim_darkens_the_outer_annulus_only() -> None:
    tissue = _disc_map()
    fine = np.full(tissue.shape, 0.6, np.float32)
    _dark_rim(fine, tissue, np.random.default_rng(1))
    disc = np.isin(tissue, (T.ANNULUS, T.NUCLEUS))
    dark = fine < 0.6
    assert dark.any() and not dark[~disc].any()
    assert not dark[tissue == T.NUCLEUS].any()  # the rim stays at the edge (a few pixels wide)
    assert dark[80, 36] and not dark[80, 80]  # the disc's first pixel on the left, its centre


def test_scattered_roots_stay_inside_the_sac_and_keep_its_class() -> None:
    p = sample_patient(5, 2)
    tissue = render_tissue(build_scene(p, 4, "disc"), np.random.default_rng(0))
    rooted = scatter_roots(tissue, np.random.default_rng(4))
    changed = rooted != tissue
    assert changed.sum() > 20  # several roots of ~3-6 px diameter at 2x
    assert (tissue[changed] == T.CSF).all() and (rooted[changed] == T.CAUDA).all()
    assert (CLASS_OF_TISSUE[rooted] == CLASS_OF_TISSUE[tissue]).all()  # labels do not change
    assert (rooted == T.CSF).any()  # CSF still shows between the roots


def test_hidden_dura_takes_the_csf_signal() -> None:
    ratios = {}
    for name, p in (("hidden", 1.0), ("shown", 0.0)):
        cfg = Randomization(hidden_dura=p)
        ratios[name] = [float(np.median(m[T.DURA] / m[T.CSF]))
                        for m in (_tissue_means("T2", np.random.default_rng(s), cfg, 1.0) for s in range(40))]
    assert all(0.65 < r < 1.55 for r in ratios["hidden"])  # the CSF's mean, 10 % jitter per sub-class
    assert np.median(ratios["shown"]) < 0.5  # the T2 table: dura 0.25 against CSF 1.0


def test_clear_sac_turns_the_fixed_roots_into_csf_and_nothing_else() -> None:
    p = sample_patient(5, 2)
    tissue = render_tissue(build_scene(p, 4, "disc"), np.random.default_rng(0))
    assert (tissue == T.CAUDA).sum() > 20
    cleared = sac_contents(tissue, np.random.default_rng(1), Randomization(clear_sac=1.0, roots=0.0))
    assert not (cleared == T.CAUDA).any()
    changed = cleared != tissue
    assert (tissue[changed] == T.CAUDA).all() and (cleared[changed] == T.CSF).all()
    kept = sac_contents(tissue, np.random.default_rng(1), Randomization(clear_sac=0.0, roots=0.0))
    np.testing.assert_array_equal(kept, tissue)
