"""See what users see in the Prefect UI: screenshots of real runs, their report and the Run form.

    .venv/bin/python -m scripts.ui_check [--out artifacts/ui-check] [--port 4310]   # from the checkout

Starts a Prefect server and a worker on 127.0.0.1 (private PREFECT_HOME and artifacts folder under a
temporary directory), deploys prefect.yaml, runs the on-demand deployment twice (an `mlp` that is
promoted, a one-epoch `seed-mlp` that is rejected), then opens the pages in headless Chromium
(Debian's `chromium` package: `apt-get install chromium`) and writes one PNG per page. Not a test:
look at the pictures. Takes 2-4 minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from devstack.local_server import ON_DEMAND, LocalPrefect

RUNS = (("promoted", {"preset": "mlp"}), ("rejected", {"preset": "seed-mlp", "epochs": "1"}))
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
TALL = {"report": 4600, "run-promoted": 2600, "run-rejected": 2600, "v2-run-promoted": 2600}  # window heights


def api(local: LocalPrefect, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{local.api_url}{path}",
        method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def wait_for_run(local: LocalPrefect, flow_run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api(local, f"/flow_runs/{flow_run_id}")
        if run["state_type"] in FINAL:
            return run
        time.sleep(2)
    raise TimeoutError(f"flow run {flow_run_id} did not finish within {timeout:.0f} s")


def artifact_id(local: LocalPrefect, flow_run_id: str, key: str) -> str:
    found = api(
        local, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": [key]}}}
    )
    return found[0]["id"]


def submit_run_form(local: LocalPrefect, page, url: str, deployment_id: str, screenshot: Path) -> dict | None:
    """Submit the deployment's Run form as a user who changes nothing would; the flow run it created
    (None if it created none: the screenshot shows why)."""

    def runs() -> list[dict]:
        return api(local, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})

    before = {run["id"] for run in runs()}
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.goto(url, wait_until="networkidle")
    page.get_by_role("button", name="Submit").click()
    deadline = time.monotonic() + 30
    while not (created := [run for run in runs() if run["id"] not in before]) and time.monotonic() < deadline:
        time.sleep(1)
    page.set_viewport_size({"width": 1440, "height": 2600})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(screenshot))
    print(f"wrote {screenshot}", flush=True)
    return created[0] if created else None


def browser_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        sys.exit("error: no chromium found; install Debian's package: apt-get install chromium")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("artifacts/ui-check"), help="where the PNGs go")
    parser.add_argument("--port", type=int, default=4310, help="Prefect server port on 127.0.0.1")
    parser.add_argument("--form-only", action="store_true", help="only deploy and submit the Run form (no runs first)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with (
        tempfile.TemporaryDirectory(prefix="ui-check-") as tmp,
        LocalPrefect(
            args.port,
            prefect_home=Path(tmp) / "prefect-home",
            log_dir=Path(tmp) / "logs",
            extra_env={"MNIST_ARTIFACTS_DIR": str(Path(tmp) / "artifacts")},
        ) as local,
    ):
        print(f"server on {local.api_url}", flush=True)
        local.start_server()
        local.deploy()
        local.start_worker()
        runs = {}
        for name, parameters in () if args.form_only else RUNS:
            runs[name] = wait_for_run(local, local.trigger(ON_DEMAND, parameters))
            print(f"{name}: {runs[name]['name']} ended {runs[name]['state_name']}", flush=True)
        deployment = api(local, "/deployments/name/mnist-training-pipeline/on-demand")
        ui = f"http://127.0.0.1:{args.port}"
        pages = {
            "deployments": "/deployments",
            "deployment": f"/deployments/deployment/{deployment['id']}",
            "run-form": f"/deployments/deployment/{deployment['id']}/run",
        }
        if runs:
            promoted = runs["promoted"]["id"]
            pages |= {
                "runs": "/runs",
                "run-promoted": f"/runs/flow-run/{promoted}",
                "run-rejected": f"/runs/flow-run/{runs['rejected']['id']}",
                "report": f"/artifacts/artifact/{artifact_id(local, promoted, 'mnist-training-report')}",
                "per-class-table": f"/artifacts/artifact/{artifact_id(local, promoted, 'mnist-per-class-accuracy')}",
                "v2-runs": "/v2/runs",
                "v2-run-promoted": f"/v2/runs/flow-run/{promoted}",
            }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            for name, path in pages.items():
                # the UI scrolls inside its own panel, so a long page needs a tall window to show whole
                page.set_viewport_size({"width": 1440, "height": TALL.get(name, 1000)})
                page.goto(ui + path, wait_until="networkidle")
                page.wait_for_timeout(1500)  # the UI fills its panels after the network settles
                page.screenshot(path=str(args.out / f"{name}.png"))
                print(f"wrote {args.out / f'{name}.png'}", flush=True)
            run = submit_run_form(
                local, page, ui + pages["run-form"], deployment["id"], args.out / "run-form-submitted.png"
            )
            browser.close()
        print(
            f"the Run form, submitted untouched, created flow run {run['id']} with parameters {run['parameters']}"
            if run
            else "the Run form, submitted untouched, created no flow run",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
