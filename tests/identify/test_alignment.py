"""``spectra.alignment``: the frequency-axis scale moves lines where it says, the smoothing keeps the area
and widens lines, and tolerant predict-then-match scoring (``matching.match_scores`` with scales and
smoothing) finds a spectrum whose frequencies are scaled, which the exact comparison does not."""

import numpy as np
import pytest

from schnetpack_molspectra.matching import TOLERANT, match_scores
from schnetpack_molspectra.spectra.alignment import scale_axis, scale_grid, smooth
from schnetpack_molspectra.spectra.broadening import broaden
from schnetpack_molspectra.spectra.grids import GRIDS


def spectrum(frequencies, intensities, width=15.0, modality="ir"):
    return broaden(np.asarray(frequencies, float), np.asarray(intensities, float), GRIDS[modality], width)


def peak(values, modality="ir"):
    return GRIDS[modality].values()[np.argmax(values[0])]


def test_scale_axis_moves_a_line_from_scale_times_nu_to_nu():
    x = spectrum([0.97 * 3000.0, 0.97 * 1500.0], [1.0, 0.5])
    back = scale_axis(x, "ir", 0.97)
    assert peak(x) == pytest.approx(2910.0, abs=1) and peak(back) == pytest.approx(3000.0, abs=1)
    assert back.shape == x.shape and back.dtype == np.float32
    # beyond the grid: nothing is invented (a scale > 1 samples past 4000 cm^-1 at the top)
    assert (scale_axis(np.ones_like(x), "ir", 1.05)[0, GRIDS["ir"].values() > 4000 / 1.05 + 1] == 0).all()
    uv = np.random.default_rng(0).random((2, GRIDS["uv"].n_points)).astype(np.float32)
    assert np.array_equal(scale_axis(uv, "uv", 0.97), uv)  # eV axis: not a vibrational scale


def test_smooth_keeps_the_area_and_widens_lines():
    x = spectrum([2000.0], [1.0], width=4.0)
    wide = smooth(x, "ir", 30.0)
    assert wide.sum() == pytest.approx(x.sum(), rel=1e-3)
    assert wide.max() < 0.5 * x.max() and peak(wide) == pytest.approx(2000.0, abs=1)
    assert np.array_equal(smooth(x, "ir", 0.0), x.astype(np.float32))


def test_scale_grid():
    assert scale_grid(0.95, 1.05, 0.005)[0] == 0.95 and scale_grid(0.95, 1.05, 0.005)[-1] == 1.05
    assert len(scale_grid(0.95, 1.05, 0.005)) == 21 and 1.0 in scale_grid(0.951, 1.05, 0.01)
    assert scale_grid(1.0, 1.0, 0.01) == [1.0]
    with pytest.raises(ValueError, match="low <= high"):
        scale_grid(1.05, 0.95, 0.01)


def test_tolerant_matching_finds_the_candidate_whose_frequencies_were_scaled():
    rng = np.random.default_rng(1)
    library = {"ir": [], "raman": []}
    for _ in range(40):  # candidates: 12 random lines each
        f, a, b = rng.uniform(600, 3500, 12), rng.random(12), rng.random(12)
        library["ir"].append(spectrum(f, a)[0])
        library["raman"].append(spectrum(f, b, 12.0, "raman")[0])
        if _ == 7:
            truth = (f, a, b)
    library = {m: np.stack(v).astype(np.float32) for m, v in library.items()}
    f, a, b = truth  # the query: candidate 7 at another level of theory, lines x0.97 and wider
    query = {"ir": spectrum(0.97 * f, a, 22.0), "raman": spectrum(0.97 * f, b, 18.0, "raman")}
    exact = match_scores(query, library, ["ir", "raman"])
    tolerant = match_scores(query, library, ["ir", "raman"], **TOLERANT)
    assert exact.shape == tolerant.shape == (1, 40)
    assert tolerant.argmax() == 7 and tolerant[0, 7] > 0.9
    assert (exact[0] > exact[0, 7]).sum() > 0  # the exact comparison ranks it below another
    # the tolerant score is the best over the scales of the exact score of the scaled, smoothed query
    one = match_scores({m: scale_axis(q, m, 0.97) for m, q in query.items()}, library, ["ir", "raman"], (1.0,), 30.0)
    assert tolerant[0, 7] >= one[0, 7] - 1e-6


def test_smoothed_scores_on_every_few_grid_points_are_the_full_grids():
    """match_scores takes smoothed spectra on every ``smoothed_stride``-th point: the cosines of the full grid."""
    from schnetpack_molspectra.matching import spectra_matrix
    from schnetpack_molspectra.spectra.alignment import smoothed_stride

    rng = np.random.default_rng(2)
    lines = [(rng.uniform(600, 3500, 10), rng.random(10)) for _ in range(12)]
    spectra = {"ir": np.concatenate([spectrum(f, a, 8.0) for f, a in lines])}
    assert smoothed_stride("ir", 50.0) == 4 and smoothed_stride("ir", 0.0) == 1
    fast = match_scores({"ir": spectra["ir"][:3]}, spectra, ["ir"], (1.0,), 50.0)
    full = spectra_matrix({"ir": smooth(spectra["ir"], "ir", 50.0)}, ["ir"])
    np.testing.assert_allclose(fast, full[:3] @ full.T, atol=2e-3)


def test_regions_take_their_own_scale():
    """``splits``: each frequency region takes its best scale. A query whose X-H stretches are scaled otherwise
    than its fingerprint lines (anharmonicity) is matched by its candidate at full cosine only with regions of their
    own; with one scale for every region the score is the whole spectrum's cosine."""
    rng = np.random.default_rng(3)
    library = {"ir": [], "raman": []}
    lines = []
    for _ in range(30):  # candidates: 8 fingerprint lines and 3 stretches each
        f = np.concatenate([rng.uniform(600, 1800, 8), rng.uniform(2850, 3600, 3)])
        a, b = rng.random(11), rng.random(11)
        lines.append((f, a, b))
        library["ir"].append(spectrum(f, a)[0])
        library["raman"].append(spectrum(f, b, 12.0, "raman")[0])
    library = {m: np.stack(v).astype(np.float32) for m, v in library.items()}
    f, a, b = lines[4]
    moved = np.where(f > 2000, 0.96 * f, 1.01 * f)  # the stretches x0.96, the fingerprint x1.01
    query = {"ir": spectrum(moved, a), "raman": spectrum(moved, b, 12.0, "raman")}
    tolerant = dict(TOLERANT, splits=())
    whole = match_scores(query, library, ["ir", "raman"], **tolerant)
    regions = match_scores(query, library, ["ir", "raman"], **dict(tolerant, splits=(2000.0,)))
    assert regions.argmax() == 4 and regions[0, 4] > 0.97 > whole[0, 4] + 0.05
    # one scale for all: the regions' shares add up to the mean cosine of the whole spectra (UV, on an eV axis no
    # scale moves, in the first region)
    one = dict(scales=(1.0,), smoothing=30.0)
    uv = np.random.default_rng(4).random((30, GRIDS["uv"].n_points)).astype(np.float32)
    query, library = dict(query, uv=uv[[4]] + 0.1), dict(library, uv=uv)
    for used in (["ir", "raman"], ["uv", "ir", "raman"]):
        np.testing.assert_allclose(
            match_scores(query, library, used, **one, splits=(1500.0, 2500.0)),
            match_scores(query, library, used, **one),
            atol=1e-5,
        )


def test_smoothing_in_wavenumbers_leaves_uv_alone():
    """The smoothing is a width in cm^-1 for the vibrational spectra: UV (an eV axis) is compared as it is, so a UV
    query scores against a library the same with and without it, and still tells its molecule from the others."""
    rng = np.random.default_rng(5)
    uv = rng.random((20, GRIDS["uv"].n_points)).astype(np.float32) ** 8
    query = {"uv": uv[[3]]}
    plain = match_scores(query, {"uv": uv}, ["uv"])
    np.testing.assert_allclose(match_scores(query, {"uv": uv}, ["uv"], **TOLERANT), plain, atol=1e-6)
    assert plain.argmax() == 3 and np.sort(plain[0])[-2] < 0.99
