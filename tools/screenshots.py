"""Screenshots for docs/configure-odoo.md, taken from the running demo in headless Chromium.

Start the demo first (``./dev demo``, which leaves Odoo serving), then::

    .venv/bin/python -m tools.screenshots            # writes docs/img/*.png

It logs in as admin, finds the demo's Graph mail server by JSON-RPC, and drives Debian's Chromium through the
system chromedriver (selenium; nothing is downloaded). Every step waits for the element it shows. Written for
Odoo 18.0 (``/odoo/...`` client URLs, as in 19.0; 17.0's ``/web#`` URLs are not handled). Clicking
"Authenticate with Microsoft" signs the demo mailbox in again at the fake Microsoft, and "Send Test Email" sends
one more mail through it; ``--no-actions`` skips both and "Test Connection".

Then the sending limits, the mailbox pool and the alerts (issues #15 and #16): the script creates a second Graph
server in the demo server's pool, puts a client secret expiry 5 days ahead on the demo's server, runs the alerts
cron, and shoots the banner, the Graph Alerts list and the activity it gives the admin; last the Microsoft Graph
type of Incoming Mail Servers with its own app registration (never saved). What it changed on the demo's server
is put back at the end (the second server is archived, kept for the next run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date, timedelta
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
from selenium.webdriver.support.ui import Select, WebDriverWait

from tools.demo import Odoo, step

REPO = Path(__file__).resolve().parent.parent
SERVER_LIST_ACTION = "action-base.action_ir_mail_server_list"
LOG_LIST_ACTION = "action-mail_graph_api.action_mail_graph_api_log"
ALERT_LIST_ACTION = "action-mail_graph_api.action_mail_graph_alert"
INCOMING_LIST_ACTION = "action-mail.action_email_server_tree"
# The second server of the demo's mailbox pool (issue #15), created by the script and archived at its end.
POOL = "Contoso"
POOL_SERVER = {"name": "Contoso Sales (Graph)", "graph_sender_email": "sales@contoso.onmicrosoft.com"}
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

    def park_mouse(self) -> None:
        """The pointer out of the page (above its top left corner): no hover effect (an underlined field, a
        darker button or list row) in the picture. Chromium then sends the page mouseleave, so nothing is under
        the pointer; any point inside the page is over something in one view or another."""
        self.driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": -1, "y": -1})

    def settle(self, blur: bool = True, park: Optional[bool] = None) -> None:
        """Wait until Odoo is idle: page loaded, fonts ready, no RPC in flight, no UI block, no animation (a
        notification fading in, a hover effect fading out) under way. park (default: as blur) moves the pointer
        off the content first."""
        if blur if park is None else park:
            self.park_mouse()
        self.until(
            lambda: self.driver.execute_script(
                "return document.readyState === 'complete' && document.fonts.status === 'loaded'"
                " && !document.querySelector('.o_loading_indicator, .o_blockUI')"
                " && document.getAnimations().every((a) => a.playState !== 'running'"
                " || a.effect.getComputedTiming().iterations === Infinity)"
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

    def fit_height(self, css: str = ".o_content", limit: int = 2400) -> None:
        """Grow the viewport so that the scrolling area of the action shows whole (up to limit pixels)."""
        needed = self.driver.execute_script(
            "const area = document.querySelector(arguments[0]);"
            "if (!area) { return 0; }"
            "return Math.ceil(area.getBoundingClientRect().top + area.scrollHeight);",
            css,
        )
        self.resize(min(max(self.height, needed), limit))

    def show_down_to(self, element: WebElement, below: int = 0, limit: int = 2400) -> None:
        """Grow the viewport so that it shows element and below pixels under it (up to limit pixels)."""
        needed = self.driver.execute_script(
            "return Math.ceil(arguments[0].getBoundingClientRect().bottom + arguments[1]);", element, below
        )
        self.resize(min(max(self.height, needed), limit))

    def shoot(self, name: str, settle: bool = True, blur: bool = True, park: Optional[bool] = None) -> None:
        if settle:
            self.settle(blur, park)
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
        shoot_all(browser, rpc, server["id"], args.no_actions)
    finally:
        browser.quit()
    step(f"{len(browser.saved)} screenshots in {args.out}")
    return 0


def shoot_all(browser: Browser, rpc: Odoo, server_id: int, no_actions: bool) -> None:
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
    # The search applied: only the addon is listed, and its 14.0/15.0 bridge mail_graph_api_fetchmail (listed on
    # every series, installable only where Odoo's fetchmail module exists).
    browser.until(
        lambda: all(
            "Microsoft Graph Mail Gateway" in card.text
            for card in browser.driver.find_elements(By.CSS_SELECTOR, ".o_kanban_record:not(.o_kanban_ghost)")
        ),
        "only the addon (and its bridge) listed",
    )
    # The category counters of the side panel come by another call, which can end after the cards: wait until
    # they count the modules found (2), not those of every module listed before the search.
    browser.until(
        lambda: browser.driver.execute_script(
            "const cards = document.querySelectorAll('.o_kanban_record:not(.o_kanban_ghost)').length;"
            "return [...document.querySelectorAll('.o_search_panel .o_search_panel_counter')]"
            ".every((counter) => parseInt(counter.textContent.replace(/\\D/g, ''), 10) <= cards);"
        ),
        "search panel counters of the search",
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
        shoot_notification(browser, "test-connection-success", "Connection to Microsoft Graph successful")

        step("Send Test Email")
        browser.click(".o_form_statusbar button[name=action_graph_send_test_email]")
        shoot_notification(browser, "send-test-email-success", "Test mail sent to")

    step("The Graph mail server: Graph API Logs tab")
    browser.open(server_form)
    browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")
    form_tab(browser, "graph_logs")
    browser.wait(".o_form_view div[name=graph_log_ids] .o_data_row")
    # The newest rows are the demo's bounce fetch and this run's calls: show down to the 40 MB mail's "send"
    # and the first three of its uploadChunk rows (the calls of a large mail), as the documentation says.
    operations = browser.driver.find_elements(
        By.CSS_SELECTOR, ".o_form_view div[name=graph_log_ids] .o_data_row td[name=operation]"
    )
    send = next((cell for cell in operations if cell.text.strip() == "send"), None)
    if send is None:
        raise RuntimeError("no 'send' row on the first page of the server's Graph API Logs: is this the demo?")
    browser.show_down_to(send, below=3 * send.size["height"] + 8)
    browser.shoot("mail-server-logs-tab")
    browser.resize(browser.height)

    step("Settings > Technical > Email > Graph API Logs")
    browser.open(f"/odoo/{LOG_LIST_ACTION}?debug=1")
    browser.wait(".o_list_view .o_data_row")
    browser.shoot("graph-api-logs-list")

    # Limits, pool and alerts (issues #15 and #16): these change the demo's server, put back whatever happens.
    before = demo_state(rpc, server_id)
    try:
        shoot_limits_pool(browser, rpc, server_id)
        shoot_alert_banner(browser, rpc, server_id)
        shoot_alerts_list(browser, rpc)
        shoot_activity_alert(browser)
    finally:
        restore_demo(rpc, server_id, before)
    shoot_incoming_own_sign_in(browser)


def shoot_notification(browser: Browser, name: str, text: str) -> None:
    """The notification a server button gives, whole: Odoo closes it after 4 s unless the pointer is on it, so
    the pointer rests on it while the picture waits for its fade-in and for the button's call to end."""
    notification = browser.wait(".o_notification", text)
    body = notification.find_element(By.CSS_SELECTOR, ".o_notification_body")
    ActionChains(browser.driver).move_to_element(body).perform()
    browser.until(
        lambda: not browser.driver.find_elements(By.CSS_SELECTOR, ".o_form_statusbar button:disabled"),
        "the server's buttons enabled again",
    )
    browser.shoot(name, park=False)
    notification.find_element(By.CSS_SELECTOR, ".o_notification_close").click()
    browser.until(
        lambda: not browser.driver.find_elements(By.CSS_SELECTOR, ".o_notification"),
        "notification closed",
    )


def demo_state(rpc: Odoo, server_id: int) -> dict:
    """What the following steps change on the demo's server, and the alerts there were before them."""
    state = rpc.call("ir.mail_server", "read", [server_id], ["graph_secret_expiry", "graph_pool"])[0]
    state["alert_ids"] = rpc.call("mail.graph.alert", "search", [], context={"active_test": False})
    return state


def trigger_alerts_cron(rpc: Odoo) -> None:
    """Run "Microsoft Graph: alerts" now, as its scheduled run would (the demo runs Odoo without cron threads)."""
    cron = rpc.call(
        "ir.model.data",
        "search_read",
        [("module", "=", "mail_graph_api"), ("name", "=", "ir_cron_mail_graph_alerts")],
        ["res_id"],
    )
    if not cron:
        raise RuntimeError("no cron mail_graph_api.ir_cron_mail_graph_alerts: is the addon up to date?")
    rpc.call("ir.cron", "method_direct_trigger", [cron[0]["res_id"]])


def pool_server(rpc: Odoo, server_id: int) -> int:
    """The second server of the demo's pool: application mode, the demo's app and endpoints, another mailbox.
    Reused (and unarchived) when an earlier run created it."""
    demo = rpc.call(
        "ir.mail_server",
        "read",
        [server_id],
        [
            "graph_client_id",
            "graph_client_secret",
            "graph_tenant_id",
            "graph_cloud",
            "graph_authority_url",
            "graph_api_url",
        ],
    )[0]
    values = {
        **POOL_SERVER,
        "use_graph_api": True,
        "graph_auth_mode": "application_secret",
        "graph_client_id": demo["graph_client_id"],
        "graph_client_secret": demo["graph_client_secret"],
        "graph_tenant_id": demo["graph_tenant_id"],
        "graph_cloud": demo["graph_cloud"],
        "graph_authority_url": demo["graph_authority_url"],
        "graph_api_url": demo["graph_api_url"],
        "graph_pool": POOL,
        "active": True,
    }
    found = rpc.call(
        "ir.mail_server", "search", [("name", "=", POOL_SERVER["name"])], limit=1, context={"active_test": False}
    )
    if found:
        rpc.call("ir.mail_server", "write", found, values)
        return found[0]
    return rpc.call("ir.mail_server", "create", values)


def shoot_limits_pool(browser: Browser, rpc: Odoo, server_id: int) -> None:
    step("Limits and timeouts: sending limits, today's use, alert thresholds, the mailbox pool")
    second = pool_server(rpc, server_id)
    rpc.call("ir.mail_server", "write", [server_id], {"graph_pool": POOL})
    print(f"    #{second} {POOL_SERVER['name']} ({POOL_SERVER['graph_sender_email']}) shares pool {POOL!r}")
    browser.open(f"/odoo/{SERVER_LIST_ACTION}/{server_id}?debug=1")
    browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")
    form_tab(browser, "graph")
    browser.wait(".o_form_view div[name=graph_pool_usage]", "2 mailboxes")
    browser.wait(".o_form_view div[name=graph_usage_percent] .o_progressbar")
    browser.wait(".o_form_view div[name=graph_rate_limit]")
    # The group is below the fold: its title at the top of the scrolling area, a little air above it. (Found
    # by one of its fields: the title is shown upper-case.)
    browser.driver.execute_script(
        "const group = document.querySelector('.o_form_view div[name=graph_rate_limit]').closest('.o_inner_group');"
        "const area = document.querySelector('.o_content');"
        "area.scrollTop += group.getBoundingClientRect().top - area.getBoundingClientRect().top - 16;"
    )
    browser.shoot("mail-server-limits-pool")


def shoot_alert_banner(browser: Browser, rpc: Odoo, server_id: int) -> None:
    step("The alert banner: the client secret expires in 5 days")
    expiry = (date.today() + timedelta(days=5)).isoformat()
    rpc.call("ir.mail_server", "write", [server_id], {"graph_secret_expiry": expiry})
    browser.open(f"/odoo/{SERVER_LIST_ACTION}/{server_id}?debug=1")
    browser.wait(".o_form_view .o_mail_graph_api_state", "Connected")
    browser.wait(".o_form_view div.alert.alert-warning div[name=graph_alert_text]", "in 5 days")
    browser.shoot("mail-server-alert-banner")


def shoot_alerts_list(browser: Browser, rpc: Odoo) -> None:
    step("The alerts cron, then Settings > Technical > Email > Graph Alerts")
    trigger_alerts_cron(rpc)
    browser.open(f"/odoo/{ALERT_LIST_ACTION}?debug=1")
    browser.wait(".o_list_view .o_data_row", "in 5 days")
    browser.shoot("graph-alerts-list")


def shoot_activity_alert(browser: Browser) -> None:
    step("The alert's to-do for the administrator: the activity menu")
    browser.open(f"/odoo/{ALERT_LIST_ACTION}?debug=1")  # over the alert it comes from
    browser.wait(".o_list_view .o_data_row", "in 5 days")
    browser.wait(".o_menu_systray .o-mail-ActivityMenu-counter")  # the count comes with the session's data
    browser.click(".o_menu_systray button:has(> i.fa-clock-o)")
    browser.wait(".o-mail-ActivityMenu .o-mail-ActivityGroup", "Microsoft Graph alert")
    browser.shoot("activity-alert", blur=False)  # a blur must not close the menu
    browser.driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)


def restore_demo(rpc: Odoo, server_id: int, before: dict) -> None:
    """The demo's server as it was (its secret expiry and pool as read before: empty in the demo), the second
    server archived (kept: the next run reuses it). The alerts cron then closes the alert and removes its
    activity; the alerts raised here are deleted, so the demo is left as it was."""
    step("Putting the demo's server back as it was")
    rpc.call(
        "ir.mail_server",
        "write",
        [server_id],
        {"graph_secret_expiry": before["graph_secret_expiry"], "graph_pool": before["graph_pool"]},
    )
    second = rpc.call("ir.mail_server", "search", [("name", "=", POOL_SERVER["name"])], context={"active_test": False})
    if second:
        rpc.call("ir.mail_server", "write", second, {"active": False})
    trigger_alerts_cron(rpc)
    raised = rpc.call(
        "mail.graph.alert", "search", [("id", "not in", before["alert_ids"])], context={"active_test": False}
    )
    if raised:
        rpc.call("mail.graph.alert", "unlink", raised)
    print(
        f"    secret expiry and pool restored, #{second[0] if second else '-'} archived, {len(raised)} alert(s) removed"
    )


def shoot_incoming_own_sign_in(browser: Browser) -> None:
    step("Incoming Mail Servers: a new Microsoft Graph server with its own app registration (not saved)")
    browser.open(f"/odoo/{INCOMING_LIST_ACTION}/new?debug=1")
    browser.wait(".o_form_view div[name=name] input").send_keys("Support mailbox (Graph)")
    browser.click(".o_form_view div[name=server_type] input[data-value=graph]")  # a radio in 18.0
    browser.click(".o_form_view div[name=graph_credentials] input[data-value=own]")
    Select(browser.wait(".o_form_view div[name=graph_own_auth_mode] select")).select_by_visible_text(
        "Delegated (sign in as the mailbox)"
    )
    own = {
        "graph_own_client_id": EXAMPLE["graph_client_id"],
        "graph_own_tenant_id": EXAMPLE["graph_tenant_id"],
        "graph_own_client_secret": EXAMPLE["graph_client_secret"],
        "graph_own_mailbox": "support@contoso.com",  # a mailbox that receives (aliases, new records)
    }
    for field, value in own.items():
        browser.wait(f".o_form_view div[name={field}] input").send_keys(value, Keys.TAB)
    for field, value in own.items():  # each onchange has kept what was typed
        browser.until(
            lambda field=field, value=value: (
                browser.driver.find_element(By.CSS_SELECTOR, f".o_form_view div[name={field}] input").get_attribute(
                    "value"
                )
                == value
            ),
            f"{field} filled in",
        )
    browser.shoot("incoming-server-own-sign-in")
    browser.click(".o_form_button_cancel")  # discard: nothing is created
    browser.until(lambda: "/new" not in browser.driver.current_url, "new record discarded")


if __name__ == "__main__":
    sys.exit(main())
