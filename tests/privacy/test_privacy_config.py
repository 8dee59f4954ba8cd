"""privacy.* (the eq. 44 regulariser): every bad value is refused before anything is written,
in one `error:` line naming the field (as tests/run/test_bad_inputs.py does for the rest)."""
import os

import pytest

from helpers.cli_runs import short_digits_config
from gas_jax import config as config_lib
from gas_jax import main as main_lib
from gas_jax.errors import ConfigError


_config = short_digits_config


BAD = [
    (dict(privacy__method="dp"), "privacy.method"),
    (dict(privacy__method=""), "privacy.method"),
    (dict(privacy__gamma=-0.1), "privacy.gamma"),
    (dict(privacy__gamma=float("nan")), "privacy.gamma"),
    (dict(privacy__gamma=float("inf")), "privacy.gamma"),
    (dict(privacy__tau=1.5), "privacy.tau"),
    (dict(privacy__tau=-0.01), "privacy.tau"),
    (dict(privacy__tau=float("nan")), "privacy.tau"),
    (dict(privacy__decoder_blocks=-1), "privacy.decoder_blocks"),
    (dict(privacy__decoder_channels=0), "privacy.decoder_channels"),
    (dict(privacy__decoder_lr=0.0), "privacy.decoder_lr"),
    (dict(privacy__method="inversion", algorithm="fedavg"), "privacy.method"),
    (dict(privacy__method="nopeek", algorithm="fedbuff"), "privacy.method"),
    (dict(privacy__method="inversion", algorithm="ca2fl"), "privacy.method"),
    (dict(privacy__method="inversion", seeds=(0, 1)), "seeds"),
]


@pytest.mark.parametrize("overrides, field", BAD,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD])
def test_bad_privacy_value_one_line_nothing_written(tmp_path, overrides, field):
  workdir = tmp_path / "run"
  with pytest.raises(SystemExit) as e:
    main_lib.run(_config(**overrides), str(workdir), False)
  msg = str(e.value.code)
  assert msg.startswith("error: ") and "\n" not in msg and "Traceback" not in msg, msg
  assert field in msg, msg
  assert not workdir.exists(), os.listdir(workdir)


@pytest.mark.parametrize("algorithm", ["gas", "gas_nogen", "minibatch_sfl", "s2fl"])
@pytest.mark.parametrize("method", ["none", "inversion", "nopeek"])
def test_split_methods_accept_every_method(algorithm, method):
  config_lib.validate(_config(algorithm=algorithm, privacy__method=method,
                              privacy__decoder_blocks=0, privacy__gamma=0.0, privacy__tau=1.0))


@pytest.mark.parametrize("algorithm", ["fedavg", "fedbuff", "ca2fl"])
def test_fl_methods_run_without_privacy(algorithm):
  config_lib.validate(_config(algorithm=algorithm))     # "none" (the default) is accepted
  with pytest.raises(ConfigError, match="split methods"):
    config_lib.validate(_config(algorithm=algorithm, privacy__method="nopeek"))


def test_runs_stored_before_the_privacy_section_continue_with_it_off():
  """A workdir whose config.json predates privacy.* resumes with method "none", not another."""
  from gas_jax import workdir as workdir_lib   # noqa: PLC0415
  new = _config().to_dict()
  stored = _config().to_dict()
  del stored["privacy"]
  assert workdir_lib.differences(stored, new) == []
  new["privacy"]["method"] = "nopeek"
  diff = workdir_lib.differences(stored, new)
  assert "privacy.method: (not in the stored config) -> 'nopeek'" in diff
