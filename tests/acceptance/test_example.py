"""The README's example: a user's own test file, written with phoenixci's fixtures only."""
import pytest

pytestmark = pytest.mark.acceptance
PAGE = "phoenixapp/templates/index.html"


def test_a_new_page_is_released_on_a_new_server(phoenix_release, phoenix_repo, push_commit):
    html = (phoenix_repo.path / PAGE).read_text()
    release = push_commit({PAGE: html.replace("Welcome", "Hello")}, "a friendlier page")
    assert release.succeeded and release.artifact_key
    assert release.serving_revision == release.revision
    assert release.serving_instance != phoenix_release.serving_instance


def test_the_app_runs_as_its_own_user(app_server_host):
    assert app_server_host.service("phoenixapp").is_running
    assert app_server_host.socket("tcp://0.0.0.0:8080").is_listening
    assert app_server_host.process.filter(comm="python3", user="phoenixapp")


def test_the_ci_hosts_run_buildbot(ci_server_host, ci_agent_host):
    assert ci_server_host.service("buildbot-master").is_running
    assert ci_agent_host.service("buildbot-worker").is_running
