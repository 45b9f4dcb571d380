"""Write a PNG of the inspector page with a few calls, for a reviewer to look at.

    python scripts/inspector_screenshot.py [inspector.png] [--width 1280] [--height 900]

Starts a listener on a free port, makes calls of every kind (one rejected), opens
``/_opcli/`` in headless Chromium (Debian's ``chromium`` and ``chromium-driver``, with
Selenium), opens the first message and saves the screenshot. The browser tests share
``chromium()`` from here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("chromedriver",)


def missing_browser() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if not any(shutil.which(name) for name in CHROMEDRIVER):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return None


def chromium(width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium under Selenium, with a fresh profile; quit() it when done (it removes the profile)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    why = missing_browser()
    if why:
        raise RuntimeError(why)
    profile = tempfile.mkdtemp(prefix="opcli-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in CHROMIUM if shutil.which(n))
    # as root in a container, with no internet: no sandbox, no GPU, no shared memory, no calls home
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=next(shutil.which(n) for n in CHROMEDRIVER if shutil.which(n)))
    driver = webdriver.Chrome(options=options, service=service)
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        quit_driver()
        shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def make_calls(listener: Any, files: Path) -> None:
    """A few calls of every kind through opcli's own client, one of them rejected."""
    import httpx

    from opcli.client import deliver, message_sent, webhook
    from opcli.protocol import make_photos

    site = listener.site
    photo = files / "holiday.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 a small test picture" * 40)
    photos = make_photos([("https://cdn.example.com/p/1.jpg", "https://cdn.example.com/p/1_200.jpg")])
    with httpx.Client(timeout=10) as http:
        deliver(site, message_sent(site, 42, 7, "Hello! Are you there tonight?"), http=http)
        deliver(site, webhook(site, "user_info", [("user_id", "42")]), http=http)
        deliver(site, webhook(site, "user_media", [("user_id", "42")]), http=http)
        deliver(site, message_sent(site, 42, 7, "Here is a photo from my trip", photos, photo), http=http)
        deliver(
            site,
            webhook(site, "send_message", [("user_id", "7"), ("contact_id", "42"), ("message", "Lovely!")]),
            http=http,
        )
        deliver(site, webhook(site, "user_info", [("user_id", "abc")]), http=http)  # rejected: 422
        deliver(site, message_sent(site, 1001, 7, "Hi from another user"), http=http)


def shoot(driver: Any, path: Path) -> Path:
    """Start a listener, make the calls, open the page and the first message; write the PNG to ``path``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from opcli.listener import ListenerThread

    until = WebDriverWait(driver, 10, poll_frequency=0.05).until
    with tempfile.TemporaryDirectory() as tmp, ListenerThread(save_dir=Path(tmp)) as listener:
        driver.get(listener.inspector)
        until(lambda d: d.find_element(By.ID, "live").text == "live")
        make_calls(listener, Path(tmp))
        until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tbody.entry")) == len(listener.calls))
        driver.find_element(By.CSS_SELECTOR, 'tr.summary[data-seq="4"]').click()
        until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.open"))
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default="inspector.png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    why = missing_browser()
    if why:
        print(f"inspector_screenshot: {why}", file=sys.stderr)
        return 2
    driver = chromium(args.width, args.height)
    try:
        print(shoot(driver, args.output))
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
