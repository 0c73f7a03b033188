"""Screenshots of TensorBoard dashboards in a real headless browser (docs/tensorboard/).

  python docs/tensorboard/screenshot.py --logdir=<dir of workdirs> --out=docs/tensorboard \
      custom_scalars hparams timeseries

Starts TensorBoard on `--logdir` and Debian's `chromium` (headless) with the
DevTools protocol, opens each dashboard, waits until its charts are drawn (real
time: `--virtual-time-budget` screenshots charts before they are drawn), and
saves `<out>/<dashboard>.png`. Needs `apt-get install chromium` and
`pip install websocket-client` (neither is a dependency of msnvi_tf).
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket


def _wait_for(url, seconds=60):
  deadline = time.time() + seconds
  while True:
    try:
      with urllib.request.urlopen(url, timeout=2) as response:
        return response.read()
    except OSError:
      if time.time() > deadline:
        raise
      time.sleep(0.5)


class _Page:
  """One browser tab driven through the DevTools protocol."""

  def __init__(self, port):
    tabs = json.loads(_wait_for(f"http://127.0.0.1:{port}/json"))
    page = next(t for t in tabs if t["type"] == "page")
    self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
    self._id = 0

  def call(self, method, **params):
    self._id += 1
    self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
    while True:
      message = json.loads(self._ws.recv())
      if message.get("id") == self._id:
        if "error" in message:
          raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

  def screenshot(self, url, path, wait, width, height):
    self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
              deviceScaleFactor=1, mobile=False)
    self.call("Page.navigate", url=url)
    time.sleep(wait)
    data = self.call("Page.captureScreenshot", format="png")["data"]
    with open(path, "wb") as f:
      f.write(base64.b64decode(data))
    print(path, flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--logdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--wait", type=float, default=15., help="seconds per dashboard")
  parser.add_argument("--width", type=int, default=1500)
  parser.add_argument("--height", type=int, default=1000)
  parser.add_argument("--query", default="", help="URL query, e.g. ?tagFilter=bound")
  parser.add_argument("dashboards", nargs="+")
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  tb_port, cdp_port = 6123, 9333
  tensorboard = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", "--logdir", args.logdir, "--host",
       "127.0.0.1", "--port", str(tb_port)], stderr=subprocess.DEVNULL)
  profile = tempfile.mkdtemp()
  browser = subprocess.Popen(
      [shutil.which("chromium"), "--headless=new", "--no-sandbox", "--disable-gpu",
       f"--remote-debugging-port={cdp_port}", f"--remote-allow-origins=http://127.0.0.1:{cdp_port}",
       f"--user-data-dir={profile}",
       "about:blank"], stderr=subprocess.DEVNULL)
  try:
    _wait_for(f"http://127.0.0.1:{tb_port}/data/runs")
    page = _Page(cdp_port)
    for dashboard in args.dashboards:
      page.screenshot(f"http://127.0.0.1:{tb_port}/{args.query}#{dashboard}",
                      os.path.join(args.out, f"{dashboard}.png"), args.wait, args.width,
                      args.height)
  finally:
    browser.terminate()
    tensorboard.terminate()
    shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
  main()
