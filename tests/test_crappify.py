"""Camera noise fit from logged pairs, and the crappifier's statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import useq

from pairscope.acquire import PairedAcquisition
from pairscope.hardware import demo_rig_path, open_rig
from pairscope.io import RunWriter
from pairscope.io.calibration import Registration, save_calibration
from pairscope.io.dataset import PairDataset
from pairscope.train import (
    CrappifiedDataset,
    NoiseModel,
    crappify,
    fit_noise_model,
)

# the demo cfg's low-dose camera
GAIN, READ_NOISE, OFFSET = 0.5, 1.6, 100.0


def _acquire(out: Path, frames: int, *, led_percent: float) -> Path:
    # the demo rig (one core per camera): simultaneous pairs, as the fit needs
    with open_rig(demo_rig_path()) as rig:
        for rc in rig.cores:
            rc.core.setProperty(rc.camera, "SensorSize", 256)
        rig.primary.core.setProperty("LED", "Power_percent", led_percent)
        assert rig.spec is not None
        summary = PairedAcquisition(rig, rig.spec.pairing).run(
            useq.MDASequence(time_plan={"interval": 0, "loops": frames}),
            writer=RunWriter(out),
        )
    assert summary.run_dir is not None
    return Path(summary.run_dir)


@pytest.fixture(scope="module")
def light_and_dark(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ptc")
    light = _acquire(root / "light", 12, led_percent=100)
    save_calibration(light, Registration(-0.7, 1.3))
    return light, _acquire(root / "dark", 4, led_percent=0)


def test_noise_fit_with_dark_frames(light_and_dark: tuple[Path, Path]) -> None:
    light, dark = light_and_dark
    nm = fit_noise_model([light], dark_runs=[dark])
    assert nm.gain_e_per_adu == pytest.approx(GAIN, rel=0.1)
    assert nm.read_noise_e == pytest.approx(READ_NOISE, rel=0.1)
    assert nm.offset_adu == pytest.approx(OFFSET, abs=0.5)
    # dose ratio of the demo: (10 % x 20 ms) / (90 % x 50 ms)
    assert nm.dose_ratio == pytest.approx(0.1 * 20 / (0.9 * 50), rel=0.1)
    assert nm.n_points > 10_000


def test_noise_fit_without_dark_frames(light_and_dark: tuple[Path, Path]) -> None:
    nm = fit_noise_model([light_and_dark[0]])
    assert nm.gain_e_per_adu == pytest.approx(GAIN, rel=0.1)
    assert nm.read_noise_e == pytest.approx(READ_NOISE, rel=0.1)
    assert nm.offset_adu == pytest.approx(OFFSET, abs=1.0)


@pytest.mark.parametrize(("factor", "electrons"), [(2, 40.0), (4, 10.0), (1, 300.0)])
def test_crappify_flat_field_statistics(factor: int, electrons: float) -> None:
    noise = NoiseModel(
        gain_e_per_adu=0.5,
        offset_adu=100,
        read_noise_e=1.6,
        dose_ratio=0.05,
        reference_gain_e_per_adu=2.0,
        reference_offset_adu=50,
    )
    ref = np.full((512, 512), 50 + electrons / 2.0)  # reference ADU
    out = crappify(ref, factor, noise, rng=np.random.default_rng(0))
    assert out.dtype == np.uint16 and out.shape == (512 // factor,) * 2
    e_binned = electrons * 0.05 * factor**2
    mean = 100 + e_binned / 0.5
    var = (e_binned + 1.6**2) / 0.5**2 + 1 / 12
    assert out.mean() == pytest.approx(mean, rel=0.01)
    assert out.var() == pytest.approx(var, rel=0.05)


def test_crappify_clips_and_needs_a_model() -> None:
    noise = NoiseModel(0.5, 100, 1.6, dose_ratio=1.0, reference_gain_e_per_adu=1.0,
                       reference_offset_adu=0)  # fmt: skip
    out = crappify(np.full((8, 8), 1e6), 2, noise, rng=np.random.default_rng(0))
    assert (out == 65535).all()
    with pytest.raises(ValueError, match="dose_ratio"):
        crappify(
            np.zeros((8, 8)), 2, NoiseModel(0.5, 100, 1.6), rng=np.random.default_rng(0)
        )


def _adu_crops(light: Path) -> tuple[NoiseModel, PairDataset]:
    """The run's noise fit, and its fixed (unaugmented) crops as tensors in ADU."""
    unit = {"mode": "fixed", "low": 0.0, "high": 1.0}
    base = PairDataset(
        [light], crop=128, augment=False, normalization={"input": unit, "target": unit}
    )
    return fit_noise_model([light]), base


def test_photon_jitter_varies_brightness_not_the_camera_relation(
    light_and_dark: tuple[Path, Path],
) -> None:
    """Synthetic crops at other photon levels: the specimen is brighter or dimmer in
    both frames, and the low-dose/reference relation stays the fitted one (a jitter
    of the dose ratio alone would leave the model to guess the brightness)."""
    noise, base = _adu_crops(light_and_dark[0])
    torch.manual_seed(0)

    def draws(jitter: float) -> tuple[np.ndarray, np.ndarray]:
        data = CrappifiedDataset(base, noise, fraction=1.0, dose_jitter=jitter)
        signal, ratio = [], []
        for _ in range(40):
            x, y = data[0]  # the same crop every time: only the draws differ
            low = float((x.numpy().astype(np.float64) - noise.offset_adu).sum())
            ref = (y.numpy().astype(np.float64) - noise.reference_offset_adu).sum()
            signal.append(float(ref))
            ratio.append(low / float(ref))
        return np.array(signal), np.array(ratio)

    signal, ratio = draws(0.5)
    fixed_signal, fixed_ratio = draws(0.0)
    assert np.std(fixed_signal) == 0
    assert np.std(signal) / np.mean(signal) > 0.15  # ±50 %: uniform, σ ≈ 29 %
    assert np.mean(ratio) == pytest.approx(np.mean(fixed_ratio), rel=0.02)
    assert np.std(ratio) / np.mean(ratio) < 0.03
    expected = noise.dose_ratio * noise.reference_gain_e_per_adu / noise.gain_e_per_adu
    assert np.mean(fixed_ratio) == pytest.approx(expected, rel=0.06)


def test_specimen_mix_adds_two_measured_specimens_at_the_camera_relation(
    light_and_dark: tuple[Path, Path],
) -> None:
    """A mixed synthetic crop's target is its own reference crop plus another
    item's, both above the offset (fluorescence adds), and its low-dose crop is
    simulated from that sum at the fitted camera relation."""
    noise, base = _adu_crops(light_and_dark[0])
    off = noise.reference_offset_adu
    singles = [base.sample(i)[1].astype(np.float64) - off for i in range(len(base))]
    data = CrappifiedDataset(base, noise, fraction=1.0, specimen_mix=1.0)
    expected = noise.dose_ratio * noise.reference_gain_e_per_adu / noise.gain_e_per_adu
    torch.manual_seed(1)
    for _ in range(6):
        x, y = data[0]
        mixed = y.numpy()[0].astype(np.float64) - off
        partner = mixed - singles[0]
        assert min(np.abs(partner - s).max() for s in singles) < 0.5
        low = float((x.numpy().astype(np.float64) - noise.offset_adu).sum())
        assert low / mixed.sum() == pytest.approx(expected, rel=0.06)
    unmixed = CrappifiedDataset(base, noise, fraction=1.0, specimen_mix=0.0)
    y0 = unmixed[0][1].numpy()[0].astype(np.float64) - off
    np.testing.assert_allclose(y0, singles[0], atol=0.5)


def test_point_emitters_add_the_measured_psf_to_both_frames(
    light_and_dark: tuple[Path, Path],
) -> None:
    """Point emitters are added to the target crop through the given PSF, and the
    low-dose crop is simulated from the sum: its signal grows by the points' at
    the fitted camera relation."""
    from pairscope.train._psf_fit import PsfModel, _fit_spot

    noise, base = _adu_crops(light_and_dark[0])
    off = noise.reference_offset_adu
    single = base.sample(0)[1].astype(np.float64) - off
    psf = PsfModel(sigma_px=1.4, n_spots=50, peak_adu=3000.0)
    data = CrappifiedDataset(base, noise, fraction=1.0, point_emitters=1.0, psf=psf)
    expected = noise.dose_ratio * noise.reference_gain_e_per_adu / noise.gain_e_per_adu
    torch.manual_seed(2)
    widths = []
    for _ in range(8):
        x, y = data[0]
        points = y.numpy()[0].astype(np.float64) - off - single
        assert points.min() > -1e-3 and points.max() > 500
        low = float((x.numpy().astype(np.float64) - noise.offset_adu).sum())
        assert low / (single.sum() + points.sum()) == pytest.approx(expected, rel=0.06)
        r, c = np.unravel_index(np.argmax(points), points.shape)
        if 5 <= r < 123 and 5 <= c < 123:
            fit = _fit_spot(points[r - 5 : r + 6, c - 5 : c + 6])
            if fit is not None:
                widths.append(fit[0])
    assert len(widths) >= 3  # round spots of the given PSF (clusters are not)
    assert float(np.median(widths)) == pytest.approx(1.4, rel=0.1)
    with pytest.raises(ValueError, match="needs the measured psf"):
        CrappifiedDataset(base, noise, fraction=1.0, point_emitters=0.5)


def test_textured_objects_add_extended_structure_to_both_frames(
    light_and_dark: tuple[Path, Path],
) -> None:
    """Textured objects are added to the target crop (extended: many pixels, not
    spots), and the low-dose crop is simulated from the sum at the fitted camera
    relation; without the PSF they are refused."""
    from pairscope.train._psf_fit import PsfModel

    noise, base = _adu_crops(light_and_dark[0])
    off = noise.reference_offset_adu
    single = base.sample(0)[1].astype(np.float64) - off
    psf = PsfModel(sigma_px=1.4, n_spots=50, peak_adu=3000.0)
    data = CrappifiedDataset(base, noise, fraction=1.0, textured_objects=1.0, psf=psf)
    expected = noise.dose_ratio * noise.reference_gain_e_per_adu / noise.gain_e_per_adu
    torch.manual_seed(3)
    for _ in range(6):
        x, y = data[0]
        objects = y.numpy()[0].astype(np.float64) - off - single
        assert objects.min() > -1e-3 and objects.max() > 300
        assert (objects > 0.1 * objects.max()).mean() > 0.05
        low = float((x.numpy().astype(np.float64) - noise.offset_adu).sum())
        assert low / (single.sum() + objects.sum()) == pytest.approx(expected, rel=0.06)
    with pytest.raises(ValueError, match="textured_objects needs the measured psf"):
        CrappifiedDataset(base, noise, fraction=1.0, textured_objects=0.5)
