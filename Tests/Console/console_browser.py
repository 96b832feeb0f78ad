#!/usr/bin/env python3
"""The operator console in headless Chromium (Debian's chromium + chromium-driver, selenium from PyPI).

Run by Tests/GatewayAPITests/ConsoleBrowserTests.swift against a live API it prepared: one session
(--session) whose jobs all failed and whose engine works again. Exits non-zero on the first
failed check, saying which. Saves a PNG of each page into --screenshots.
"""
import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

PAGES = ["/console", "/console/sessions", "/console/jobs", "/console/failures", "/console/stream", "/console/jobs/1",
         "/console/overview/fragment", "/console/stream/events?cursor=0.0"]
ACTIONS = ["/console/actions/plan", "/console/actions/run", "/console/sessions/s1/pause", "/console/jobs/1/body", "/console/logout"]


def wait(driver, seconds):
    """A wait that looks again when the live page replaced the element it was reading (the
    sessions and stream pages refresh themselves: a stale element failed the test once)."""
    return WebDriverWait(driver, seconds, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))


def live(condition):
    """A wait condition over a page that is being replaced (a form's POST redirecting to a new
    page, or a live page refreshing its table): an element replaced between finding it and reading
    it means look again. Chromium reports that as a stale element or as an inspector error ("Node
    with given id does not belong to the document"), which failed this test once."""
    def look(driver):
        try:
            return condition(driver)
        except StaleElementReferenceException:
            return False
        except WebDriverException as error:
            if "does not belong to the document" in (error.msg or ""):
                return False
            raise
    return look


def check(condition, what):
    if not condition:
        print("FAILED: " + what, flush=True)
        sys.exit(1)
    print("ok: " + what, flush=True)


def raw(base, method, path, body=None, cookie=None, extra=None):
    """One request, redirects not followed: (status, headers, text)."""
    url = urllib.parse.urlparse(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **(extra or {})}
    if cookie:
        headers["Cookie"] = "wa_console=" + cookie
    connection.request(method, path, body=urllib.parse.urlencode(body or {}, doseq=True) if method == "POST" else None, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    return driver


def shot(driver, directory, name):
    """The whole page (up to 2,400 px high), through the DevTools protocol: a headless window is no taller than its screen."""
    height = driver.execute_script("return Math.min(document.documentElement.scrollHeight, 2400)")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": max(700, height), "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.save_screenshot(os.path.join(directory, name + ".png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def login(driver, base, token, name):
    driver.get(base + "/console/login")
    driver.find_element(By.ID, "operator").send_keys(name)
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait(driver, 20).until(lambda d: urllib.parse.urlparse(d.current_url).path == "/console")


def main():
    parser = argparse.ArgumentParser()
    for name in ["base", "token", "org-key", "read-key", "counts", "failed-job", "other-org-job", "session", "failed-count", "screenshots"]:
        parser.add_argument("--" + name, required=True)
    args = parser.parse_args()
    base = args.base
    os.makedirs(args.screenshots, exist_ok=True)

    # Nothing without a login: pages redirect to the login form, actions answer 401.
    for page in PAGES:
        status, headers, _ = raw(base, "GET", page)
        refused = (status == 303 and headers.get("Location") == "/console/login") or status == 401
        check(refused, f"GET {page} without a login is refused ({status})")
    for action in ACTIONS:
        status, _, text = raw(base, "POST", action, {"reason": "x", "action": "replay", "id": "1", "scope": "selection"})
        check(status == 401 and '"unauthorized"' in text, f"POST {action} without a login answers 401 ({status})")
        status, _, _ = raw(base, "POST", action, {"csrf": "0" * 64}, cookie="f" * 64)
        check(status == 401, f"POST {action} with a made-up cookie answers 401 ({status})")
    status, _, _ = raw(base, "POST", "/console/login", {"token": "wrong", "operator": "x"})
    check(status == 401, "a wrong token does not log in")
    status, _, _ = raw(base, "POST", "/console/login", {"token": args.read_key, "operator": "x"})
    check(status == 403, "an API key without 'operate' does not log in")
    # Login CSRF: another site's page posting a valid token signs nobody in.
    for name, extra in [("Sec-Fetch-Site: cross-site", {"Sec-Fetch-Site": "cross-site"}),
                        ("Origin of another host", {"Origin": "http://attacker.example"})]:
        status, headers, _ = raw(base, "POST", "/console/login", {"token": args.token, "operator": "x"}, extra=extra)
        check(status == 403 and "Set-Cookie" not in headers, f"a login posted from another site ({name}) is refused ({status})")
    status, headers, _ = raw(base, "POST", "/console/login", {"token": args.token, "operator": "x"},
                             extra={"Origin": base.rstrip("/"), "Sec-Fetch-Site": "same-origin"})
    check(status == 303 and "Set-Cookie" in headers, f"a login posted from the console's own page signs in ({status})")

    driver = browser()
    try:
        driver.get(base + "/console/jobs")
        check(urllib.parse.urlparse(driver.current_url).path == "/console/login", "the browser lands on the login page")
        shot(driver, args.screenshots, "login")

        login(driver, base, args.token, "ci-operator")
        cookie = driver.get_cookie("wa_console")
        check(cookie is not None and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", "the login cookie is HttpOnly and SameSite=Strict")
        session_cookie = cookie["value"]

        # The overview's counts are the database's.
        expected = json.loads(args.counts)
        for state in ["queued", "running", "succeeded", "failed", "canceled"]:
            shown = driver.find_element(By.CSS_SELECTOR, f'[data-state="{state}"] .value').text.replace(",", "")
            check(shown == str(expected.get(state, 0)), f"overview shows {state} = {expected.get(state, 0)} (page: {shown})")
        check(len(driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline")) == 2, "the overview draws the last hour's chart")
        dispatches = int(driver.find_element(By.ID, "hour-dispatches").text.replace(",", ""))
        check(dispatches == expected.get("succeeded", 0), f"the chart counts the last hour's dispatches ({dispatches})")
        shot(driver, args.screenshots, "overview")

        # An action without its CSRF token, or with a wrong one, is refused even with the login cookie.
        form = {"action": "replay", "reason": "r", "scope": "selection", "id": args.failed_job}
        status, _, text = raw(base, "POST", "/console/actions/run", form, cookie=session_cookie)
        check(status == 403 and '"forbidden"' in text, f"an action without its CSRF token answers 403 ({status})")
        status, _, _ = raw(base, "POST", "/console/actions/run", dict(form, csrf="0" * 64), cookie=session_cookie)
        check(status == 403, f"an action with a wrong CSRF token answers 403 ({status})")
        status, _, _ = raw(base, "POST", "/console/sessions/s1/pause", {"reason": "r"}, cookie=session_cookie)
        check(status == 403, f"a pause without its CSRF token answers 403 ({status})")

        # A failed job's page: its events (queued, failed) and, once the body was opened, its audit trail.
        driver.get(base + f"/console/jobs/{args.failed_job}")
        statuses = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#events-table td .badge")]
        check("queued" in statuses and "failed" in statuses, f"the failed job's page shows its events ({statuses})")
        check(len(driver.find_elements(By.ID, "payload")) == 0, "the body is not shown before the click")
        driver.find_element(By.ID, "show-body").click()
        wait(driver, 20).until(lambda d: d.find_elements(By.ID, "payload"))
        check("console test" in driver.find_element(By.ID, "payload").text, "the body is shown after the click")
        audit = driver.find_element(By.ID, "audit-table").text
        check("view_body" in audit and "ci-operator" in audit, "the job's audit trail shows the audited click")
        shot(driver, args.screenshots, "job")

        driver.get(base + "/console/sessions")
        check(len(driver.find_elements(By.CSS_SELECTOR, "#sessions-table tbody tr")) == 3, "the admin operator sees every session")
        # Pause s2 with a reason, then resume it: both shown and audited.
        driver.find_element(By.ID, "reason-s2").send_keys("maintenance window")
        driver.find_element(By.CSS_SELECTOR, "form[action='/console/sessions/s2/pause'] button").click()
        wait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "p.notice"))
        row = driver.find_element(By.XPATH, "//table[@id='sessions-table']//tr[td[1]='s2']").text
        check("paused" in row and "maintenance window (ci-operator)" in row, f"a paused session shows its state and why ({row!r})")
        shot(driver, args.screenshots, "sessions")
        driver.find_element(By.ID, "reason-s2").send_keys("window over")
        driver.find_element(By.CSS_SELECTOR, "form[action='/console/sessions/s2/resume'] button").click()
        wait(driver, 20).until(live(lambda d: "active" in d.find_element(By.XPATH, "//table[@id='sessions-table']//tr[td[1]='s2']").text))
        driver.get(base + "/console/jobs")
        shot(driver, args.screenshots, "jobs")

        # The live stream, open in a second tab while the replay runs in the first.
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(base + "/console/stream")
        Select(driver.find_element(By.CSS_SELECTOR, "#stream-filters select[name=status]")).select_by_visible_text("sent")
        stream_tab = driver.current_window_handle
        driver.switch_to.window(first)

        # The failures page: the session's group, its jobs; a cancel asks for a reason.
        driver.get(base + "/console/failures")
        groups = driver.find_element(By.ID, "failure-groups").text
        check(args.session in groups and "engine_error" in groups, "the failures page groups the session's failures")
        driver.find_element(By.XPATH, f"//table[@id='failure-groups']//tr[td[3]='{args.session}']//a[text()='show jobs']").click()
        rows = driver.find_elements(By.CSS_SELECTOR, "#jobs-table tbody input[name=id]")
        check(len(rows) == int(args.failed_count), f"the group lists the session's {args.failed_count} failed jobs ({len(rows)})")
        shot(driver, args.screenshots, "failures")
        rows[0].click()
        Select(driver.find_element(By.CSS_SELECTOR, "#selection select[name=action]")).select_by_value("cancel")
        before = driver.current_url
        driver.find_element(By.CSS_SELECTOR, "#selection button[type=submit]").click()
        reason = driver.find_element(By.CSS_SELECTOR, "#selection input[name=reason]")
        check(driver.current_url == before and reason.get_property("validationMessage") != "", "a cancel without a reason is stopped: the form asks for one")
        csrf = driver.find_element(By.CSS_SELECTOR, "#selection input[name=csrf]").get_attribute("value")
        status, _, text = raw(base, "POST", "/console/actions/plan", {"csrf": csrf, "action": "cancel", "scope": "selection", "id": args.failed_job},
                              cookie=session_cookie)
        check(status == 400 and "reason is required" in text, f"the server refuses a cancel without a reason too ({status})")

        # Replay every failed job of the session: the dry run first, then the confirmation.
        driver.find_element(By.CSS_SELECTOR, "#selection input[name=scope][value=filter]").click()
        Select(driver.find_element(By.CSS_SELECTOR, "#selection select[name=action]")).select_by_value("replay")
        reason.send_keys("token renewed (ci)")
        driver.find_element(By.CSS_SELECTOR, "#selection button[type=submit]").click()
        wait(driver, 20).until(lambda d: d.find_elements(By.ID, "plan-count"))
        check(driver.find_element(By.ID, "plan-count").text == args.failed_count, "the dry run counts the session's failed jobs")
        shot(driver, args.screenshots, "replay-dry-run")
        driver.find_element(By.ID, "confirm").click()
        wait(driver, 20).until(lambda d: d.find_elements(By.ID, "done-count"))
        check(driver.find_element(By.ID, "done-count").text == args.failed_count, "the replay put them back in the queue")

        # The stream shows their 'sent' events as they happen.
        driver.switch_to.window(stream_tab)
        try:
            wait(driver, 60).until(live(lambda d: len([r for r in d.find_elements(By.CSS_SELECTOR, "#stream tbody tr") if args.session in r.text]) >= int(args.failed_count)))
        except TimeoutException:
            check(False, "the live stream shows the replayed jobs' sent events: " + driver.find_element(By.ID, "stream").text)
        check(all("sent" in r.text for r in driver.find_elements(By.CSS_SELECTOR, "#stream tbody tr")), "the stream's status filter holds")
        shot(driver, args.screenshots, "stream")
        driver.close()
        driver.switch_to.window(first)

        # Log out: the cookie's login ends.
        driver.get(base + "/console")
        driver.find_element(By.CSS_SELECTOR, ".who form button").click()
        wait(driver, 20).until(lambda d: urllib.parse.urlparse(d.current_url).path == "/console/login")
        status, _, _ = raw(base, "GET", "/console", cookie=session_cookie)
        check(status == 303, "after logging out the old cookie opens nothing")

        # An operator of org2 (an API key with 'operate') sees org2 only.
        login(driver, base, args.org_key, "")
        check("org2" in driver.find_element(By.CSS_SELECTOR, ".who").text, "the key's operator is limited to its organization")
        driver.get(base + "/console/sessions")
        sessions = driver.find_element(By.ID, "sessions-table").text
        check("s3" in sessions and "s1" not in sessions and "s2" not in sessions, "the org2 operator sees only org2's sessions")
        driver.get(base + "/console/jobs")
        orgs = {row.find_elements(By.TAG_NAME, "td")[2].text for row in driver.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")}
        check(orgs == {"org2"}, f"the org2 operator lists only org2's jobs ({orgs})")
        driver.get(base + f"/console/jobs/{args.other_org_job}")
        check("No job with this id" in driver.page_source, "the org2 operator cannot open an org1 job")
        driver.get(base + "/console/failures")
        check(args.session not in driver.find_element(By.ID, "failure-groups").text, "the org2 operator sees no org1 failures")
    finally:
        driver.quit()
    print("console browser test passed", flush=True)


if __name__ == "__main__":
    main()
