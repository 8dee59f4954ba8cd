"""Wireless time model of the simulated clock (spec §1.9; paper "Implementation Details").

Clients sit uniformly in radius within a 1 km cell; the uplink rate follows the 3GPP TR 36.814
path loss PL = 128.1 + 37.6 log10(d_km) dB and Shannon's formula with bandwidth W = 10 MHz,
transmit power P = 0.2 W and noise density N0 = -174 dBm/Hz. Compute speeds are U(1e9, 1e10)
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


def path_loss_db(distance_km):
  return 128.1 + 37.6 * np.log10(distance_km)


def uplink_rate(distance_km, bandwidth=BANDWIDTH_HZ, power=TX_POWER_W,
                noise_psd=NOISE_PSD_W_PER_HZ):
  """Achievable uplink rate in bit/s at the given distance (Shannon capacity)."""
  gain = 10.0 ** (-path_loss_db(np.asarray(distance_km, np.float64)) / 10.0)
  return bandwidth * np.log2(1.0 + power * gain / (bandwidth * noise_psd))


@dataclasses.dataclass(frozen=True)
class ClientProfiles:
  """Per-client compute speed (FLOP/s), distance (km) and uplink rate (bit/s)."""
  compute: np.ndarray
  distance: np.ndarray

  @property
  def rate(self) -> np.ndarray:
    return uplink_rate(self.distance)


def draw_profiles(num_clients: int, seed: int, compute_range=(1e9, 1e10),
                  distance_range=(0.1, 1.0)) -> ClientProfiles:
  """Client capabilities from the run seed alone, so every method sees the same ones (spec §6.13)."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC10C]))
  compute = rng.uniform(*compute_range, size=num_clients)
  distance = rng.uniform(*distance_range, size=num_clients)
  return ClientProfiles(compute=compute, distance=distance)


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
