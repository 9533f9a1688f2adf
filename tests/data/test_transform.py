"""data.log_transform: f(x) = log1p(x/ε) per variable against the closed form log(x + ε) − log ε,
its inverse, the variable axis, the domain check and the config's validation."""

import numpy as np
import pytest

from hpcds.config.load import load_config
from hpcds.data.transform import check_domain, forward, inverse, log_offsets
from hpcds.errors import ConfigError, DataCheckError


def test_forward_is_the_closed_form_and_inverse_undoes_it():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(280, 10, 50), rng.gamma(0.5, 2e-3, 50)])  # (V, N): 2t, tp
    offsets = np.array([0.0, 1e-4])
    y = forward(x, offsets)
    np.testing.assert_array_equal(y[0], x[0])  # ε = 0: the identity
    np.testing.assert_allclose(y[1], np.log(x[1] + 1e-4) - np.log(1e-4), rtol=1e-12)
    np.testing.assert_allclose(inverse(y, offsets), x, rtol=1e-12, atol=1e-18)
    # the variable axis may be anywhere: (B, V, N) with axis=1
    batch = np.stack([x, 2 * x])
    np.testing.assert_allclose(forward(batch, offsets, axis=1),
                               np.stack([y, forward(2 * x, offsets)]), rtol=1e-15)
    assert np.isfinite(inverse(np.full((2, 1), 1e6), offsets)).all()  # never overflows


def test_offsets_follow_the_variables_and_ignore_absent_names():
    np.testing.assert_array_equal(log_offsets(["2t", "tp"], {"tp": 1e-4, "sf": 1e-3}),
                                  [0.0, 1e-4])
    assert not log_offsets(["2t"], {"tp": 1e-4}).any()


def test_values_outside_the_domain_are_a_clear_error():
    values = np.array([[1.0, -5.0], [0.0, -2e-4]])
    check_domain(values, np.array([0.0, 1e-3]), ["2t", "tp"], "here")  # −2e-4 > −1e-3
    with pytest.raises(DataCheckError, match=r"tp holds -0.0002 in here.*> −0.0001"):
        check_domain(values, np.array([0.0, 1e-4]), ["2t", "tp"], "here")


@pytest.mark.parametrize("eps", ["-1e-4", "inf", "nan"])
def test_offsets_must_be_positive(eps):
    with pytest.raises(ConfigError, match="data.log_transform.tp"):
        load_config("tiny", [f"data.log_transform.tp={eps}"])


def test_a_zero_offset_turns_a_presets_transform_off():
    """An override merges into the preset's map ({} would keep tp's ε): 0 is the way out."""
    assert load_config("tiny", []).data.log_transform == {"tp": 1e-3}
    assert load_config("tiny", ["data.log_transform={}"]).data.log_transform == {"tp": 1e-3}
    off = load_config("tiny", ["data.log_transform.tp=0"])
    assert not log_offsets(off.data.variables, off.data.log_transform).any()
