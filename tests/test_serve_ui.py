"""The web UI in a real headless Chromium (Debian's, driven by Playwright): generate, edit, vary, caption."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from pixlm.serve import build_app, serve_in_thread  # noqa: E402
from pixlm.testing import tiny_pipeline  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)")


def wait_for(page, js: str, timeout_s: float = 15.0) -> None:
    """Poll a JavaScript expression until truthy (``wait_for_function`` evals strings, which the CSP forbids)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(js):
        assert time.monotonic() < deadline, f"timed out waiting for {js}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def page():
    app = build_app(tiny_pipeline())
    with serve_in_thread(app) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = browser.new_page()
        pg.problems = []  # console errors and uncaught exceptions (CSP violations show up here too)
        pg.on("console", lambda m: pg.problems.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: pg.problems.append(str(e)))
        pg.goto(base + "/")
        yield pg
        browser.close()


def test_type_a_prompt_click_generate_see_images(page) -> None:
    page.evaluate("""() => {
        window.previewsSeen = 0;
        new MutationObserver(() => {
            window.previewsSeen = Math.max(window.previewsSeen, document.querySelectorAll('#previews img').length);
        }).observe(document.getElementById('previews'), {childList: true});
    }""")
    page.fill("#prompt", "two red circles above a blue square")
    page.fill("#n", "3")
    page.fill("#steps", "4")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_selector("#results figure img", timeout=20_000)
    images = page.locator("#results figure img")
    assert images.count() == 3
    assert page.evaluate("Array.from(document.querySelectorAll('#results img')).every(i => i.complete && "
                         "i.naturalWidth === 256)")
    assert page.inner_text("#progress-label").startswith("done: 3 image(s)")
    assert page.evaluate("[document.getElementById('progress').value, document.getElementById('progress').max]") \
        == [4, 4]
    assert page.evaluate("window.previewsSeen") == 3  # one live preview per image during decoding
    link = page.locator("#results figure a").first
    assert link.get_attribute("download") == "pixlm-seed7-1.png"
    assert link.get_attribute("href").startswith("data:image/png;base64,")
    assert page.inner_text("#generate-error") == ""
    assert page.problems == []


def test_bad_input_shows_the_server_message(page) -> None:
    page.fill("#prompt", "a red circle")
    page.fill("#steps", "99")
    page.click("#generate")
    wait_for(page, "document.getElementById('generate-error').textContent.length > 0")
    assert "steps=99" in page.inner_text("#generate-error")
    page.fill("#steps", "8")
    assert all("400 (Bad Request)" in p for p in page.problems)  # the browser logs the refused request
    page.problems.clear()


def test_edit_with_a_rectangle_mask_and_variations(page, tmp_path: Path) -> None:
    picture = tmp_path / "scene.png"
    im = Image.new("RGB", (96, 96), "white")
    im.paste((220, 30, 30), (10, 10, 40, 40))
    im.save(picture)
    page.click("#tab-edit")
    page.set_input_files("#edit-file", str(picture))
    wait_for(page, "document.getElementById('edit-image').getContext('2d')"
                           ".getImageData(40, 40, 1, 1).data[0] > 150")  # the picture is drawn
    page.check("input[name=tool][value=rect]")
    box = page.locator("#edit-mask").bounding_box()
    page.mouse.move(box["x"] + 130, box["y"] + 130)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 180, steps=4)
    page.mouse.up()
    page.fill("#edit-prompt", "a blue square")
    page.fill("#edit-n", "2")
    page.click("#edit-submit")
    page.wait_for_selector("#edit-results figure img", timeout=20_000)
    assert page.locator("#edit-results figure img").count() == 2
    assert page.inner_text("#edit-error") == ""
    page.fill("#edit-n", "3")
    page.click("#vary-submit")
    wait_for(page, "document.querySelectorAll('#edit-results figure img').length === 3")
    assert page.problems == []


def test_caption_tab_explains_that_there_is_no_captioner_yet(page, tmp_path: Path) -> None:
    picture = tmp_path / "c.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buf, format="PNG")
    picture.write_bytes(buf.getvalue())
    page.click("#tab-caption")
    assert page.is_visible("#caption-panel") and not page.is_visible("#generate-panel")
    page.set_input_files("#caption-file", str(picture))
    page.click("#caption-submit")
    wait_for(page, "document.getElementById('caption-error').textContent.length > 0")
    assert "no captioner" in page.inner_text("#caption-error")


def test_generated_pictures_are_labelled_with_what_the_model_read(page) -> None:
    pipe = tiny_pipeline()
    pipe.defaults["scene_grammar"] = "shapes"  # reads free wording and lays scenes out
    with serve_in_thread(build_app(pipe)) as base:
        pg = page.context.browser.new_page()  # the module's browser, a second server
        pg.goto(base + "/")
        pg.fill("#prompt", "Draw me a big azure box!")
        pg.fill("#n", "2")
        pg.fill("#steps", "2")
        pg.click("#generate")
        pg.wait_for_selector("#results figure img", timeout=20_000)
        labels = [t.strip() for t in pg.locator("#results figcaption span").all_inner_texts()]
        pg.close()
    assert labels == ["#1: a large blue square", "#2: a large blue square"]


def test_a_distilled_model_draws_with_the_forms_defaults_left_blank(page) -> None:
    pipe = tiny_pipeline()
    pipe.defaults.update(num_inference_steps=2, distilled_steps=2, guidance_scale=1.0)  # asking 8 steps is an error
    with serve_in_thread(build_app(pipe)) as base:
        pg = page.context.browser.new_page()  # the module's browser, another server
        pg.goto(base + "/")
        assert pg.input_value("#steps") == "" and pg.input_value("#guidance") == ""  # the model's own
        pg.fill("#prompt", "a red circle")
        pg.fill("#n", "1")
        pg.click("#generate")
        pg.wait_for_selector("#results figure img", timeout=20_000)
        assert pg.inner_text("#generate-error") == ""
        pg.close()
