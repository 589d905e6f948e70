"""A third forward model, built to share as little as possible with the first
held-out model (``heldout_forward_model.py``) and with ``pairscope.sim`` (issue 23,
item 4).  It is never used to choose a lever: it is rendered and scored, once.

What differs from both:

- **Optics**: a *vectorial* PSF (Richards-Wolf, freely rotating dipoles, aplanatic
  apodisation) of an oil objective (NA 1.4, n 1.518) imaging 1.5 um deep into an
  aqueous specimen (n 1.36): the refractive-index mismatch (the Gibson-Lanni
  situation) gives depth-induced spherical aberration and cuts the effective NA to
  1.36 (supercritical angles are evanescent; the peak is 0.65-0.9 of the
  unaberrated one); a random defocus per frame (sigma 100 nm).  GFP emission,
  0.52 um.  The first model is a scalar Zernike pupil, the simulator an analytic
  in-focus OTF.
- **Sampling**: 65 nm reference pixels (3.6 per Rayleigh distance; the first model
  has 2.8).
- **Cameras**: two sCMOS cameras with pixel-wise maps of offset (with column
  pattern), gain (1.5 % spread) and read noise (log-normal, with a tail of noisy
  pixels).  The low-dose camera has *native* 2x larger pixels (one read per pixel,
  no binning) and sits 1/4 reference pixel off the reference grid; a beam splitter
  sends it 15 % of the light.  Users give the cameras' mean gain and offset only,
  as a datasheet does.
- **Background**: out-of-focus haze (a large-scale field blurred by microns) plus
  autofluorescence, not a gradient.
- **Specimens** the others do not make:

  - ``bundles``: actin-like stress fibres (straight bundles of 3-12 filaments, 20-60 nm
    apart, splayed at their ends) over a branched cortical mesh;
  - ``vesicles``: hollow projected shells (40-450 nm radius, limb-brightened),
    some clustered;
  - ``meshes``: a dense ER-like network (edges of a Delaunay triangulation, thinned,
    slightly bent) with brighter junctions and a few flat sheets;
  - ``speckles``: speckle microscopy: single fluorophores scattered sparsely along
    filaments over a diffuse pool of free monomer;
  - ``beads``: bead pairs at known separations (in this optics' Rayleigh distances),
    each with a matched single rod (1.8x the separation long, as bright as the pair).

Training uses ``bundles`` and ``vesicles`` at one light level; the held-out sets
are the other families, and two of them at other light levels.  ``peak_photons``
sets the brightest low-dose pixel's expected photons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import Delaunay

FAMILIES = ("bundles", "vesicles", "meshes", "speckles", "beads")
BEAD_SEPARATIONS_RAYLEIGH = (1.0, 1.2, 1.4, 1.6, 2.0, 2.5)
SPLIT_LOW, SPLIT_REF = 0.15, 0.85
TRAIN_FAMILIES = ("bundles", "vesicles")
TRAIN_PEAK_PHOTONS = 120.0
#: (family, low-dose peak photons) per held-out set
HELD_OUT = (
    ("meshes", 200),
    ("speckles", 200),
    ("beads", 200),
    ("meshes", 50),
    ("vesicles", 50),
)
#: seeds: training frames, sets for choosing levers (dev, unused here), test sets,
#: and a second draw of the test sets (retest: fresh seeds, once a test split has
#: been reported several times)
SEED_BASE = {"train": 500_000, "dev": 510_000, "test": 520_000, "retest": 530_000}
#: the low-dose camera's offset from the reference grid, fine pixels (x, y)
CAMERA_SHIFT_FINE = (1, -1)


@dataclass(frozen=True)
class SCMOS:
    """An sCMOS camera with pixel-wise offset, gain and read-noise maps.

    ``gain_e_per_adu`` and ``offset_adu`` are the means a datasheet gives; the maps
    are fixed per camera (``map_seed``)."""

    gain_e_per_adu: float
    offset_adu: float
    read_noise_median_e: float
    quantum_efficiency: float
    map_seed: int
    gain_spread: float = 0.015
    offset_spread_adu: float = 1.5
    column_spread_adu: float = 0.6
    noisy_pixel_fraction: float = 0.01

    def maps(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offset ADU, gain e-/ADU, read noise e-) per pixel."""
        rng = np.random.default_rng(self.map_seed)
        offset = (
            self.offset_adu
            + self.offset_spread_adu * rng.standard_normal(shape)
            + self.column_spread_adu * rng.standard_normal(shape[1])[None, :]
        )
        gain = self.gain_e_per_adu * (1 + self.gain_spread * rng.standard_normal(shape))
        read = self.read_noise_median_e * rng.lognormal(0, 0.25, shape)
        noisy = rng.random(shape) < self.noisy_pixel_fraction
        read[noisy] *= rng.uniform(3, 8, int(noisy.sum()))
        return offset, gain, read

    def read(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        offset, gain, read = self.maps(photons.shape)
        e = rng.poisson(np.maximum(photons * self.quantum_efficiency, 0)).astype(float)
        e += rng.standard_normal(e.shape) * read
        return np.clip(np.rint(e / gain + offset), 0, 65535).astype(np.uint16)

    def expected_above_offset(self, photons: np.ndarray) -> np.ndarray:
        """Flat-field-corrected expected ADU (the mean gain), the scoring truth."""
        return photons * self.quantum_efficiency / self.gain_e_per_adu


LOW_CAMERA = SCMOS(
    gain_e_per_adu=1.9,
    offset_adu=100.0,
    read_noise_median_e=1.6,
    quantum_efficiency=0.9,
    map_seed=7001,
)
REF_CAMERA = SCMOS(
    gain_e_per_adu=0.46,
    offset_adu=200.0,
    read_noise_median_e=1.4,
    quantum_efficiency=0.72,
    map_seed=7002,
)


@dataclass(frozen=True)
class VectorialOptics:
    """Richards-Wolf PSF of an oil objective focused ``depth_um`` into water-like
    specimen: isotropic (freely rotating) dipoles, aplanatic apodisation, the
    index mismatch's aberration with its defocus part removed."""

    wavelength_um: float = 0.52
    na: float = 1.4
    n_immersion: float = 1.518
    n_specimen: float = 1.36
    depth_um: float = 1.5

    @property
    def effective_na(self) -> float:
        return min(self.na, self.n_specimen)

    @property
    def rayleigh_um(self) -> float:
        return 0.61 * self.wavelength_um / self.effective_na

    def psf(self, n: int, fine_px_um: float, defocus_um: float) -> np.ndarray:
        """The intensity PSF on an n x n grid (sums to 1, centred at [0, 0])."""
        f = np.fft.fftfreq(n, d=fine_px_um)
        fy, fx = np.meshgrid(f, f, indexing="ij")
        sin_i = np.hypot(fx, fy) * self.wavelength_um / self.n_immersion
        sin_s = sin_i * self.n_immersion / self.n_specimen
        inside = (sin_i <= self.na / self.n_immersion) & (sin_s < 1)
        sin_i, sin_s = np.where(inside, sin_i, 0), np.where(inside, sin_s, 0)
        cos_i, cos_s = np.sqrt(1 - sin_i**2), np.sqrt(1 - sin_s**2)
        k0 = 2 * np.pi / self.wavelength_um
        mismatch = (
            k0 * self.depth_um * (self.n_specimen * cos_s - self.n_immersion * cos_i)
        )
        focus = k0 * self.n_immersion * cos_i
        # remove the defocus part (the best focus is chosen), keep the aberration
        w = inside.astype(float)
        a = np.sum(
            w * (mismatch - mismatch[inside].mean()) * (focus - focus[inside].mean())
        )
        a /= np.sum(w * (focus - focus[inside].mean()) ** 2)
        phase = mismatch - a * focus + defocus_um * focus
        phi = np.arctan2(fy, fx)
        c, s = np.cos(phi), np.sin(phi)
        apod = np.where(inside, 1 / np.sqrt(np.maximum(cos_i, 1e-6)), 0) * np.exp(
            1j * phase
        )
        # pupil fields (x, y) of dipoles along x, y, z (emission angle in the specimen)
        fields = (
            (cos_s * c**2 + s**2, (cos_s - 1) * s * c),
            ((cos_s - 1) * s * c, cos_s * s**2 + c**2),
            (-sin_s * c, -sin_s * s),
        )
        psf = np.zeros((n, n))
        for ex, ey in fields:
            psf += (
                np.abs(np.fft.ifft2(apod * ex)) ** 2
                + np.abs(np.fft.ifft2(apod * ey)) ** 2
            )
        return psf / psf.sum()


@dataclass
class Frame:
    lowdose: np.ndarray
    reference: np.ndarray
    truth: np.ndarray  # expected reference ADU above offset, flat-field, noise-free
    pairs: list[tuple[tuple[float, float], tuple[float, float], float]] = field(
        default_factory=list
    )  # ((x1, y1), (x2, y2), separation in Rayleigh), reference pixels
    rods: list[tuple[tuple[float, float], tuple[float, float], float]] = field(
        default_factory=list
    )  # ((x1, y1), (x2, y2) ends, the matched pair's separation), reference pixels
    #: the truth as the low-dose camera's frame shows it (its offset from the
    #: reference grid), at the reference pixel: what registered pairs restore to
    truth_lowdose_frame: np.ndarray | None = None


@dataclass(frozen=True)
class ForwardModel:
    """Specimen -> vectorial optics -> two sCMOS cameras.  ``size``: reference side."""

    size: int = 256
    ref_pixel_um: float = 0.065
    oversample: int = 4
    binning: int = 2  # the low-dose camera's pixel pitch / the reference camera's
    optics: VectorialOptics = VectorialOptics()
    defocus_spread_um: float = 0.1

    @property
    def fine_px(self) -> float:
        return self.ref_pixel_um / self.oversample

    @property
    def camera_shift_ref_px(self) -> tuple[float, float]:
        """(x, y): the low-dose camera's frame shows what the reference camera's
        shows at p at p + this (reference pixels)."""
        return (
            CAMERA_SHIFT_FINE[0] / self.oversample,
            CAMERA_SHIFT_FINE[1] / self.oversample,
        )

    def render(
        self, family: str, seed: int, peak_photons: float = TRAIN_PEAK_PHOTONS
    ) -> Frame:
        rng = np.random.default_rng(seed)
        n, o, b = self.size * self.oversample, self.oversample, self.binning
        obj, pairs, rods = _SPECIMENS[family](self, rng, n)
        defocus = rng.normal(0, self.defocus_spread_um)
        otf = np.fft.rfft2(self.optics.psf(n, self.fine_px, defocus))
        img = np.maximum(np.fft.irfft2(np.fft.rfft2(obj) * otf, s=obj.shape), 0)
        img += _haze(rng, n, img.mean())
        ref = img.reshape(self.size, o, self.size, o).sum((1, 3))
        shifted = np.roll(img, CAMERA_SHIFT_FINE[::-1], axis=(0, 1))
        m = self.size // b
        low = shifted.reshape(m, o * b, m, o * b).sum((1, 3))
        scale = peak_photons / (SPLIT_LOW * np.percentile(low, 99.95))
        ref_photons = SPLIT_REF * scale * ref
        lowdose = LOW_CAMERA.read(SPLIT_LOW * scale * low, rng)
        reference = REF_CAMERA.read(ref_photons, rng)
        truth = REF_CAMERA.expected_above_offset(ref_photons).astype(np.float32)
        in_low_frame = shifted.reshape(self.size, o, self.size, o).sum((1, 3))
        truth_low = REF_CAMERA.expected_above_offset(SPLIT_REF * scale * in_low_frame)
        return Frame(
            lowdose, reference, truth, pairs, rods, truth_low.astype(np.float32)
        )


def held_out_seeds(split: str, set_index: int, frames: int) -> list[int]:
    """Seeds of the frames of held-out set ``HELD_OUT[set_index]`` of a split."""
    return [SEED_BASE[split] + 100 * set_index + i for i in range(frames)]


def _haze(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """Out-of-focus light (a coarse random field blurred by ~1.5 um) and a flat
    autofluorescence, together 10-40 % of the in-focus image's mean."""
    coarse = gaussian_filter(rng.random((n // 16, n // 16)), 6, mode="wrap")
    coarse = np.kron(coarse - coarse.min(), np.ones((16, 16)))
    coarse = gaussian_filter(coarse, 16, mode="wrap")
    coarse /= coarse.mean()
    return level * (rng.uniform(0.05, 0.25) * coarse + rng.uniform(0.05, 0.15))


def _points(n: int, xy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Point emitters on the fine grid, shared bilinearly (xy as (x, y))."""
    img = np.zeros((n, n))
    keep = (xy >= 0).all(1) & (xy < n - 1).all(1)
    (x, y), w = xy[keep].T, w[keep]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dy, dx, share in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(img, (y0 + dy, x0 + dx), w * share)
    return img


def _polyline(
    a: np.ndarray, b: np.ndarray, bend: float, rng: np.random.Generator
) -> np.ndarray:
    """Points every 0.4 fine pixels along a gently bent segment from a to b."""
    length = float(np.hypot(*(b - a)))
    t = np.linspace(0, 1, max(int(length / 0.4), 2))[:, None]
    normal = np.array([-(b - a)[1], (b - a)[0]]) / max(length, 1e-9)
    sag = bend * length * np.sin(np.pi * t) * rng.uniform(-1, 1)
    return a + t * (b - a) + sag * normal


def _bundles(fm: ForwardModel, rng: np.random.Generator, n: int):
    nm = 1e-3 / fm.fine_px  # fine pixels per nm
    parts = []
    for _ in range(rng.integers(3, 11)):  # stress fibres
        theta = rng.uniform(0, np.pi)
        d = np.array([np.cos(theta), np.sin(theta)])
        normal = np.array([-d[1], d[0]])
        centre = rng.uniform(0.1, 0.9, 2) * n
        half = rng.uniform(0.25, 0.7) * n
        bright = rng.lognormal(0, 0.3)
        for _ in range(rng.integers(3, 13)):
            off = rng.normal(0, rng.uniform(20, 60)) * nm
            splay = rng.normal(0, 0.03)
            t = np.arange(-half, half, 0.4)
            along = t * (1 + rng.uniform(-0.2, 0)) + rng.uniform(-0.2, 0.2) * half
            xy = (
                centre
                + along[:, None] * d
                + (off + splay * np.abs(along))[:, None] * normal
            )
            parts.append((xy, np.full(len(xy), bright)))
    for _ in range(rng.integers(60, 240)):  # branched cortical mesh
        a = rng.uniform(0, n, 2)
        theta = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(1, 4)):
            length = rng.uniform(150, 900) * nm
            b = a + length * np.array([np.cos(theta), np.sin(theta)])
            xy = _polyline(a, b, 0.03, rng)
            parts.append((xy, np.full(len(xy), 0.25)))
            a = a + rng.uniform(0.2, 0.9) * (b - a)
            theta += rng.choice([-1, 1]) * np.deg2rad(70)
    xy = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    return _points(n, xy, w), [], []


def _shell(n: int, centre: np.ndarray, radius: float, bright: float) -> np.ndarray:
    """A thin spherical shell projected along z (limb-brightened ring), fine grid."""
    r = int(radius) + 3
    y0, x0 = int(centre[1]) - r, int(centre[0]) - r
    yy, xx = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1]
    rho = np.hypot(xx - centre[0], yy - centre[1])
    thick = max(1.0, 0.08 * radius)
    outer = np.sqrt(np.maximum((radius + thick) ** 2 - rho**2, 0))
    inner = np.sqrt(np.maximum(radius**2 - rho**2, 0))
    patch = (outer - inner) * bright / (radius * thick)
    img = np.zeros((n, n))
    ys, xs = yy % n, xx % n
    np.add.at(img, (ys, xs), patch)
    return img


def _vesicles(fm: ForwardModel, rng: np.random.Generator, n: int):
    nm = 1e-3 / fm.fine_px
    obj = np.zeros((n, n))
    centres = list(rng.uniform(0, n, (int(rng.integers(40, 200)), 2)))
    for c in rng.uniform(0, n, (int(rng.integers(2, 8)), 2)):  # clusters
        centres += list(c + rng.normal(0, 400 * nm, (int(rng.integers(5, 25)), 2)))
    for c in centres:
        radius = np.exp(rng.uniform(np.log(40), np.log(450))) * nm
        obj += _shell(n, c % n, radius, rng.lognormal(0, 0.4) * radius / (100 * nm))
    return obj, [], []


def _meshes(fm: ForwardModel, rng: np.random.Generator, n: int):
    nm = 1e-3 / fm.fine_px
    nodes = rng.uniform(-0.05 * n, 1.05 * n, (int(rng.integers(250, 700)), 2))
    tri = Delaunay(nodes)
    edges = {
        tuple(sorted((s[i], s[(i + 1) % 3]))) for s in tri.simplices for i in range(3)
    }
    edges = [e for e in edges if rng.random() < rng.uniform(0.45, 0.7)]
    parts = []
    for i, j in edges:
        xy = _polyline(nodes[i], nodes[j], 0.08, rng)
        parts.append((xy, np.full(len(xy), 1.0)))
    xy = np.concatenate([p[0] for p in parts])
    w = np.concatenate([p[1] for p in parts])
    obj = gaussian_filter(_points(n, xy, w), rng.uniform(15, 30) * nm)  # tubule width
    obj += gaussian_filter(_points(n, nodes, np.full(len(nodes), 6.0)), 30 * nm)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(rng.integers(0, 4)):  # flat sheets
        c, r = rng.uniform(0, n, 2), rng.uniform(200, 700) * nm
        sheet = np.hypot(xx - c[0], (yy - c[1]) * rng.uniform(0.5, 1.5)) < r
        obj += gaussian_filter(sheet.astype(float), 40 * nm) * 0.15
    return obj, [], []


def _speckles(fm: ForwardModel, rng: np.random.Generator, n: int):
    nm = 1e-3 / fm.fine_px
    xy, w = [], []
    for _ in range(rng.integers(20, 70)):
        a = rng.uniform(0, n, 2)
        theta = rng.uniform(0, 2 * np.pi)
        b = a + rng.uniform(0.2, 0.8) * n * np.array([np.cos(theta), np.sin(theta)])
        line = _polyline(a, b, 0.05, rng)
        # speckles 80-250 nm apart along the filament (its length / spacing)
        k = rng.poisson(len(line) * 0.4 / rng.uniform(80, 250) / nm)
        pick = line[rng.integers(0, len(line), k)]
        xy.append(pick)
        w.append(rng.integers(1, 4, k).astype(float))  # 1-3 fluorophores a speckle
    obj = _points(n, np.concatenate(xy), np.concatenate(w))
    pool = gaussian_filter(rng.random((n, n)), 200 * nm)
    obj += (pool / pool.mean()) * rng.uniform(0.002, 0.01)  # free monomer
    return obj, [], []


def _beads(fm: ForwardModel, rng: np.random.Generator, n: int):
    """A grid of cells, alternately a bead pair and its matched rod (the same
    separation; the total brightness drawn from the same distribution)."""
    o, r_um = fm.oversample, fm.optics.rayleigh_um
    cells = 7
    cell = n / cells
    seps = list(BEAD_SEPARATIONS_RAYLEIGH) * (
        cells * cells // len(BEAD_SEPARATIONS_RAYLEIGH) + 1
    )
    rng.shuffle(seps)
    xy, w, pairs, rods = [], [], [], []

    def ref_px(p: np.ndarray) -> tuple[float, float]:
        q = (p + 0.5) / o - 0.5
        return float(q[0]), float(q[1])

    for k in range(cells * cells):
        i, j = divmod(k, cells)
        sep_r = seps[k // 2]
        sep = sep_r * r_um / fm.fine_px
        c = (
            np.array([(j + 0.5) * cell, (i + 0.5) * cell])
            + rng.uniform(-0.1, 0.1, 2) * cell
        )
        t = rng.uniform(0, np.pi)
        d = np.array([np.cos(t), np.sin(t)])
        bright = rng.lognormal(0, 0.25)
        if k % 2 == 0:
            xy += [c - 0.5 * sep * d, c + 0.5 * sep * d]
            w += [bright, bright]
            pairs.append((ref_px(c - 0.5 * sep * d), ref_px(c + 0.5 * sep * d), sep_r))
        else:
            length = 1.8 * sep
            s = np.arange(-0.5 * length, 0.5 * length + 1e-9, 0.25)
            xy += list(c + s[:, None] * d)
            w += [2 * bright / len(s)] * len(s)
            rods.append(
                (ref_px(c - 0.5 * length * d), ref_px(c + 0.5 * length * d), sep_r)
            )
    obj = _points(n, np.array(xy), np.array(w))
    return obj, pairs, rods


_SPECIMENS = {
    "bundles": _bundles,
    "vesicles": _vesicles,
    "meshes": _meshes,
    "speckles": _speckles,
    "beads": _beads,
}
