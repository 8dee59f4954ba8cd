"""Wireless time model of the simulated clock (spec §1.9; paper "Implementation Details").

Clients sit uniformly in radius within a 1 km cell (REF; `placement="area"`: uniformly over the
cell's area, as the paper writes); the uplink rate follows the 3GPP TR 36.814 path loss
PL = 128.1 + 37.6 log10(d_km) dB and Shannon's formula with bandwidth W = 10 MHz, transmit power
P = 0.2 W and noise density N0 = -174 dBm/Hz (`Radio`; REF gives every client the whole W, the
paper's orthogonal uplink a static share W/C: `Radio.share`). Compute speeds are U(1e9, 1e10)
FLOP/s. Only uplink (activations, models) and client compute are charged, as REF does.
"""
import dataclasses

import numpy as np

BANDWIDTH_HZ = 1e7
TX_POWER_W = 0.2
NOISE_PSD_W_PER_HZ = 3.981e-21   # -174 dBm/Hz

# REF's hard-coded AlexNet-CIFAR split-L2 constants (spec §1.9, §2.0).
REF_ALEXNET_L2 = dict(client_flops=5_603_328, activation_bits=131_072,
                      client_model_bits=620_544, full_flops=69_833_728,
                      full_model_bits=123_799_872)


PATH_LOSS_DB_AT_1KM = 128.1
PATH_LOSS_DB_PER_DECADE = 37.6
PLACEMENTS = ("radius", "area")


def path_loss_db(distance_km, at_1km=PATH_LOSS_DB_AT_1KM, per_decade=PATH_LOSS_DB_PER_DECADE):
  return at_1km + per_decade * np.log10(distance_km)


def uplink_rate(distance_km, bandwidth=BANDWIDTH_HZ, power=TX_POWER_W,
                noise_psd=NOISE_PSD_W_PER_HZ, at_1km=PATH_LOSS_DB_AT_1KM,
                per_decade=PATH_LOSS_DB_PER_DECADE):
  """Achievable uplink rate in bit/s at the given distance (Shannon capacity)."""
  gain = 10.0 ** (-path_loss_db(np.asarray(distance_km, np.float64), at_1km, per_decade) / 10.0)
  return bandwidth * np.log2(1.0 + power * gain / (bandwidth * noise_psd))


@dataclasses.dataclass(frozen=True)
class Radio:
  """The uplink's constants (paper "Implementation Details"; REF's values by default).

  share: the clients the total bandwidth W is divided among. 1 (REF): every client transmits
  on the whole W. C (the paper's orthogonal uplink access): a static share W/C per client - the
  C clients in flight hold one orthogonal sub-band each whether or not they transmit at that
  moment - so r_k = (W/C) log2(1 + P h_k / ((W/C) N0)) (the noise is that of the sub-band)."""
  bandwidth: float = BANDWIDTH_HZ
  power: float = TX_POWER_W
  noise_psd: float = NOISE_PSD_W_PER_HZ
  path_loss_at_1km: float = PATH_LOSS_DB_AT_1KM
  path_loss_per_decade: float = PATH_LOSS_DB_PER_DECADE
  share: int = 1

  def rate(self, distance_km):
    return uplink_rate(distance_km, self.bandwidth / self.share, self.power, self.noise_psd,
                       self.path_loss_at_1km, self.path_loss_per_decade)


@dataclasses.dataclass(frozen=True)
class ClientProfiles:
  """Per-client compute speed (FLOP/s), distance (km) and uplink rate (bit/s)."""
  compute: np.ndarray
  distance: np.ndarray
  radio: Radio = Radio()

  @property
  def rate(self) -> np.ndarray:
    return self.radio.rate(self.distance)


def draw_distances(rng, num_clients: int, distance_range, placement: str = "radius"):
  """Client distances in [d_min, d_max] km: uniform in radius (REF, spec §1.9) or uniform over
  the annulus' area (`placement="area"`, the paper's "randomly and uniformly distributed within
  the cell": d = sqrt(U(d_min^2, d_max^2)), so P(d <= r) grows with r^2). One uniform draw per
  client either way, so the other streams stay where they were."""
  lo, hi = distance_range
  if placement == "area":
    return np.sqrt(rng.uniform(lo * lo, hi * hi, size=num_clients))
  return rng.uniform(lo, hi, size=num_clients)


def draw_profiles(num_clients: int, seed: int, compute_range=(1e9, 1e10),
                  distance_range=(0.1, 1.0), placement: str = "radius",
                  radio: Radio = Radio()) -> ClientProfiles:
  """Client capabilities from the run seed alone, so every method sees the same ones (spec §6.13)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC10C]))
  compute = rng.uniform(*compute_range, size=num_clients)
  distance = draw_distances(rng, num_clients, distance_range, placement)
  return ClientProfiles(compute=compute, distance=distance, radio=radio)


@dataclasses.dataclass(frozen=True)
class TimeModel:
  """Per-event durations in seconds (FLOPs are per image: batch-parallel, as in REF)."""
  profiles: ClientProfiles
  client_flops: float       # per image, one forward (or one backward)
  activation_bits: float    # per image
  client_model_bits: float
  batch_size: int
  full_flops: float = 0.0   # unsplit model, per image (FL baselines)
  full_model_bits: float = 0.0

  def __post_init__(self):
    object.__setattr__(self, "_rate", self.profiles.rate)

  def compute(self, k) -> float:
    return self.client_flops / self.profiles.compute[k]

  def upload_activation(self, k) -> float:
    return self.batch_size * self.activation_bits / self._rate[k]

  def upload_model(self, k) -> float:
    return self.client_model_bits / self._rate[k]

  def local_training_full(self, k, local_iters: int) -> float:
    return local_iters * 2.0 * self.full_flops / self.profiles.compute[k]

  def upload_full_model(self, k) -> float:
    return self.full_model_bits / self._rate[k]
