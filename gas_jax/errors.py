"""The errors a run reports in one line at the program's boundary (`gas_jax.main.run`)."""


class ConfigError(ValueError):
  """A config field has a value that is not allowed (the message names field, value and what
  is allowed)."""


class RunError(Exception):
  """The workdir or the run's state forbids what was asked (a different run in the workdir, a
  workdir in use, a full disk, ...). The message is one line saying what to do."""


class DataError(ValueError):
  """A dataset's files are missing, malformed or unsafe (the message names the file)."""
