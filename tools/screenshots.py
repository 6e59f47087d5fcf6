"""Screenshots for docs/configure-odoo.md, taken from the running demo in headless Chromium.

Start the demo first (``./dev demo``, which leaves Odoo serving), then::

    .venv/bin/python -m tools.screenshots            # writes docs/img/*.png

It logs in as admin, finds the demo's Graph mail server by JSON-RPC, and drives Debian's Chromium through the
system chromedriver (selenium; nothing is downloaded). Every step waits for the element it shows. Written for
Odoo 18.0 (``/odoo/...`` client URLs, as in 19.0; 17.0's ``/web#`` URLs are not handled). Clicking
"Authenticate with Microsoft" signs the demo mailbox in again at the fake Microsoft, and "Send Test Email" sends
one more mail through it; ``--no-actions`` skips both and "Test Connection".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

import requests
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tools.demo import Odoo, step

REPO = Path(__file__).resolve().parent.parent
SERVER_LIST_ACTION = "action-base.action_ir_mail_server_list"
LOG_LIST_ACTION = "action-mail_graph_api.action_mail_graph_api_log"
TIMEOUT = 30
# What an administrator types for a new server (the placeholders' examples; never saved).
EXAMPLE = {
    "graph_client_id": "2f9b8c7d-6e5a-4b3c-8d2e-1f0a9b8c7d6e",
    "graph_client_secret": "Qx8~example-secret-value",
    "graph_tenant_id": "7a3c6f0e-2b1d-4e5f-9a8b-0c1d2e3f4a5b",
    "graph_sender_email": "sales@contoso.com",
}


class Browser:
    """Headless Chromium at a fixed viewport, with waits on what Odoo renders."""

    def __init__(self, url: str, chromium: str, chromedriver: str, width: int, height: int, out: Path):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in (
            "--headless=new",
            "--no-sandbox",  # the demo machine runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--lang=en-US",
            f"--window-size={width},{height}",
        ):
            options.add_argument(argument)
        # An explicit chromedriver: selenium must not look for (or download) one of its own.
        self.driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        self.url, self.width, self.height, self.out = url, width, height, out
        self.resize(height)
        self.saved: List[Path] = []

    def resize(self, height: int) -> None:
        """An exact viewport (the window size of headless Chromium includes no toolbar, but be sure)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def open(self, path: str) -> None:
        self.driver.get(self.url + path)

    def wait(self, css: str, text: Optional[str] = None, timeout: float = TIMEOUT) -> WebElement:
        """The first visible element matching css (and containing text), once it is there."""

        def find(driver) -> Optional[WebElement]:
            for element in driver.find_elements(By.CSS_SELECTOR, css):
                try:
                    if element.is_displayed() and (text is None or text in element.text):
                        return element
                except WebDriverException:  # re-rendered meanwhile: look again
                    continue
            return None

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(find)
        except TimeoutException:
            shot = Path(tempfile.gettempdir()) / "screenshots-timeout.png"
            self.driver.save_screenshot(str(shot))
            raise TimeoutException(
                f"nothing matched {css!r}{f' with {text!r}' if text else ''} at {self.driver.current_url} "
                f"after {timeout} s (screenshot {shot})"
            ) from None

    def maybe(self, css: str, text: Optional[str] = None, timeout: float = 5) -> Optional[WebElement]:
        """Like wait, for what Odoo shows only sometimes: None when it does not come."""
        try:
            return self.wait(css, text, timeout)
        except TimeoutException:
            return None

    def until(self, condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(lambda _driver: condition())
        except TimeoutException:
            raise TimeoutException(f"{what}: not reached after {timeout} s at {self.driver.current_url}") from None

    def click(self, css: str, text: Optional[str] = None) -> None:
        element = self.wait(css, text)
        self.until(element.is_enabled, f"{css} enabled")
        element.click()

    def settle(self, blur: bool = True) -> None:
        """Wait until Odoo is idle: page loaded, fonts ready, no RPC in flight, no UI block."""
        self.until(
            lambda: self.driver.execute_script(
                "return document.readyState === 'complete' && document.fonts.status === 'loaded'"
                " && !document.querySelector('.o_loading_indicator, .o_blockUI')"
            ),
            "Odoo idle",
        )
        # No caret or focus ring in the picture; no tooltip left by the last click (open dropdowns stay).
        self.driver.execute_script(
            "if (arguments[0] && document.activeElement) { document.activeElement.blur(); }"
            "document.querySelectorAll('.o-tooltip').forEach((e) => (e.closest('.o_popover') || e).remove());",
            blur,
        )
        # Let the last frame paint (two animation frames: layout after the last DOM change is on screen).
        self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "requestAnimationFrame(() => requestAnimationFrame(() => done(true)));"
        )

    def fit_height(self, css: str = ".o_content", limit: int = 1600) -> None:
        """Grow the viewport so that the scrolling area of the action shows whole (up to limit pixels)."""
        needed = self.driver.execute_script(
            "const area = document.querySelector(arguments[0]);"
            "if (!area) { return 0; }"
            "return Math.ceil(area.getBoundingClientRect().top + area.scrollHeight);",
            css,
        )
        self.resize(min(max(self.height, needed), limit))

    def shoot(self, name: str, settle: bool = True, blur: bool = True) -> None:
        if settle:
            self.settle(blur)
        path = self.out / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.saved.append(path)
        print(f"    saved {path}", flush=True)

    def quit(self) -> None:
        self.driver.quit()


def login(browser: Browser, db: str, user: str, password: str) -> None:
    browser.open(f"/web/login?db={db}")
    browser.wait("input[name=login]").send_keys(user)
    browser.wait("input[name=password]").send_keys(password)
    browser.click(".oe_login_form button[type=submit]")
    browser.wait(".o_main_navbar")


def form_tab(browser: Browser, name: str) -> None:
    browser.click(f".o_notebook_headers a[name={name}]")
    browser.wait(f".o_notebook_headers a[name={name}].active")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8069", help="the running demo Odoo")
    parser.add_argument("--db", default="mail_graph_demo", help="the demo's database")
    parser.add_argument("--login", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument(
        "--no-actions", action="store_true", help="no sign-in, Test Connection or test mail: only look at the records"
    )
    args = parser.parse_args()
    url = args.url.rstrip("/")
    args.out.mkdir(parents=True, exist_ok=True)

    step(f"Finding the demo's Graph mail server on {url} (database {args.db})")
    try:
        rpc = Odoo(url, args.db)
        rpc.login(args.login, args.password)
    except requests.RequestException as error:
        sys.exit(f"No Odoo at {url} ({error}): start the demo first with ./dev demo")
    servers = rpc.call(
        "ir.mail_server",
        "search_read",
        [("use_graph_api", "=", True)],
        ["name", "graph_connection_state"],
        order="id",
        limit=1,
    )
    if not servers:
        sys.exit("No mail server with Use Microsoft Graph API on: is this the demo's database?")
    server = servers[0]
    print(f"    #{server['id']} {server['name']}: {server['graph_connection_state']}")

    step(f"Starting headless Chromium ({args.width}x{args.height})")
    browser = Browser(url, args.chromium, args.chromedriver, args.width, args.height, args.out)
    try:
        login(browser, args.db, args.login, args.password)
        shoot_all(browser, server["id"], args.no_actions)
    finally:
        browser.quit()
    step(f"{len(browser.saved)} screenshots in {args.out}")
    return 0


def shoot_all(browser: Browser, server_id: int, no_actions: bool) -> None:
    server_form = f"/odoo/{SERVER_LIST_ACTION}/{server_id}?debug=1"

    step("Apps: the addon, once the apps list is updated")
    browser.open("/odoo/action-base.open_module_tree?debug=1")
    search = browser.wait(".o_searchview_input")
    for remove in browser.driver.find_elements(By.CSS_SELECTOR, ".o_searchview_facet .o_facet_remove"):
        remove.click()  # the default "Apps" filter hides modules that are not applications
    browser.until(
        lambda: not browser.driver.find_elements(By.CSS_SELECTOR, ".o_searchview_facet"), "search filters removed"
    )
    search.send_keys("Microsoft Graph", Keys.ENTER)
    browser.wait(".o_searchview_facet", "Microsoft Graph")
    browser.wait(".o_kanban_record", "Microsoft Graph Mail Gateway")
    browser.until(
        lambda: len(browser.driver.find_elements(By.CSS_SELECTOR, ".o_kanban_record:not(.o_kanban_ghost)")) == 1,
        "only the addon listed",
    )
    browser.shoot("apps-module")

    step("Settings > Technical: the Email menu")
    browser.open("/odoo/settings?debug=1")
    browser.wait(".o_setting_container, .settings")
    browser.click(".o_main_navbar .o_menu_sections .dropdown-toggle", "Technical")
    item = browser.wait(".o-dropdown--menu .dropdown-item", "Graph API Logs")
    # The menu is taller than the window: scroll it to the Email section, point at the addon's entry.
    browser.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", item)
    ActionChains(browser.driver).move_to_element(item).perform()
    browser.shoot("technical-email-menu", blur=False)

    step("Outgoing Mail Servers (list)")
    browser.open(f"/odoo/{SERVER_LIST_ACTION}?debug=1")
    browser.wait(".o_list_view .o_data_row")
    browser.shoot("outgoing-mail-servers-list")

    step("A new server being filled in (not saved)")
    browser.open(f"/odoo/{SERVER_LIST_ACTION}/new?debug=1")
    browser.wait(".o_form_view div[name=name] input").send_keys("Microsoft 365 (Graph)")
    browser.click(".o_form_view div[name=use_graph_api] input")
    # The toggle saves at once, which a new record cannot do yet: Odoo lists the required Graph fields.
    notification = browser.maybe(".o_notification", "Invalid fields")
    if notification:
        notification.find_element(By.CSS_SELECTOR, ".o_notification_close").click()
    form_tab(browser, "graph")
    for field, value in EXAMPLE.items():
        browser.wait(f".o_form_view div[name={field}] input").send_keys(value)
    browser.wait(".o_form_view div[name=graph_sender_email] input").send_keys(Keys.TAB)  # the FROM onchange
    browser.until(
        lambda: browser.driver.find_element(By.CSS_SELECTOR, "div[name=from_filter] input").get_attribute("value"),
        "FROM Filtering filled from the Sender Email",
    )
    browser.until(
        lambda: not browser.driver.find_elements(By.CSS_SELECTOR, ".o_notification, .o_field_invalid"),
        "no invalid field left",
    )
    browser.shoot("mail-server-new")
    browser.click(".o_form_button_cancel")  # discard: the demo's server stays the only one
    browser.until(lambda: "/new" not in browser.driver.current_url, "new record discarded")

    if not no_actions:
        step("Authenticate with Microsoft: the fake consents and sends the browser to the callback page")
        browser.open(server_form)
        browser.click(".o_form_statusbar button[name=action_graph_authenticate]")
        browser.wait(".o_mail_graph_api_result", "Connected to Microsoft")
        browser.shoot("oauth-callback-success")
        browser.click("a.o_mail_graph_api_back")
        browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")

    step("The Graph mail server: Microsoft Graph tab")
    browser.open(server_form)
    browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")
    form_tab(browser, "graph")
    browser.wait("div[name=graph_client_id]")
    browser.shoot("mail-server-form")
    browser.fit_height()
    browser.shoot("mail-server-form-full")
    browser.resize(browser.height)

    if not no_actions:
        step("Test Connection")
        browser.click(".o_form_statusbar button[name=test_smtp_connection]")
        browser.wait(".o_notification", "Connection to Microsoft Graph successful")
        # Notifications close after a few seconds: shoot at once, the page is already idle.
        browser.shoot("test-connection-success", settle=False)
        browser.until(
            lambda: not browser.driver.find_elements(By.CSS_SELECTOR, ".o_notification"),
            "notification closed",
        )

        step("Send Test Email")
        browser.click(".o_form_statusbar button[name=action_graph_send_test_email]")
        browser.wait(".o_notification", "Test mail sent to")
        browser.shoot("send-test-email-success", settle=False)

    step("The Graph mail server: Graph API Logs tab")
    browser.open(server_form)
    browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")
    form_tab(browser, "graph_logs")
    browser.wait(".o_form_view div[name=graph_log_ids] .o_data_row")
    browser.shoot("mail-server-logs-tab")

    step("Settings > Technical > Email > Graph API Logs")
    browser.open(f"/odoo/{LOG_LIST_ACTION}?debug=1")
    browser.wait(".o_list_view .o_data_row")
    browser.shoot("graph-api-logs-list")


if __name__ == "__main__":
    sys.exit(main())
