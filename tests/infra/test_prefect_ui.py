"""The Prefect UI of the real Prefect server, in headless Chromium (Debian's, driven by Playwright): a person
finds the retrain deployment, starts a custom run with a changed parameter from the form, and sees it complete
on the worker. Screenshots of each step go to $TUNELINE_TEST_ARTIFACTS (default: a temporary folder), which
the test prints."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from tests.infra.conftest import DEPLOYED_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.ui]
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that reaches beyond loopback (updates, sync, QUIC probes, first-run pings).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-default-browser-check"]
CHANGED_MODEL = "ui-e2e"


def _field(page, label: str):
    """The input of the form field whose label starts with `label` (Prefect's schema form does not link them)."""
    return page.locator(
        f"xpath=//span[contains(@class, 'schema-form-property__label') and starts-with(normalize-space(.), '{label}')]"
        "/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]"
        "//*[self::textarea or self::input]").first


@pytest.fixture
def browser(tmp_path):
    if not CHROMIUM.exists() or not _has_playwright():
        message = "needs Debian's chromium (apt-get install chromium) and playwright (the dev extras)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the UI test: it {message}; .ci/run installs chromium")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        # A wait, not a result: with the other test worker busy on two cores, the UI's navigation after Submit
        # took over 60 s once (the same test alone takes 2 minutes in all).
        context.set_default_timeout(180_000)
        try:
            yield context
        finally:
            context.close()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def test_custom_run_from_the_deployment_form_completes(services, deployed, browser, tmp_path):
    artifacts = Path(os.environ.get("TUNELINE_TEST_ARTIFACTS", tmp_path / "artifacts")) / "prefect-ui"
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"Prefect UI screenshots: {artifacts}")
    ui = services.prefect_api.removesuffix("/api")
    nightly = services.deployment("retrain", "nightly")
    before = {r["id"] for r in services.flow_runs(deployments={"id": {"any_": [nightly["id"]]}})}

    def new_runs() -> list[dict]:
        """Runs of the deployment created since the test began, but the cron schedule's."""
        return [r for r in services.flow_runs(deployments={"id": {"any_": [nightly["id"]]}})
                if r["id"] not in before and not r["auto_scheduled"]]

    page = browser.new_page()
    try:
        page.goto(f"{ui}/deployments")
        page.get_by_role("link", name="nightly", exact=True).click()
        page.wait_for_url(re.compile(rf"/deployments/deployment/{nightly['id']}"))
        page.screenshot(path=artifacts / "1-deployment.png")

        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_text("Custom run").click()
        page.get_by_text("Everything one").wait_for()  # RetrainConfig's description heads the form
        model_name = _field(page, "Model Name")
        assert model_name.input_value() == DEPLOYED_MODEL  # the deployment's preset fills the form
        model_name.fill(CHANGED_MODEL)
        page.screenshot(path=artifacts / "2-run-form.png")
        page.get_by_role("button", name="Submit", exact=True).click()

        # Back on the deployment's page, which lists the new run: open it, as a person would.
        page.wait_for_url(re.compile(rf"/deployments/deployment/{nightly['id']}(\?.*)?$"))
        (created,) = new_runs()
        page.get_by_role("link", name=created["name"], exact=True).first.click()
        page.wait_for_url(re.compile(rf"/runs/flow-run/{created['id']}"))
        # The state badge in the run's heading turns Completed once the worker has run the flow.
        page.locator("header.page-heading-flow-run").get_by_text("Completed", exact=True).wait_for(timeout=420_000)
        page.screenshot(path=artifacts / "3-completed.png")
    except BaseException:
        page.screenshot(path=artifacts / "failure.png")
        raise

    assert [r["id"] for r in new_runs()] == [created["id"]]  # one submit, one run
    run = httpx.get(f"{services.prefect_api}/flow_runs/{created['id']}", timeout=10).json()
    assert run["deployment_id"] == nightly["id"] and run["state_type"] == "COMPLETED"
    assert run["parameters"]["config"]["registry"]["model_name"] == CHANGED_MODEL
    registry = MlflowClient(tracking_uri=services.mlflow_uri, registry_uri=services.mlflow_uri)
    version = registry.get_model_version(CHANGED_MODEL, "1")  # champion, or challenger under the gate's floor
    assert {"champion", "challenger"} & set(version.aliases) and version.tags["validation.success"] == "True"
    for name in ("1-deployment.png", "2-run-form.png", "3-completed.png"):
        assert (artifacts / name).stat().st_size > 10_000, name
