"""Tests for gas_jax.system.timing: path loss, rates, client profiles, durations (spec §1.9)."""
import numpy as np
import pytest

from gas_jax.system import timing


def _rate(d_km):
  """Independent float64 Shannon rate W log2(1 + P 10^(-PL/10) / (W N0)), spec §1.9 constants."""
  w, p = 1e7, 0.2
  n0 = 3.981e-21                            # W/Hz (-174 dBm/Hz as the spec rounds it)
  np.testing.assert_allclose(n0, 10.0 ** (-174.0 / 10.0) * 1e-3, rtol=1e-4)
  pl = 128.1 + 37.6 * np.log10(np.asarray(d_km, np.float64))
  return w * np.log2(1.0 + p * 10.0 ** (-pl / 10.0) / (w * n0))


@pytest.mark.parametrize("d_km, mbps, upload_s", [
    (0.1, 121.3, 0.035), (0.5, 35.3, 0.119), (1.0, 8.30, 0.505)])
def test_uplink_rate_reference_numbers(d_km, mbps, upload_s):
  r = float(timing.uplink_rate(d_km))
  np.testing.assert_allclose(r / 1e6, mbps, rtol=2e-3)
  np.testing.assert_allclose(r, _rate(d_km), rtol=1e-6)
  # REF activation upload per minibatch: B * A_bits = 32 * 131072 bit.
  up = 32 * timing.REF_ALEXNET_L2["activation_bits"] / r
  np.testing.assert_allclose(up, upload_s, rtol=0, atol=5e-4)   # spec rounds to 1 ms


def test_uplink_rate_vectorised_and_decreasing():
  d = np.linspace(0.1, 1.0, 10)
  r = timing.uplink_rate(d)
  assert r.shape == (10,)
  np.testing.assert_allclose(r, _rate(d), rtol=1e-6)
  assert np.all(np.diff(r) < 0)


def test_path_loss():
  np.testing.assert_allclose(timing.path_loss_db(1.0), 128.1, rtol=0, atol=1e-12)
  np.testing.assert_allclose(timing.path_loss_db(0.1), 128.1 - 37.6, atol=1e-12)
  np.testing.assert_allclose(timing.path_loss_db(0.5), 128.1 + 37.6 * np.log10(0.5), atol=1e-12)


def test_draw_profiles_ranges_and_distribution():
  p = timing.draw_profiles(4000, seed=3)
  assert p.compute.shape == (4000,) and p.distance.shape == (4000,)
  assert np.all((p.compute >= 1e9) & (p.compute <= 1e10))
  assert np.all((p.distance >= 0.1) & (p.distance <= 1.0))
  # Uniform in radius (mean 0.55), not in area (mean ~0.67); std of the mean ~0.004.
  assert abs(p.distance.mean() - 0.55) < 0.02
  assert abs(p.compute.mean() - 5.5e9) < 0.15e9
  np.testing.assert_allclose(p.rate, _rate(p.distance), rtol=1e-6)
  q = timing.draw_profiles(50, seed=3, compute_range=(2.0, 3.0), distance_range=(0.2, 0.25))
  assert np.all((q.compute >= 2.0) & (q.compute <= 3.0))
  assert np.all((q.distance >= 0.2) & (q.distance <= 0.25))


def test_draw_profiles_deterministic_by_seed():
  a, b, c = (timing.draw_profiles(20, s) for s in (7, 7, 8))
  np.testing.assert_array_equal(a.compute, b.compute)
  np.testing.assert_array_equal(a.distance, b.distance)
  assert not np.allclose(a.compute, c.compute)
  assert not np.allclose(a.distance, c.distance)
  # Compute speeds and distances are not the same stream reused.
  assert not np.allclose((a.compute - 1e9) / 9e9, (a.distance - 0.1) / 0.9)


def test_time_model_durations():
  prof = timing.ClientProfiles(compute=np.array([2e9, 4e9, 5e9]),
                               distance=np.array([0.1, 1.0, 0.5]))
  tm = timing.TimeModel(profiles=prof, client_flops=1e6, activation_bits=1000.0,
                        client_model_bits=5e5, batch_size=8, full_flops=3e6,
                        full_model_bits=2e6)
  rates = _rate(prof.distance)
  for k in range(3):
    np.testing.assert_allclose(tm.compute(k), 1e6 / prof.compute[k], rtol=1e-12)
    np.testing.assert_allclose(tm.upload_activation(k), 8 * 1000.0 / rates[k], rtol=1e-6)
    np.testing.assert_allclose(tm.upload_model(k), 5e5 / rates[k], rtol=1e-6)
    np.testing.assert_allclose(tm.local_training_full(k, 5), 5 * 2 * 3e6 / prof.compute[k],
                               rtol=1e-12)
    np.testing.assert_allclose(tm.upload_full_model(k), 2e6 / rates[k], rtol=1e-6)
  # Hand values: client 0 computes 1e6 / 2e9 = 0.5 ms; 8 kbit at 121.29 Mb/s = 65.96 us.
  np.testing.assert_allclose(tm.compute(0), 5e-4, rtol=1e-12)
  np.testing.assert_allclose(tm.upload_activation(0), 8000.0 / 121.288e6, rtol=1e-4)


def test_ref_constants():
  c = timing.REF_ALEXNET_L2
  assert c["client_flops"] == 5_603_328
  assert c["activation_bits"] == 64 * 8 * 8 * 32
  assert c["client_model_bits"] == (896 + 18_496) * 32
