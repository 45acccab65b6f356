"""The acceptance suite uses phoenixci's own fixtures only (phoenixci.fixtures, loaded by the
pytest plugin): one environment per session, brought up by the fixture chain."""
