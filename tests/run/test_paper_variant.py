"""The paper-as-written switch (`variant`, gas_jax/variants.py; docs/paper_as_written.md) and the
follow-up knobs' validation: the resolved fields land in config.json and are the run's
identity; an explicit override wins; every new field refuses a bad value in one line."""
import json
import os

import pytest

from gas_jax import main as main_lib
from gas_jax import variants
from gas_jax import workdir as workdir_lib
from helpers.cli_runs import short_digits_config

PAPER = {"weighting.fn": "linear", "clients.aggregation": "data_size", "stats.jitter": 0.0,
         "stats.gen_balance": "equal", "time.placement": "area", "time.uplink": "shared"}


def _field(d, dotted):
  for part in dotted.split("."):
    d = d[part]
  return d


def _error(config, workdir) -> str:
  with pytest.raises(SystemExit) as e:
    main_lib.run(config, str(workdir))
  msg = str(e.value.code)
  assert msg.startswith("error: ") and "\n" not in msg and "Traceback" not in msg, msg
  return msg


BAD = [
    (dict(variant="as_written"), "variant"),
    (dict(clients__activation_buffer=-1), "clients.activation_buffer"),
    (dict(clients__model_buffer=-3), "clients.model_buffer"),
    (dict(clients__la_tau=-0.5), "clients.la_tau"),
    (dict(clients__la_tau=float("nan")), "clients.la_tau"),
    (dict(stats__gen_rows=-1), "stats.gen_rows"),
    (dict(stats__gen_balance="exact"), "stats.gen_balance"),
    (dict(time__placement="disc"), "time.placement"),
    (dict(time__uplink="tdma"), "time.uplink"),
    (dict(time__bandwidth_hz=0.0), "time.bandwidth_hz"),
    (dict(time__tx_power_w=float("inf")), "time.tx_power_w"),
    (dict(time__noise_psd_w_per_hz=-1e-21), "time.noise_psd_w_per_hz"),
    (dict(time__path_loss_db_at_1km=float("nan")), "time.path_loss_db_at_1km"),
    (dict(time__path_loss_db_per_decade=-37.6), "time.path_loss_db_per_decade"),
]


@pytest.mark.parametrize("overrides, field", BAD,
                         ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD])
def test_bad_value_one_line_nothing_written(tmp_path, overrides, field):
  workdir = tmp_path / "run"
  msg = _error(short_digits_config(**overrides), workdir)
  assert field in msg and "invalid" in msg, msg
  assert not workdir.exists()


def test_resolve_sets_every_as_written_field():
  ref = short_digits_config()
  assert variants.resolve(ref) is ref                       # REF: nothing changes
  assert set(PAPER) == set(variants.AS_WRITTEN)
  for field, (ref_value, paper_value, _) in variants.AS_WRITTEN.items():
    assert _field(ref, field) == ref_value, field          # the defaults are REF's
    assert PAPER[field] == paper_value
  paper = variants.resolve(short_digits_config(variant="paper"))
  assert {f: _field(paper, f) for f in PAPER} == PAPER
  assert variants.resolve(paper).to_dict() == paper.to_dict()    # idempotent


def test_explicit_override_wins():
  c = variants.resolve(short_digits_config(variant="paper", weighting__fn="exp",
                                           stats__jitter=1e-4))
  assert c.weighting.fn == "exp" and c.stats.jitter == 1e-4
  assert c.time.placement == "area" and c.clients.aggregation == "data_size"


def test_paper_run_records_resolved_fields_and_resumes(tmp_path):
  """config.json holds the concrete fields; the same command again is the same run (finished:
  a no-op), also to a launcher comparing its unresolved config (gas_jax.cells), while REF's
  config is another run."""
  wd = str(tmp_path / "paper")
  config = short_digits_config(variant="paper")
  summary = main_lib.run(config, wd)
  assert config.weighting.fn == "ref"                       # the caller's config is untouched
  with open(os.path.join(wd, "config.json")) as f:
    stored = json.load(f)
  assert stored["variant"] == "paper"
  assert {f: _field(stored, f) for f in PAPER} == PAPER
  assert workdir_lib.differences(stored, config.to_dict(), 1) == []
  assert main_lib.run(short_digits_config(variant="paper"), wd) == summary
  diff = workdir_lib.differences(stored, short_digits_config().to_dict(), 1)
  assert any(d.startswith("variant") for d in diff) and any("time.uplink" in d for d in diff)
  # The paper's clock differs from REF's (W/C share, placement over the area).
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    paper_time = json.loads(f.readline())["simulated_time_s"]
  ref_wd = str(tmp_path / "ref")
  main_lib.run(short_digits_config(), ref_wd)
  with open(os.path.join(ref_wd, "metrics.jsonl")) as f:
    assert json.loads(f.readline())["simulated_time_s"] != paper_time


def test_old_config_without_the_new_fields_resumes():
  """A config.json written before these fields existed is the same run as today's defaults."""
  new = short_digits_config().to_dict()
  old = json.loads(json.dumps(new))
  del old["variant"]
  for section, names in (("clients", ("activation_buffer", "model_buffer", "la_tau")),
                         ("stats", ("gen_rows", "gen_balance")),
                         ("time", ("placement", "uplink", "bandwidth_hz", "tx_power_w",
                                   "noise_psd_w_per_hz", "path_loss_db_at_1km",
                                   "path_loss_db_per_decade"))):
    for n in names:
      del old[section][n]
  assert workdir_lib.differences(old, new, 1) == []
  assert workdir_lib.differences(old, short_digits_config(clients__la_tau=0.0).to_dict(), 1)
