"""Open a page in headless Chromium through chromedriver's WebDriver HTTP API (stdlib only).

    python tests/browser.py PAGE.html SCREENSHOT.png     # what make_study.sh commits

`Browser` starts chromedriver with Debian's `chromium` in a fresh profile, with every
background network feature off, so nothing but the page's own files is loaded.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--hide-scrollbars"]


def binaries():
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A WebDriver session: `open(url)`, `run(js)`, `console()`, `screenshot(path)`."""

    def __init__(self, width: int = 1400, height: int = 2400, timeout_s: float = 20.0):
        chromium, driver = binaries()
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        self.port = _free_port()
        self.proc = subprocess.Popen([driver, f"--port={self.port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + timeout_s
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.time() > deadline:
                    self.close()
                    raise RuntimeError("chromedriver did not start")
                time.sleep(0.1)
        caps = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {"binary": chromium, "args": CHROMIUM_ARGS + [
                    f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]}}
        self.session = self._call("POST", "/session",
                                  {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _call(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read().decode()).get("value")

    def _session(self, method: str, path: str, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def open(self, url: str):
        self._session("POST", "/url", {"url": url})

    def run(self, script: str, *args):
        """Run JavaScript in the page (a function body: `return ...`)."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def console(self):
        """The browser log since the last call: [{"level", "message"}]."""
        return self._session("POST", "/se/log", {"type": "browser"})

    def screenshot(self, path: str):
        png = base64.b64decode(self._session("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)

    def close(self):
        try:
            if getattr(self, "session", None):
                self._session("DELETE", "")
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def file_url(path: str) -> str:
    return "file://" + urllib.request.pathname2url(os.path.abspath(path))


if __name__ == "__main__":
    page, out = sys.argv[1:3]
    with Browser() as b:
        b.open(file_url(page))
        b.screenshot(out)
        errors = [e for e in b.console() if e.get("level") == "SEVERE"]
    print(f"wrote {out}" + (f"; console errors: {errors}" if errors else ""))
    sys.exit(1 if errors else 0)
