"""The radio knobs and the paper-as-written clock options (gas_jax/system/timing.py `Radio`,
`draw_distances`; gas_jax/context.py `radio`): placement over the cell's area, the static W/C
uplink share, and every constant reaching the rate."""
import math

import numpy as np
import pytest

from configs import digits
from gas_jax import context
from gas_jax.system import timing


def _shannon(d_km, w, p, n0, a, b):
  """The rate written out: W log2(1 + P 10^(-(a + b log10 d)/10) / (W N0))."""
  gain = 10.0 ** (-(a + b * math.log10(d_km)) / 10.0)
  return w * math.log2(1.0 + p * gain / (w * n0))


@pytest.mark.parametrize("lo, fraction_area, fraction_radius", [
    (1e-9, 0.25, 0.5),                                  # the whole disc: 1/4 vs 1/2
    (0.1, (0.25 - 0.01) / (1 - 0.01), (0.5 - 0.1) / 0.9),   # REF's annulus 0.1..1 km
])
def test_area_placement_fraction_within_half_radius(lo, fraction_area, fraction_radius):
  n = 200_000
  area = timing.draw_profiles(n, 3, distance_range=(lo, 1.0), placement="area").distance
  radius = timing.draw_profiles(n, 3, distance_range=(lo, 1.0)).distance
  se = 0.5 / math.sqrt(n)           # binomial standard error bound
  assert abs(np.mean(area <= 0.5) - fraction_area) < 5 * se
  assert abs(np.mean(radius <= 0.5) - fraction_radius) < 5 * se
  assert area.min() >= lo and area.max() <= 1.0


def test_placement_keeps_the_other_streams():
  """Area placement changes the distances only: compute speeds are the same draws."""
  a = timing.draw_profiles(50, 7, placement="area")
  r = timing.draw_profiles(50, 7)
  np.testing.assert_array_equal(a.compute, r.compute)
  assert not np.allclose(a.distance, r.distance)


def test_shared_uplink_rate_hand_computed():
  """W/C with W = 10 MHz, C = 10 at d = 1 km: the sub-band is 1 MHz, its noise 1e6 N0.
  PL = 128.1 dB, h = 10^-12.81 = 1.5488e-13, SNR = 0.2 h / 3.981e-15 = 7.781,
  r = 1e6 log2(8.781) = 3.134 Mb/s (REF's full band: 8.30 Mb/s, spec §1.9)."""
  shared = timing.Radio(share=10).rate(1.0)
  assert shared == pytest.approx(3.1344e6, rel=2e-4)
  assert shared == pytest.approx(_shannon(1.0, 1e6, 0.2, 3.981e-21, 128.1, 37.6), rel=1e-12)
  assert timing.Radio().rate(1.0) == pytest.approx(8.30e6, rel=2e-3)
  assert float(timing.Radio().rate(1.0)) == float(timing.uplink_rate(1.0))   # REF unchanged


def test_every_radio_constant_reaches_the_rate():
  r = timing.Radio(bandwidth=2e6, power=0.5, noise_psd=1e-20, path_loss_at_1km=120.0,
                   path_loss_per_decade=30.0, share=4)
  for d in (0.1, 0.37, 1.0):
    assert r.rate(d) == pytest.approx(_shannon(d, 5e5, 0.5, 1e-20, 120.0, 30.0), rel=1e-12)


def test_config_builds_the_radio():
  """time.* -> Radio (context.radio); uplink="shared" divides by clients.participating."""
  c = digits.get_config()
  assert context.radio(c) == timing.Radio()
  c.time.uplink, c.time.bandwidth_hz, c.time.tx_power_w = "shared", 2e7, 0.1
  c.time.noise_psd_w_per_hz, c.time.path_loss_db_at_1km = 1e-20, 130.0
  c.time.path_loss_db_per_decade = 35.0
  assert context.radio(c) == timing.Radio(bandwidth=2e7, power=0.1, noise_psd=1e-20,
                                          path_loss_at_1km=130.0, path_loss_per_decade=35.0,
                                          share=c.clients.participating)


def test_time_model_uses_the_radio():
  """The clock's upload times follow the profiles' radio (every method's clock: TimeModel)."""
  prof = timing.ClientProfiles(compute=np.array([1e9]), distance=np.array([1.0]),
                               radio=timing.Radio(share=10))
  tm = timing.TimeModel(profiles=prof, batch_size=32, **timing.REF_ALEXNET_L2)
  expected = 32 * 131_072 / _shannon(1.0, 1e6, 0.2, 3.981e-21, 128.1, 37.6)
  assert tm.upload_activation(0) == pytest.approx(expected, rel=1e-12)
  assert tm.upload_full_model(0) == pytest.approx(123_799_872 / prof.rate[0], rel=1e-12)
