"""The demo page driven by a real headless Chromium, as a person would use it."""

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from hf_cxr_mae import (
    CXRMAEConfig,
    CXRMAEForPreTraining,
    CXRViTForImageClassification,
    build_image_processor,
)
from hf_cxr_mae.data import NIH14_LABELS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("gradio") is None,
        reason="gradio not installed (pip install '.[demo]')",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright not installed (pip install '.[dev]')",
    ),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"),
]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    mae = CXRMAEForPreTraining(CXRMAEConfig.from_preset("vit-test-patch8-dec32d1b"))
    mae.save_pretrained(root / "mae")
    classifier = CXRViTForImageClassification.from_checkpoint(mae, id2label=NIH14_LABELS)
    classifier.save_pretrained(root / "clf")
    build_image_processor(classifier.config).save_pretrained(root / "clf")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hf_cxr_mae.cli", "demo", "--model", str(root / "clf"), "--mae", str(root / "mae"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        if server.poll() is not None:
            pytest.fail("demo server exited: " + server.stdout.read()[-3000:])
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("demo server did not start in 180 s")
    yield url, root
    server.terminate()
    server.wait(timeout=30)


def test_upload_shows_findings_heatmap_and_errors(app, nih_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = app
    broken = tmp_path / "notes.png"
    broken.write_text("this is a text file renamed .png")
    wide = tmp_path / "sixteen_bit.png"
    Image.fromarray(
        (np.random.default_rng(0).random((300, 200)) * 40000 + 1000).astype(np.uint16)
    ).save(wide)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.goto(url, wait_until="networkidle")
        assert "Not a medical device" in page.inner_text("body")

        page.get_by_role("button", name="Analyze").click()  # nothing uploaded yet
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Upload an image first')",
            timeout=60000,
        )

        page.set_input_files("input[type=file]", str(nih_dir / "images" / "00000075_000.png"))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.wait_for_selector("#heatmap img", timeout=60000)
        page.wait_for_function(
            "document.querySelector('#findings').innerText.includes('Pleural_Thickening')",
            timeout=60000,
        )
        shown = page.inner_text("#findings")
        assert sum(name in shown for name in NIH14_LABELS) == 14
        assert page.query_selector("#reconstruction img") is not None
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

        page.get_by_role(
            "button", name="Clear"
        ).click()  # the file box swaps its input for the file
        page.set_input_files("input[type=file]", str(broken))
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Could not read notes.png')",
            timeout=60000,
        )

        page.get_by_role("button", name="Clear").click()
        page.set_input_files("input[type=file]", str(wide))  # 16-bit: scaled, answered
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Analyze").click()
        page.wait_for_function(
            "document.querySelector('#status').innerText.includes('Image 200x300')", timeout=60000
        )
        browser.close()
