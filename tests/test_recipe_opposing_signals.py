"""opposing-signals recipe: claim logic on hand-made summaries (the smoke and broken runs are
in tests/test_conformance.py)."""

from weightlab.recipes.probes.opposing_signals import OpposingSignals


def _arm(eta, curve, corrs, diverged=(), acc=50.0):
    return {
        "eta": eta,
        "threshold": 2 / eta,
        "sharpness": [{"step": 100 * i, "mean": v, "std": 0.1} for i, v in enumerate(curve)],
        "between_corr": list(corrs),
        "between_corr_mean": sum(corrs) / len(corrs) if corrs else None,
        "within_corr_mean": 0.8,
        "test_acc": {"mean": acc, "std": 1.0},
        "diverged": list(diverged),
    }


def _verdicts(*arms):
    return [c.held for c in OpposingSignals.check_claims({"arms": list(arms), "chance_pct": 11.0})]


def test_edge_of_stability_and_opposing_groups_held():
    eos = [1.5, 2.5, 3.5, 3.9, 4.1, 3.8, 4.2]  # 2/eta = 4
    assert _verdicts(_arm(0.5, eos, [-0.9, -0.8])) == [True, True]


def test_sharpness_far_from_threshold_or_coherent_groups_fail():
    low = [1.5, 1.6, 1.8, 2.0, 2.2, 2.4, 2.6]
    assert _verdicts(_arm(0.5, low, [0.2, 0.1])) == [False, False]
    flat_high = [4.0] * 7  # within 20% but never rose
    assert _verdicts(_arm(0.5, flat_high, [-0.5]))[0] is False


def test_not_tested_without_spikes_or_after_divergence_or_without_learning():
    eos = [1.5, 2.5, 3.5, 3.9, 4.1, 3.8, 4.2]
    assert _verdicts(_arm(0.5, eos, [])) == [True, None]
    assert _verdicts(_arm(0.5, eos, [-0.9], diverged=["eta 0.5 seed 0"])) == [None, None]
    assert _verdicts(_arm(0.5, eos, [-0.9], acc=10.0)) == [None, None]
