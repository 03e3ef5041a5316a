"""Golden values: modelport's binned statistics against scipy on fixed samples, to 1e-9.

The samples (``fixtures/golden_samples.json``) and scipy's answers on them
(``fixtures/golden_expected.json``) were made once by ``fixtures/make_golden.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelport.monitoring.profile import numeric_profile
from modelport.monitoring.stats import (
    benjamini_hochberg,
    chi2_homogeneity,
    js_distance,
    ks_binned,
    psi,
    wasserstein_binned,
)

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = json.loads((FIXTURES / "golden_samples.json").read_text())
EXPECTED = json.loads((FIXTURES / "golden_expected.json").read_text())
TOL = {"rel": 1e-9, "abs": 1e-9}


Binned = tuple[np.ndarray, np.ndarray, tuple[float, ...]]


def _binned(ref_key: str, cur_key: str, bins: int) -> Binned:
    """Reference-profile bins of the reference sample, and both samples counted into them
    (ordered bins only: missing dropped)."""
    ref = np.asarray(SAMPLES[ref_key], float)
    cur = np.asarray(SAMPLES[cur_key], float)
    prof = numeric_profile("x", ref, bins)
    n = prof.n_bins
    r = np.bincount(prof.bin_index(ref), minlength=n)[:-1]
    c = np.bincount(prof.bin_index(cur), minlength=n)[:-1]
    return r, c, prof.centers


def test_psi_matches_the_hand_formula() -> None:
    ref, cur = SAMPLES["counts_ref"], SAMPLES["counts_cur"]
    p = [x / sum(ref) for x in ref]
    q = [x / sum(cur) for x in cur]
    by_hand = sum((b - a) * np.log(b / a) for a, b in zip(p, q, strict=True))
    assert psi(ref, cur) == pytest.approx(by_hand, **TOL)
    assert psi(ref, cur) == pytest.approx(EXPECTED["psi"], **TOL)


def test_psi_floors_empty_bins_at_epsilon() -> None:
    """A bin empty on one side counts with share 1e-4 instead of an infinite log."""
    by_hand = (0.5 - 0.5) * 0 + (0.5 - 1e-4) * np.log(0.5 / 1e-4) + (1e-4 - 0.5) * np.log(
        1e-4 / 0.5)
    assert psi([10, 0, 10], [10, 10, 0]) == pytest.approx(by_hand, **TOL)


def test_jensen_shannon_is_scipys_distance_in_base_2() -> None:
    ref, cur = SAMPLES["counts_ref"], SAMPLES["counts_cur"]
    assert js_distance(ref, cur) == pytest.approx(jensenshannon(ref, cur, base=2), **TOL)
    assert js_distance(ref, cur) == pytest.approx(EXPECTED["js_base2"], **TOL)


def test_jensen_shannon_of_disjoint_distributions_is_one() -> None:
    assert js_distance([5, 0], [0, 7]) == pytest.approx(1.0, **TOL)


def test_chi_square_homogeneity_matches_chi2_contingency() -> None:
    ref, cur = SAMPLES["counts_ref"], SAMPLES["counts_cur"]
    scipy_result = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    ours = chi2_homogeneity(ref, cur)
    assert ours.statistic == pytest.approx(scipy_result.statistic, **TOL)
    assert ours.p_value == pytest.approx(scipy_result.pvalue, **TOL)
    assert ours.dof == scipy_result.dof == EXPECTED["chi2_dof"]
    assert ours.statistic == pytest.approx(EXPECTED["chi2_statistic"], **TOL)
    assert ours.p_value == pytest.approx(EXPECTED["chi2_p"], **TOL)


def test_chi_square_drops_bins_empty_on_both_sides() -> None:
    with_empty = chi2_homogeneity([40, 0, 60, 0], [10, 0, 30, 0])
    without = stats.chi2_contingency([[40, 60], [10, 30]], correction=False)
    assert with_empty.statistic == pytest.approx(without.statistic, **TOL)
    assert with_empty.dof == 1


def test_binned_ks_equals_ks_2samp_when_every_value_has_its_own_bin() -> None:
    r, c, _ = _binned("discrete_ref", "discrete_cur", bins=64)
    raw = stats.ks_2samp(SAMPLES["discrete_ref"], SAMPLES["discrete_cur"], method="asymp")
    ours = ks_binned(r, c)
    assert ours is not None
    assert ours.statistic == pytest.approx(raw.statistic, **TOL)
    assert ours.p_value == pytest.approx(raw.pvalue, **TOL)
    assert ours.statistic == pytest.approx(EXPECTED["ks_statistic"], **TOL)


def test_binned_ks_equals_ks_2samp_on_values_replaced_by_their_bin_center() -> None:
    """With coarse quantile bins the statistic is that of the binned samples, exactly."""
    ref = np.asarray(SAMPLES["continuous_ref"])
    cur = np.asarray(SAMPLES["continuous_cur"])
    prof = numeric_profile("x", ref, 10)
    centers = np.asarray(prof.centers)
    r = np.bincount(prof.bin_index(ref), minlength=prof.n_bins)[:-1]
    c = np.bincount(prof.bin_index(cur), minlength=prof.n_bins)[:-1]
    on_centers = stats.ks_2samp(centers[prof.bin_index(ref)], centers[prof.bin_index(cur)],
                                method="asymp")
    ours = ks_binned(r, c)
    assert ours is not None
    assert ours.statistic == pytest.approx(on_centers.statistic, **TOL)
    assert ours.p_value == pytest.approx(on_centers.pvalue, **TOL)


def test_binned_wasserstein_equals_scipy_when_every_value_has_its_own_bin() -> None:
    r, c, centers = _binned("discrete_ref", "discrete_cur", bins=64)
    raw = stats.wasserstein_distance(SAMPLES["discrete_ref"], SAMPLES["discrete_cur"])
    assert wasserstein_binned(r, c, centers) == pytest.approx(raw, **TOL)
    assert wasserstein_binned(r, c, centers) == pytest.approx(EXPECTED["wasserstein"], **TOL)


def test_binned_wasserstein_equals_scipy_on_values_replaced_by_their_bin_center() -> None:
    ref = np.asarray(SAMPLES["continuous_ref"])
    cur = np.asarray(SAMPLES["continuous_cur"])
    prof = numeric_profile("x", ref, 10)
    centers = np.asarray(prof.centers)
    r = np.bincount(prof.bin_index(ref), minlength=prof.n_bins)[:-1]
    c = np.bincount(prof.bin_index(cur), minlength=prof.n_bins)[:-1]
    scipy_value = stats.wasserstein_distance(centers[prof.bin_index(ref)],
                                             centers[prof.bin_index(cur)])
    assert wasserstein_binned(r, c, prof.centers) == pytest.approx(scipy_value, **TOL)


def test_benjamini_hochberg_matches_false_discovery_control() -> None:
    p = SAMPLES["p_values"]
    ours = benjamini_hochberg(p)
    np.testing.assert_allclose(ours, stats.false_discovery_control(p, method="bh"),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours, EXPECTED["bh"], rtol=1e-9, atol=1e-9)
