"""A second, independent forward model for held-out generalisation tests (issue 10).

Nothing here comes from ``pairscope.sim``: the PSF is computed from a pupil with
spherical aberration and a per-frame defocus (the simulator uses an analytic
in-focus OTF), the cameras are sCMOS with a fixed-pattern offset map, another gain
and digital (read-noise-adding) 2x2 binning, the background is a smooth gradient,
and the specimen families are ones the simulator does not make:

- ``filaments``: long, thin, crossing semiflexible polymers (actin-/microtubule-like);
- ``puncta``: dense puncta of varied size and brightness (clathrin-/vesicle-like);
- ``membranes``: cell outlines (a Voronoi tessellation) with bright vesicles;
- ``nuclei``: large textured nuclei with nucleoli and a thin envelope;
- ``beads``: pairs of point emitters at known separations in Rayleigh distances
  (the two-point test), each pair at its own angle, on a sparse background.

Every frame is a fresh, independent specimen (a snapshot).  The low-dose camera sees
10 % of the light through a 90:10 splitter on 2x2-binned pixels; the reference
camera sees 90 % on full-resolution pixels.  ``peak_photons`` sets the brightest
low-dose (binned) pixel's expected photons.  ``render`` returns the two frames in
ADU, the noise-free reference (expected ADU above the offset) and, for ``beads``,
the pairs in reference pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

FAMILIES = ("filaments", "puncta", "membranes", "nuclei", "beads")
BEAD_SEPARATIONS_RAYLEIGH = (0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.6, 2.0)
SPLIT_LOW, SPLIT_REF = 0.1, 0.9
TRAIN_FAMILIES = ("filaments", "puncta")
#: (family, low-dose peak photons) per held-out set
HELD_OUT = (
    ("membranes", 300),
    ("nuclei", 300),
    ("beads", 300),
    ("filaments", 100),
    ("beads", 100),
)
#: seeds: training frames, sets for choosing levers (dev), sets reported (test),
#: and a second draw of the test sets (retest: fresh seeds, once a test split has
#: been reported several times)
SEED_BASE = {"train": 0, "dev": 10_000, "test": 20_000, "retest": 30_000}


@dataclass(frozen=True)
class Camera:
    """sCMOS photon transfer: ADU = offset_map + (QE·photons + read noise) / gain."""

    gain_e_per_adu: float
    offset_adu: float
    read_noise_e: float
    quantum_efficiency: float
    offset_spread_adu: float = 2.0

    def offset_map(self, shape: tuple[int, int], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return self.offset_adu + self.offset_spread_adu * rng.standard_normal(shape)

    def read(
        self, photons: np.ndarray, rng: np.random.Generator, seed: int, binning: int = 1
    ) -> np.ndarray:
        """One frame; digital binning sums ``binning²`` independently read pixels."""
        e = rng.poisson(np.maximum(photons * self.quantum_efficiency, 0)).astype(float)
        e += rng.standard_normal(e.shape) * self.read_noise_e
        if binning > 1:
            h, w = e.shape[0] // binning, e.shape[1] // binning
            e = e[: h * binning, : w * binning].reshape(h, binning, w, binning)
            e = e.sum(axis=(1, 3))
        adu = e / self.gain_e_per_adu + self.offset_map(e.shape, seed)
        return np.clip(np.rint(adu), 0, 65535).astype(np.uint16)

    def expected_above_offset(self, photons: np.ndarray) -> np.ndarray:
        return photons * self.quantum_efficiency / self.gain_e_per_adu


LOW_CAMERA = Camera(
    gain_e_per_adu=1.1,
    offset_adu=150.0,
    read_noise_e=1.2,
    quantum_efficiency=0.72,
    offset_spread_adu=1.5,
)
REF_CAMERA = Camera(
    gain_e_per_adu=2.2,
    offset_adu=300.0,
    read_noise_e=1.8,
    quantum_efficiency=0.82,
    offset_spread_adu=2.5,
)


@dataclass(frozen=True)
class Optics:
    """A scalar pupil: NA, wavelength, spherical aberration and defocus (waves)."""

    wavelength_um: float = 0.60
    na: float = 1.3
    spherical_waves: float = 0.1

    @property
    def rayleigh_um(self) -> float:
        return 0.61 * self.wavelength_um / self.na

    def psf_otf(self, n: int, fine_px_um: float, defocus_waves: float) -> np.ndarray:
        """The OTF (rfft2 layout) of the pupil's intensity PSF on an n x n grid."""
        f = np.fft.fftfreq(n, d=fine_px_um)
        fy, fx = np.meshgrid(f, f, indexing="ij")
        rho = np.hypot(fx, fy) / (self.na / self.wavelength_um)
        inside = rho <= 1
        z20 = 2 * rho**2 - 1
        z40 = 6 * rho**4 - 6 * rho**2 + 1
        phase = 2 * np.pi * (defocus_waves * z20 + self.spherical_waves * z40)
        pupil = np.where(inside, np.exp(1j * phase), 0)
        psf = np.abs(np.fft.ifft2(pupil)) ** 2
        psf /= psf.sum()
        return np.fft.rfft2(psf)


@dataclass
class Frame:
    lowdose: np.ndarray
    reference: np.ndarray
    truth: np.ndarray  # expected reference ADU above the offset, noise-free
    pairs: list[tuple[tuple[float, float], tuple[float, float], float]] = field(
        default_factory=list
    )  # ((x1, y1), (x2, y2), separation in Rayleigh), reference pixels

    @property
    def truth_lowdose_frame(self) -> np.ndarray:
        """The truth in the low-dose camera's frame: the same (the low-dose camera
        bins the reference camera's pixels)."""
        return self.truth


@dataclass(frozen=True)
class ForwardModel:
    """Specimen -> optics -> two cameras.  ``size``: reference frame side, pixels."""

    size: int = 256
    ref_pixel_um: float = 0.1
    oversample: int = 4
    binning: int = 2
    optics: Optics = Optics()
    defocus_spread_waves: float = 0.05

    @property
    def fine_px(self) -> float:
        return self.ref_pixel_um / self.oversample

    #: (x, y) reference pixels between the cameras' frames: none
    camera_shift_ref_px = (0.0, 0.0)

    def scene(self, family: str, seed: int, peak_photons: float = 300.0) -> Scene:
        """The noise-free state of one frame, before the cameras read it."""
        rng = np.random.default_rng(seed)
        n = self.size * self.oversample
        obj, pairs = _SPECIMENS[family](self, rng, n)
        defocus = rng.normal(0, self.defocus_spread_waves)
        img = np.fft.irfft2(
            np.fft.rfft2(obj) * self.optics.psf_otf(n, self.fine_px, defocus),
            s=obj.shape,
        )
        o = self.oversample
        ref_grid = np.maximum(img, 0).reshape(self.size, o, self.size, o).sum((1, 3))
        b = self.binning
        low_grid = ref_grid.reshape(self.size // b, b, self.size // b, b).sum((1, 3))
        # brightest binned pixel: peak_photons through the 10 % arm
        scale = peak_photons / (SPLIT_LOW * np.percentile(low_grid, 99.95))
        bg = _background(rng, self.size) * peak_photons * rng.uniform(0.02, 0.08)
        return Scene(obj, pairs, defocus, ref_grid, scale, bg, rng)

    def render(self, family: str, seed: int, peak_photons: float = 300.0) -> Frame:
        sc = self.scene(family, seed, peak_photons)
        b = self.binning
        photons = sc.ref_grid * sc.scale + sc.bg / SPLIT_LOW / b**2
        ref_photons = SPLIT_REF * photons
        low = LOW_CAMERA.read(SPLIT_LOW * photons, sc.rng, seed=11, binning=b)
        ref = REF_CAMERA.read(ref_photons, sc.rng, seed=12)
        truth = REF_CAMERA.expected_above_offset(ref_photons).astype(np.float32)
        return Frame(low, ref, truth, sc.pairs)


@dataclass
class Scene:
    """A frame before the cameras: the fine-grid object (``obj``), the bead
    ``pairs``, the ``defocus`` (waves), the object through the PSF on the reference
    grid (``ref_grid``), its ``scale`` to photons, the background ``bg`` (photons
    per binned low-dose pixel) and the generator the camera reads continue."""

    obj: np.ndarray
    pairs: list
    defocus: float
    ref_grid: np.ndarray
    scale: float
    bg: np.ndarray
    rng: np.random.Generator


def held_out_seeds(split: str, set_index: int, frames: int) -> list[int]:
    """Seeds of the frames of held-out set ``HELD_OUT[set_index]`` of a split."""
    return [SEED_BASE[split] + 100 * set_index + i for i in range(frames)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    a, b = rng.uniform(-0.5, 0.5, 2)
    return 1.0 + a * (x - 0.5) + b * (y - 0.5)


def _splat(n: int, xy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Point weights into an n x n grid (bilinear), xy in fine pixels (x, y)."""
    img = np.zeros((n, n))
    x, y = xy[:, 0], xy[:, 1]
    keep = (x >= 0) & (y >= 0) & (x < n - 1) & (y < n - 1)
    x, y, w = x[keep], y[keep], w[keep]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dy, dx, ww in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(img, (y0 + dy, x0 + dx), w * ww)
    return img


def _curve(
    rng: np.random.Generator, n: int, length: float, step: float, persistence: float
) -> np.ndarray:
    """A semiflexible chain (fine pixels) starting anywhere in the field."""
    k = int(length / step)
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(
        rng.normal(0, np.sqrt(step / persistence), k)
    )
    start = rng.uniform(0, n, 2)
    steps = step * np.stack([np.cos(angle), np.sin(angle)], 1)
    return start + np.cumsum(steps, 0)


def _filaments(fm: ForwardModel, rng: np.random.Generator, n: int):
    obj = np.zeros((n, n))
    for _ in range(rng.integers(15, 60)):
        xy = _curve(rng, n, rng.uniform(0.3, 1.2) * n, 0.5, rng.uniform(0.2, 2) * n)
        obj += _splat(n, xy, np.full(len(xy), rng.lognormal(0, 0.4)))
    return gaussian_filter(obj, 0.3), []


def _puncta(fm: ForwardModel, rng: np.random.Generator, n: int):
    k = int(rng.uniform(150, 900))
    xy = rng.uniform(0, n, (k, 2))
    obj = np.zeros((n, n))
    for sigma in (0.6, 1.5, 3.0):  # 15, 40, 75 nm blobs
        part = rng.random(k) < 1 / 3
        obj += gaussian_filter(
            _splat(n, xy[part], rng.lognormal(0, 0.6, part.sum()) * sigma**2), sigma
        )
    return obj, []


def _membranes(fm: ForwardModel, rng: np.random.Generator, n: int):
    seeds = rng.uniform(-0.2 * n, 1.2 * n, (int(rng.uniform(6, 25)), 2))
    yy, xx = np.mgrid[0:n, 0:n]
    d, _ = cKDTree(seeds).query(np.stack([xx.ravel(), yy.ravel()], 1), k=2)
    edge = (d[:, 1] - d[:, 0]).reshape(n, n)
    width = rng.uniform(1.0, 3.0)  # fine pixels: 25-75 nm membranes
    obj = np.exp(-0.5 * (edge / width) ** 2) * rng.uniform(0.6, 1.0)
    ves = rng.uniform(0, n, (int(rng.uniform(20, 120)), 2))
    obj += gaussian_filter(_splat(n, ves, rng.lognormal(1.5, 0.5, len(ves))), 2.0)
    return obj, []


def _nuclei(fm: ForwardModel, rng: np.random.Generator, n: int):
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    obj = np.zeros((n, n))
    texture = gaussian_filter(rng.standard_normal((n, n)), 6)
    texture = 1 + 2.5 * texture / texture.std()
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0.2, 0.8, 2) * n
        a, b = rng.uniform(0.12, 0.3, 2) * n
        t = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
        v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
        r = np.hypot(u, v)
        obj += (r < 1) * np.clip(texture, 0, None) * 0.3
        obj += np.exp(-0.5 * ((r - 1) * min(a, b) / 1.5) ** 2)  # envelope
        for _ in range(rng.integers(1, 4)):  # nucleoli
            k = rng.uniform(-0.5, 0.5, 2)
            px = cx + k[0] * a * np.cos(t) - k[1] * b * np.sin(t)
            py = cy + k[0] * a * np.sin(t) + k[1] * b * np.cos(t)
            obj += 1.5 * np.exp(
                -((xx - px) ** 2 + (yy - py) ** 2) / (2 * rng.uniform(6, 14) ** 2)
            )
    return obj, []


def _beads(fm: ForwardModel, rng: np.random.Generator, n: int):
    """A grid of cells, one equal-brightness pair per cell, random angles."""
    o, r_um = fm.oversample, fm.optics.rayleigh_um
    cells = 6
    cell = n / cells
    xy, w, pairs = [], [], []
    seps = list(BEAD_SEPARATIONS_RAYLEIGH) * (
        cells * cells // len(BEAD_SEPARATIONS_RAYLEIGH) + 1
    )
    rng.shuffle(seps)
    for i in range(cells):
        for j in range(cells):
            sep_r = seps[i * cells + j]
            sep = sep_r * r_um / fm.fine_px
            c = (
                np.array([(j + 0.5) * cell, (i + 0.5) * cell])
                + rng.uniform(-0.15, 0.15, 2) * cell
            )
            t = rng.uniform(0, np.pi)
            d = 0.5 * sep * np.array([np.cos(t), np.sin(t)])
            bright = rng.lognormal(0, 0.3)
            xy += [c - d, c + d]
            w += [bright, bright]
            # fine pixel (x, y) -> reference pixel centre coordinates
            p1, p2 = ((c - d + 0.5) / o - 0.5), ((c + d + 0.5) / o - 0.5)
            pairs.append(
                ((float(p1[0]), float(p1[1])), (float(p2[0]), float(p2[1])), sep_r)
            )
    obj = _splat(n, np.array(xy), np.array(w))
    # a faint, sparse haze of single puncta so the field is not empty
    haze = rng.uniform(0, n, (40, 2))
    obj += _splat(n, haze, rng.lognormal(-1.5, 0.5, 40))
    return obj, pairs


_SPECIMENS = {
    "filaments": _filaments,
    "puncta": _puncta,
    "membranes": _membranes,
    "nuclei": _nuclei,
    "beads": _beads,
}
