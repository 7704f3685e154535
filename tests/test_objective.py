import math

import pytest

from edge_tune.errors import UserError
from edge_tune.objective import Objective, check_reachable, parse_threshold


def test_threshold_syntax():
    assert parse_threshold("97.5").resolve(99.0) == 97.5
    assert parse_threshold("-1.0").resolve(99.0) == pytest.approx(98.0)
    assert parse_threshold("-0.5").is_drop
    for bad in ("abc", "1.0pt", "", "101"):
        with pytest.raises(UserError, match="--accuracy-threshold"):
            parse_threshold(bad)


def test_constraint_sign_and_score():
    obj = Objective(threshold=95.0)
    assert obj.constraint(96.0) == pytest.approx(1.0) and obj.feasible(96.0)
    assert obj.constraint(94.0) < 0 and not obj.feasible(94.0)
    # Latency dominates: 10% faster beats 5 accuracy points more.
    assert obj.score(95.0, 1.10) > obj.score(100.0, 1.0)
    # Accuracy breaks ties at equal speed-up.
    assert obj.score(97.0, 1.5) > obj.score(96.0, 1.5)
    assert obj.score(97.0, 1.0) == pytest.approx(0.02)
    assert math.isnan(obj.score(float("nan"), 1.2)) and math.isnan(obj.score(96.0, 0.0))


def test_unreachable_threshold_names_the_baseline():
    with pytest.raises(UserError) as err:
        check_reachable(99.5, 98.2, parse_threshold("99.5"))
    assert "unreachable" in str(err.value) and "98.20" in str(err.value)
    check_reachable(98.0, 98.2, parse_threshold("98"))


def test_combined_objective_is_mnasnets_weighted_product():
    obj = Objective(threshold=97.0, kind="combined", latency_weight=0.07)
    assert not obj.constrained and Objective(97.0).constrained
    assert obj.score(99.0, 1.0) == pytest.approx(math.log(0.99))
    # ACC * speedup^w: doubling the speed-up multiplies the product by 2^0.07.
    assert math.exp(obj.score(90.0, 2.0) - obj.score(90.0, 1.0)) == pytest.approx(2**0.07)
    # It trades accuracy for speed below the threshold, which the constraint never does.
    assert obj.score(96.0, 1.5) > obj.score(98.0, 1.0) and not obj.feasible(96.0)
