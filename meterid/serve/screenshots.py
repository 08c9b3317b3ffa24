"""The README's screenshots of the production UIs, taken with headless Chromium.

With ``meterid serve`` running (and a nightly run completed), three pages are captured:

- the Prefect UI's deployments list (the three deployments and their schedules);
- the latest COMPLETED flow run of the ``batch_scoring/nightly`` deployment;
- the MLflow UI's page of the registered model ``meterid`` (its versions and aliases).

With ``--dashboard`` (``meterid dashboard`` running), each of its pages, with a photo
identified on Identify (``--photo``, uploaded as a user would).

What to show is looked up first through the Prefect and MLflow REST APIs; each page is then
waited for until what the API said is on it (both UIs are single-page apps: a screenshot taken at
load time shows an empty frame). Chromium and ChromeDriver are Debian's (``ensure_chromium``
installs them); selenium drives them, imported only when a browser starts. Only 127.0.0.1 URLs
are accepted, and Chromium's background networking is off, so nothing leaves the machine.

    python -m meterid.serve.screenshots --prefect-ui http://127.0.0.1:4200 \\
        --mlflow-ui http://127.0.0.1:5000 --out docs/screenshots \\
        --dashboard http://127.0.0.1:8501 --photo data/raw/<class>/<photo>.jpg
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import requests

log = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
DEBIAN_PACKAGES = ("chromium", "chromium-driver")
# Wide enough for the Prefect deployments table to show every schedule tag (at 1400 px the
# weekly one folds into "+1").
WINDOW = (1500, 900)
PAGE_TIMEOUT_S = 60.0
SETTLE_S = 1.5  # after the awaited content: charts, sparklines and fonts finish drawing
API_TIMEOUT_S = 30.0
MODEL_NAME = "meterid"
NIGHTLY = ("batch_scoring", "nightly")
FILES = {"deployments": "prefect-deployments.png", "nightly_run": "prefect-nightly-run.png",
         "model": "mlflow-model.png"}
DASHBOARD_PAGES = {page: f"dashboard-{page}.png" for page in (
    "review", "results", "identify", "clusters", "data", "retrain", "model")}
# What the dashboard shows once a photo is scored: the model that scored it, under the label.
IDENTIFIED = ("· model v", "· exported model")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    # Nothing but the pages asked for: no update checks, sync, field trials or QUIC probes.
    "--disable-quic", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


class ScreenshotError(RuntimeError):
    """A page could not be captured as it should be; the message names the page and why."""


# --- Chromium -----------------------------------------------------------------------------------

def ensure_chromium() -> None:
    """Install Debian's ``chromium`` and ``chromium-driver`` with apt-get if either binary is
    missing (needs root); a clear ``ScreenshotError`` otherwise."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    packages = " ".join(DEBIAN_PACKAGES)
    if os.geteuid() != 0:
        raise ScreenshotError(f"{' and '.join(missing)} missing; installing them needs root: "
                              f"run `sudo apt-get update && sudo apt-get install -y {packages}`")
    if shutil.which("apt-get") is None:
        raise ScreenshotError(f"{' and '.join(missing)} missing and there is no apt-get: "
                              f"install Chromium and ChromeDriver at {CHROMIUM} and "
                              f"{CHROMEDRIVER}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *DEBIAN_PACKAGES]):
        log.info("running %s", " ".join(command))
        result = subprocess.run(command, env=env, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ScreenshotError(f"`{' '.join(command)}` failed ({result.returncode}):\n"
                                  f"{(result.stdout + result.stderr)[-3000:]}")
    still = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if still:
        raise ScreenshotError(f"apt-get installed {packages} but {' and '.join(still)} "
                              "is still missing")


@contextmanager
def _browser() -> Iterator[Any]:
    """Headless Chromium with a throwaway profile, its viewport exactly ``WINDOW``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="meterid-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1,
                "mobile": False})
            driver.set_page_load_timeout(PAGE_TIMEOUT_S)
            yield driver
        finally:
            driver.quit()


# --- what to show, from the REST APIs -----------------------------------------------------------

def _local(url: str, what: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme != "http" or parsed.hostname != "127.0.0.1" or not parsed.port:
        raise ScreenshotError(f"{what} {url!r}: expected http://127.0.0.1:PORT (screenshots "
                              "are taken of the local stack only)")
    return url.rstrip("/")


def _call(method: str, url: str, what: str, **kwargs: Any) -> Any:
    try:
        response = requests.request(method, url, timeout=API_TIMEOUT_S, **kwargs)
    except requests.RequestException as error:
        raise ScreenshotError(f"{what}: {url} did not answer ({error}); is `meterid serve` "
                              "running?") from error
    if response.status_code == 404:
        raise ScreenshotError(f"{what}: not found ({url})")
    if not response.ok:
        raise ScreenshotError(f"{what}: {url} answered {response.status_code}: "
                              f"{response.text[:500]}")
    return response.json()


def _prefect_targets(api: str) -> tuple[list[dict], dict, dict]:
    """All deployments, the nightly one and its latest COMPLETED flow run."""
    flow, name = NIGHTLY
    deployments = _call("POST", f"{api}/deployments/filter", "Prefect deployments",
                        json={"sort": "NAME_ASC"})
    nightly = _call("GET", f"{api}/deployments/name/{flow}/{name}",
                    f"Prefect deployment {flow}/{name}")
    runs = _call("POST", f"{api}/flow_runs/filter", f"flow runs of {flow}/{name}", json={
        "deployments": {"id": {"any_": [nightly["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "END_TIME_DESC", "limit": 1})
    if not runs:
        raise ScreenshotError(f"deployment {flow}/{name} has no COMPLETED flow run yet: "
                              "trigger one (Prefect UI: Run, or the REST API) and wait for it")
    return deployments, nightly, runs[0]


def _mlflow_targets(mlflow_ui: str, model: str) -> tuple[list[str], list[str]]:
    """The model's version numbers (newest first, the UI's first page) and alias names."""
    api = f"{mlflow_ui}/api/2.0/mlflow"
    registered = _call("GET", f"{api}/registered-models/get", f"MLflow registered model "
                       f"{model!r}", params={"name": model})["registered_model"]
    found = _call("GET", f"{api}/model-versions/search", f"versions of MLflow model {model!r}",
                  params={"filter": f"name='{model}'", "max_results": 200})
    versions = sorted((int(v["version"]) for v in found.get("model_versions", [])),
                      reverse=True)
    if not versions:
        raise ScreenshotError(f"MLflow model {model!r} has no versions to show")
    aliases = sorted({a["alias"] for a in registered.get("aliases", [])})
    return [str(v) for v in versions[:25]], aliases


# --- waiting for a page -------------------------------------------------------------------------

def _visible_text(driver: Any) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


def _displayed(driver: Any, css: str) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return any(e.is_displayed() and e.text.strip()
                   for e in driver.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:  # re-rendered while looked at: try again
        return False


def _missing(driver: Any, texts: Sequence[str], selectors: Sequence[str]) -> list[str]:
    shown = " ".join(_visible_text(driver).split())  # innerText keeps nbsp, newlines
    shown = shown.replace("\u00a0", " ")
    gone = [f"text {t!r}" for t in texts if t not in shown]
    return gone + [f"element {css!r}" for css in selectors if not _displayed(driver, css)]


def _open(driver: Any, page: str, url: str, texts: Sequence[str],
          selectors: Sequence[str] = (), timeout_s: float = PAGE_TIMEOUT_S) -> None:
    """Load ``url`` and wait until every text is visible and every CSS selector matches a
    displayed, non-empty element; ``ScreenshotError`` naming the page and what is missing."""
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        driver.get(url)
    except WebDriverException as error:
        raise ScreenshotError(f"{page}: {url} did not load: {error.msg}") from error
    try:
        WebDriverWait(driver, timeout_s, poll_frequency=0.5).until(
            lambda d: not _missing(d, texts, selectors))
    except TimeoutException as error:
        missing = ", ".join(_missing(driver, texts, selectors))
        shown = " ".join(_visible_text(driver).split())[:400]
        raise ScreenshotError(f"{page} ({url}): still missing after {timeout_s:.0f} s: "
                              f"{missing}. The page showed: {shown!r}") from error
    driver.execute_script("return document.fonts ? document.fonts.ready.then(() => true) : true")
    time.sleep(SETTLE_S)


def _save(driver: Any, path: Path) -> Path:
    """The viewport as an optimised PNG."""
    from io import BytesIO

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    image.save(path, format="PNG", optimize=True)
    log.info("wrote %s (%d KB)", path, path.stat().st_size // 1024)
    return path


def _close_mlflow_assistant(driver: Any) -> bool:
    """MLflow 3 opens its assistant panel on a first visit; close it (best effort) so the model
    page gets the width. Whether it was closed."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    close = ("//*[normalize-space(text())='MLflow Assistant']"
             "/ancestor::*[.//button[@aria-label='Close']][1]//button[@aria-label='Close']")
    try:
        buttons = [b for b in driver.find_elements(By.XPATH, close) if b.is_displayed()]
        for button in buttons:
            button.click()
        return bool(buttons)
    except WebDriverException as error:
        log.warning("could not close the MLflow assistant panel: %s", error.msg)
        return False


# --- the three screenshots ----------------------------------------------------------------------

def take_screenshots(prefect_ui: str, mlflow_ui: str, out_dir: Path,
                     model: str = MODEL_NAME) -> list[Path]:
    """Screenshots of the running stack into ``out_dir``: the Prefect deployments list, the
    latest completed nightly flow run and the MLflow page of ``model``. Returns the PNG paths
    (``FILES``' names, in that order)."""
    prefect_ui = _local(prefect_ui, "Prefect UI")
    mlflow_ui = _local(mlflow_ui, "MLflow UI")
    out_dir = Path(out_dir)
    deployments, nightly, run = _prefect_targets(f"{prefect_ui}/api")
    versions, aliases = _mlflow_targets(mlflow_ui, model)
    flow, name = NIGHTLY
    shots: list[Path] = []
    with _browser() as driver:
        # A deployment list row per deployment; a schedule tag proves the schedules column.
        _open(driver, "Prefect deployments list", f"{prefect_ui}/deployments",
              [d["name"] for d in deployments],
              [".deployment-schedule-tags__tag"]
              if any(d.get("schedules") for d in deployments) else [])
        shots.append(_save(driver, out_dir / FILES["deployments"]))

        _open(driver, f"Prefect flow run {run['name']} of {flow}/{name}",
              f"{prefect_ui}/runs/flow-run/{run['id']}",
              [run["name"], "Completed", name, flow],
              [".state-badge", ".log-row"])
        driver.execute_script("window.scrollTo(0, 0)")
        shots.append(_save(driver, out_dir / FILES["nightly_run"]))

        model_page = f"MLflow registered model {model!r}"
        model_url = f"{mlflow_ui}/#/models/{quote(model)}"
        wanted = [*(f"Version {v}" for v in versions), *(f"@ {a}" for a in aliases)]
        _open(driver, model_page, model_url, wanted)
        if _close_mlflow_assistant(driver):
            time.sleep(SETTLE_S)  # the versions table takes the freed width
        shots.append(_save(driver, out_dir / FILES["model"]))
    return shots


@dataclass
class DashboardTour:
    """What a tour of the dashboard did and saw."""

    shots: list[Path] = field(default_factory=list)
    labelled: int = 0                # photos labelled on the Review page
    identified: str | None = None    # the label the Identify page gave the uploaded photo
    promoted: int | None = None      # the version promoted on the Model page


def tour_dashboard(dashboard: str, photo: Path, out_dir: Path, reviewer: str = "",
                   labels: int = 0, promote: bool = False) -> DashboardTour:
    """Every page of a running ``meterid dashboard`` in a browser, as a person uses it, with a
    screenshot of each (``DASHBOARD_PAGES``' names): with ``reviewer``, label up to ``labels``
    photos of the review queue (each the first candidate the page offers); upload ``photo`` on
    Identify and read its label; with ``promote``, promote the version the Model page offers."""
    dashboard = _local(dashboard, "dashboard")
    if not Path(photo).is_file():
        raise ScreenshotError(f"--photo {photo}: no such file")
    tour = DashboardTour()
    with _browser() as driver:
        _open(driver, "dashboard Review", f"{dashboard}/", ["Review", "Your name"])  # the default
        if reviewer:
            _type(driver, "Your name (kept with each label)", reviewer)
            _wait_any(driver, "dashboard Review", ("photos labelled by you", "Nothing waits",
                                                   "No photo waits"))
            tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES["review"]))
            tour.labelled = _label(driver, labels)
        else:
            tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES["review"]))
        _open(driver, "dashboard Nightly results", f"{dashboard}/results", ["Nightly results"])
        tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES["results"]))
        tour.identified = _identify(driver, dashboard, photo)
        tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES["identify"]))
        for page, title in (("clusters", "Clusters"), ("data", "Data"), ("retrain", "Retrain")):
            _open(driver, f"dashboard {title}", f"{dashboard}/{page}", [title])
            tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES[page]))
        _open(driver, "dashboard Model", f"{dashboard}/model", ["Model", "Auto-accept"])
        if promote:
            tour.promoted = _promote(driver, reviewer or "meterid")
        tour.shots.append(_save(driver, out_dir / DASHBOARD_PAGES["model"]))
    return tour


def _element(driver: Any, xpath: str, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(
            expected_conditions.element_to_be_clickable(("xpath", xpath)))
    except TimeoutException as error:
        shown = " ".join(_visible_text(driver).split())[:400]
        raise ScreenshotError(f"dashboard: no {what} after {PAGE_TIMEOUT_S:.0f} s. The page "
                              f"showed: {shown!r}") from error


def _type(driver: Any, label: str, text: str) -> None:
    """Type into a Streamlit text input and press Enter (Streamlit reads it then)."""
    from selenium.common.exceptions import (
        ElementNotInteractableException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.common.keys import Keys

    for attempt in range(5):  # a rerun may replace the input while it is typed into
        field_ = _element(driver, f"//input[@aria-label={_quoted(label)}]", f"input {label!r}")
        try:
            field_.clear()
            field_.send_keys(text, Keys.ENTER)
            return
        except (ElementNotInteractableException, StaleElementReferenceException):
            if attempt == 4:
                raise
            time.sleep(1.0)


def _click(driver: Any, label: str) -> None:
    _element(driver, f"//button[normalize-space(.)={_quoted(label)}]", f"button {label!r}"
             ).click()


def _quoted(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


def _label(driver: Any, count: int) -> int:
    """Label up to ``count`` queued photos, each as the first candidate offered (a verdict
    when none is); returns how many were labelled."""
    from selenium.webdriver.common.by import By

    done = 0
    while done < count and "photos labelled by you" in _visible_text(driver):
        if "Nothing waits for you" in _visible_text(driver):
            break
        progress = re.search(r"(\d+) of (\d+) photos labelled", _visible_text(driver))
        before = progress.group(0) if progress else ""
        buttons = (driver.find_elements(By.CSS_SELECTOR, "div[class*='st-key-pick-'] button")
                   or driver.find_elements(By.CSS_SELECTOR,
                                           "div[class*='st-key-verdict-'] button"))
        if not buttons:
            raise ScreenshotError("dashboard Review: a queued photo without label buttons")
        buttons[0].click()
        _wait_until(driver, "dashboard Review", functools.partial(_changed, before))
        done += 1
    return done


def _changed(before: str, text: str) -> bool:
    return before not in text


def _identify(driver: Any, dashboard: str, photo: Path) -> str:
    """Upload ``photo`` on Identify as a user drops a file; the label the page shows."""
    from selenium.webdriver.common.by import By

    _open(driver, "dashboard Identify", f"{dashboard}/identify", ["Identify", "Photo"])
    driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        str(Path(photo).resolve()))
    _wait_any(driver, "dashboard Identify", IDENTIFIED)
    driver.execute_script("window.scrollTo(0, 0)")
    headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h3") if h.text.strip()]
    if not headings:
        raise ScreenshotError("dashboard Identify: the photo was scored but no label shown")
    return headings[0].strip()


def _promote(driver: Any, who: str) -> int:
    """Promote the version the Model page offers first; returns it."""
    _element(driver, "//summary[contains(normalize-space(.), 'Promote a version to champion')]",
             "the promotion expander").click()
    _type(driver, "Your name (kept in the version's tags)", who)
    button = _element(driver, "//button[starts-with(normalize-space(.), 'Promote version ')]",
                      "button 'Promote version N'")
    version = int(button.text.split()[-1])
    button.click()
    _wait_any(driver, "dashboard Model", ("Sure?",))
    _click(driver, "Yes, promote")
    _wait_any(driver, "dashboard Model", (f"version {version} is champion",))
    return version


def _wait_until(driver: Any, page: str, shown: Callable[[str], bool]) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: shown(_visible_text(d)))
    except TimeoutException as error:
        raise ScreenshotError(f"{page}: the page did not change after "
                              f"{PAGE_TIMEOUT_S:.0f} s") from error
    time.sleep(SETTLE_S)


def _wait_any(driver: Any, page: str, texts: Sequence[str]) -> None:
    """Until one of ``texts`` is visible (a rerun of a Streamlit page, not a page load)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: any(t in _visible_text(d) for t in texts))
    except TimeoutException as error:
        shown = " ".join(_visible_text(driver).split())[:400]
        raise ScreenshotError(f"{page}: none of {list(texts)} after {PAGE_TIMEOUT_S:.0f} s. "
                              f"The page showed: {shown!r}") from error
    time.sleep(SETTLE_S)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meterid.serve.screenshots",
        description="Screenshots of the Prefect and MLflow UIs of a running `meterid serve` "
                    "(the README's images): deployments, the latest completed nightly run, "
                    "the meterid model's versions and aliases.")
    parser.add_argument("--prefect-ui", default="http://127.0.0.1:4200",
                        help="the Prefect UI (default %(default)s)")
    parser.add_argument("--mlflow-ui", default="http://127.0.0.1:5000",
                        help="the MLflow UI (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"),
                        help="folder for the PNGs (default %(default)s)")
    parser.add_argument("--model", default=MODEL_NAME,
                        help="registered model to show (default %(default)s)")
    parser.add_argument("--dashboard", help="a running `meterid dashboard` (e.g. "
                        "http://127.0.0.1:8501): also each of its pages")
    parser.add_argument("--photo", type=Path, help="the photo to identify on the dashboard")
    parser.add_argument("--reviewer", default="",
                        help="a name typed on Review, so it shows the first queued photo")
    parser.add_argument("--dashboard-only", action="store_true",
                        help="only the dashboard's pages (no `meterid serve` needed)")
    args = parser.parse_args(argv)
    if args.dashboard and args.photo is None:
        parser.error("--dashboard needs --photo (the photo to identify)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ensure_chromium()
        paths = ([] if args.dashboard_only
                 else take_screenshots(args.prefect_ui, args.mlflow_ui, args.out, args.model))
        if args.dashboard:
            paths += tour_dashboard(args.dashboard, args.photo, args.out,
                                    reviewer=args.reviewer).shots
    except ScreenshotError as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    sys.stdout.write("".join(f"{path}\n" for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
