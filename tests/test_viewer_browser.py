"""The support person's viewer in a real browser (Debian's chromium, headless, via Playwright)
against a real relay on 127.0.0.1 port 0 and a scripted agent speaking protocol.py."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from PIL import Image
from websockets.sync.client import connect

import protocol
from relay.accounts import DB_FILE
from relay.ledger import Ledger
from tests.helpers.agent import ScriptedAgent
from tests.helpers.browser import WAIT_S, Viewer

pytestmark = pytest.mark.browser

HOSTILE = "<img src=x onerror=alert(1)>"
ROOT = Path(__file__).resolve().parent.parent


def accepted_session(open_viewer, agents, **agent_args) -> tuple[Viewer, ScriptedAgent]:
    viewer = open_viewer().signed_in()
    agent = agents(**agent_args)
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    return viewer, agent


# --- signing in ---------------------------------------------------------------------------


def test_wrong_user_and_wrong_password_get_the_same_message(open_viewer):
    """A failed login says so without saying whether the user or the password was wrong."""
    viewer = open_viewer()
    messages = []
    for user, password in [("nobody", "david-pw"), ("david", "wrong-pw")]:
        viewer.login(user, password)
        error = viewer.page.locator("#login-error")
        error.wait_for(state="visible")
        messages.append(error.text_content())
        viewer.page.evaluate("document.querySelector('#login-error').hidden = true")
    assert messages[0] == messages[1]
    assert "not correct" in messages[0]
    assert viewer.by("queue").is_hidden()


def test_login_shows_the_queue_and_a_reload_stays_signed_in(open_viewer):
    """A correct login opens the queue; a reload signs in again with the tab's token."""
    viewer = open_viewer().signed_in()
    assert viewer.by("status").text_content() == "Connected"
    viewer.page.reload()
    viewer.by("queue").wait_for(state="visible")
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=status]').textContent === 'Connected'")
    hellos = [m for m in viewer.sent if m.get("type") == "hello"]
    assert hellos[0]["password"] == "david-pw"
    assert hellos[-1]["token"] and not hellos[-1].get("password")


def test_logout_returns_to_the_login_form(open_viewer):
    """Sign out forgets the token: a reload shows the login form again."""
    viewer = open_viewer().signed_in()
    viewer.by("logout").click()
    viewer.by("login-user").wait_for(state="visible")
    assert {"type": "logout"} in viewer.sent
    viewer.page.reload()
    viewer.by("login-user").wait_for(state="visible")
    assert viewer.by("queue").is_hidden()


def test_revoked_login_returns_to_the_login_form_with_a_message(open_viewer, relay):
    """Disabling the account on the relay signs the open viewer out and says why."""
    viewer = open_viewer().signed_in()
    result = relay.cli("disable-technician", "david")
    assert result.returncode == 0, result.stderr
    error = viewer.page.locator("#login-error")
    error.wait_for(state="visible")
    assert "expired" in error.text_content()
    assert viewer.by("queue").is_hidden()
    viewer.page.reload()
    viewer.by("login-user").wait_for(state="visible")


def test_page_runs_under_a_strict_csp_with_no_inline_script_or_style():
    """index.html has no inline script, handler or style attribute for the CSP to forbid."""
    html = (ROOT / "viewer" / "index.html").read_text()
    assert "<script" in html
    for tag in re.findall(r"<script\b[^>]*>", html):
        # Relative to /console/ (never another host) and a module.
        assert re.search(r'src="(?![a-z]+:|//)', tag) and 'type="module"' in tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html)  # no inline body
    assert not re.search(r"\s(style|on[a-z]+)\s*=", html)


def test_relay_serves_the_viewer_with_its_csp(open_viewer):
    """The page arrives with a Content-Security-Policy that allows only the relay's scripts."""
    viewer = open_viewer()
    policy = viewer.response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


# --- the queue ------------------------------------------------------------------------------


def test_queue_shows_arrivals_live_and_drops_those_who_leave(open_viewer, agents):
    """A customer who starts waiting appears without a reload, and disappears on leaving."""
    viewer = open_viewer().signed_in()
    agent = agents(machine="RECEPTION-PC", user="sigrun")
    item = viewer.item(agent.session)
    item.wait_for(state="visible")
    assert item.locator(".machine").text_content() == "RECEPTION-PC"
    assert item.locator(".user").text_content() == "sigrun"
    assert "Waiting" in item.locator(".waited").text_content()
    assert viewer.page.title().startswith("(1) waiting")
    agent.close()
    item.wait_for(state="detached")


def test_a_second_support_person_never_sees_the_first_ones_customer(open_viewer, agents):
    """Petur's queue lists his own customer and never David's."""
    david = open_viewer().signed_in("david", "david-pw")
    petur = open_viewer().signed_in("petur", "petur-pw")
    davids_customer = agents(technician="david", machine="DAVIDS-CUSTOMER")
    david.item(davids_customer.session).wait_for(state="visible")
    peturs_customer = agents(technician="petur", machine="PETURS-CUSTOMER")
    petur.item(peturs_customer.session).wait_for(state="visible")
    assert petur.item(davids_customer.session).count() == 0
    assert "DAVIDS-CUSTOMER" not in petur.by("queue").inner_text()
    assert petur.page.locator("[data-testid=queue-item]").count() == 1


def test_hostile_machine_name_is_shown_as_text_and_runs_nothing(open_viewer, agents):
    """An agent's machine name full of HTML renders literally and fires no script."""
    viewer = open_viewer().signed_in()
    agent = agents(machine=HOSTILE, user="<b>bold</b>")
    item = viewer.item(agent.session)
    item.wait_for(state="visible")
    assert item.locator(".machine").text_content() == HOSTILE
    assert item.locator(".user").text_content() == "<b>bold</b>"
    assert viewer.page.locator("[data-testid=queue-item] :is(img, b)").count() == 0
    viewer.accept(agent)
    viewer.page.locator("#session-machine").wait_for(state="visible")
    assert viewer.page.locator("#session-machine").text_content() == HOSTILE
    assert viewer.page.locator("#session-view img:not(#remote-pointer)").count() == 0
    assert viewer.dialogs == []


# --- watching -------------------------------------------------------------------------------


def test_accept_tells_the_agent_and_opens_the_screen(open_viewer, agents):
    """Accept sends the agent `accepted` and shows the session with its timer."""
    viewer, _ = accepted_session(open_viewer, agents, machine="ACCOUNTS-7")
    assert viewer.page.locator("#session-machine").text_content() == "ACCOUNTS-7"
    assert viewer.by("control-toggle").text_content() == "Take control"
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=session-timer]').textContent !== '0:00:00'")
    assert viewer.by("queue").is_hidden()
    agents(machine="NEXT-IN-LINE")  # someone else starts waiting meanwhile
    pill = viewer.page.locator("#session-waiting")
    pill.wait_for(state="visible")
    assert pill.text_content() == "1 waiting"


def test_waiting_pill_leaves_out_the_accepted_customer_and_never_moves_the_screen(
        open_viewer, agents):
    """The pill counts only others; showing it keeps the bar's height, so the screen stays put."""
    viewer = open_viewer().signed_in()
    agent = agents()
    viewer.page.evaluate("""() => {
        const pill = document.querySelector('#session-waiting');
        window.pillShown = [];
        const record = () => {
            if (pill.checkVisibility()) window.pillShown.push(pill.textContent);
        };
        new MutationObserver(record).observe(
            pill, {attributes: true, childList: true, characterData: true, subtree: true});
    }""")
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    # The relay's queue update after the accept lists nobody; until then the accepted
    # customer is still in the tab's list as waiting, and must not be counted.
    viewer.wait_true("document.querySelector('#queue-count').textContent === '0'")
    assert viewer.page.evaluate("window.pillShown") == []

    agent.send_full((90, 90, 90))
    agent.expect(protocol.Ack)
    before = viewer.by("screen").bounding_box()
    agents(machine="A-MACHINE-WITH-A-LONG-NAME")
    viewer.page.locator("#session-waiting").wait_for(state="visible")
    assert viewer.by("screen").bounding_box() == before


def test_updates_are_drawn_in_order_and_acknowledged(open_viewer, agents):
    """Rectangles land where the agent put them, later ones on top, each update acked once drawn."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((200, 40, 40), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    viewer.wait_for_pixel(10, 10, (200, 40, 40))
    assert viewer.pixel(1599, 999) == (200, 40, 40)

    # Update 2: a large JPEG (slow to decode) then a small PNG on top of part of it.
    noise = Image.effect_noise((800, 600), 60).convert("RGB")
    agent.send_image(noise, seq=2, x=100, y=100, kind=protocol.FRAME_JPEG, flags=0)
    agent.send_image(Image.new("RGB", (50, 40), (20, 180, 60)), seq=2, x=300, y=200)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    viewer.wait_for_pixel(320, 220, (20, 180, 60))
    assert viewer.pixel(349, 239) == (20, 180, 60)
    assert viewer.pixel(350, 240) != (20, 180, 60)  # just outside the small rectangle
    assert viewer.pixel(50, 50) == (200, 40, 40)    # outside both: untouched

    # Update 3: a JPEG of one colour comes through within JPEG's error.
    agent.send_image(Image.new("RGB", (64, 64), (30, 60, 220)), seq=3, x=1500, y=900,
                     kind=protocol.FRAME_JPEG)
    agent.expect(protocol.Ack, lambda m: m.seq == 3)
    viewer.wait_for_pixel(1530, 930, (30, 60, 220), tolerance=6)
    acks = [m.seq for m in agent.drain() if isinstance(m, protocol.Ack)]
    assert acks == [1, 2, 3]


def test_an_image_larger_than_its_frame_says_is_never_decoded(open_viewer, agents):
    """Four small PNGs that declare 4096x4096 pixels, sent as 64x64 rectangles, are refused
    without decoding (the canvas there keeps its colour); the update is still acknowledged
    and the next one is drawn."""
    viewer, agent = accepted_session(open_viewer, agents)
    warnings: list[str] = []
    viewer.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    agent.send_full((200, 40, 40), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    buffer = io.BytesIO()
    Image.new("1", (4096, 4096)).save(buffer, "PNG")  # black, a few KB; 64 MB decoded
    assert len(buffer.getvalue()) < 64 * 1024
    for i in range(4):
        agent.socket.send(protocol.encode_frame(protocol.Frame(
            protocol.FRAME_PNG, protocol.FLAG_LAST if i == 3 else 0, 1, 2, 100 + 64 * i, 100,
            64, 64, buffer.getvalue())))
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    agent.send_image(Image.new("RGB", (64, 64), (20, 180, 60)), seq=3, x=500, y=500)
    agent.expect(protocol.Ack, lambda m: m.seq == 3)
    viewer.wait_for_pixel(520, 520, (20, 180, 60))
    assert [viewer.pixel(120 + 64 * i, 120) for i in range(4)] == [(200, 40, 40)] * 4
    assert sum("refused an image" in text for text in warnings) == 4, warnings


def quadrants(width: int, height: int) -> Image.Image:
    """An image of four flat quadrants: red, green / blue, yellow."""
    image, w, h = Image.new("RGB", (width, height)), width // 2, height // 2
    for box, colour in (((0, 0, w, h), (220, 30, 30)), ((w, 0, width, h), (30, 200, 60)),
                        ((0, h, w, height), (40, 60, 230)),
                        ((w, h, width, height), (240, 220, 20))):
        image.paste(colour, box)
    return image


@pytest.mark.parametrize("kind", [protocol.FRAME_PNG, protocol.FRAME_JPEG])
@pytest.mark.parametrize("width, height", [(120, 80), (800, 400)])
def test_a_half_resolution_image_is_drawn_filling_its_rectangle(open_viewer, agents, kind,
                                                                width, height):
    """An image half its rectangle's size (a region in motion at half resolution) is drawn
    scaled up over the whole rectangle, each quadrant where it belongs, nothing outside it,
    and the update is acknowledged: a small one decoded on the page, a large one in a
    worker."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((0, 0, 0), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    x, y = 301, 200
    agent.send_image(quadrants(width // 2, height // 2), seq=2, x=x, y=y, kind=kind,
                     size=(width, height))
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    tolerance = 0 if kind == protocol.FRAME_PNG else 8
    right, bottom = x + width - 1, y + height - 1
    viewer.wait_for_pixel(right - 4, bottom - 4, (240, 220, 20), tolerance)
    for (px, py), colour in (((x + 4, y + 4), (220, 30, 30)), ((right - 4, y + 4), (30, 200, 60)),
                             ((x + 4, bottom - 4), (40, 60, 230)),
                             ((x + width // 4, y + height // 4), (220, 30, 30)),
                             ((x + width * 3 // 4, y + height * 3 // 4), (240, 220, 20))):
        got = viewer.pixel(px, py)
        assert max(abs(a - b) for a, b in zip(got, colour, strict=True)) <= tolerance, \
            (px, py, got)
    for px, py in ((x - 1, y + 40), (right + 1, y + 40), (x + 60, y - 1), (x + 60, bottom + 1)):
        assert viewer.pixel(px, py) == (0, 0, 0)  # just outside


def test_a_half_resolution_image_is_scaled_up_by_repeating_its_pixels(open_viewer, agents):
    """Each pixel of a half-size image becomes a 2x2 block of exactly its colour, never a
    blend of its neighbours (filtering cost Chromium's software canvas 4 times the CPU for
    motion, and the picture is smoothed when shrunk to fit anyway): stripes one pixel wide
    come out two pixels wide, unmixed."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((0, 0, 0), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    colours = [(250, 250, 250), (10, 10, 10), (200, 30, 30)]
    stripes = Image.new("RGB", (30, 10))
    for column in range(30):
        stripes.paste(colours[column % 3], (column, 0, column + 1, 10))
    x, y = 400, 300
    agent.send_image(stripes, seq=2, x=x, y=y, size=(60, 20))
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    viewer.wait_for_pixel(x + 59, y + 19, colours[29 % 3])
    for row in (y, y + 9, y + 19):
        assert [viewer.pixel(x + column, row) for column in range(60)] == \
            [colours[column // 2 % 3] for column in range(60)], row


def test_the_canvas_is_shrunk_without_filtering_only_while_all_of_it_is_in_motion(
        open_viewer, agents):
    """While an update replaces every pixel with half-size images (the whole screen in
    motion), the fitted canvas is shrunk by picking pixels (cheaper to composite without a
    GPU); an update with a full-size image, or half-size images over part of the screen
    only, brings filtering back."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((0, 0, 0), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    rendering = "document.querySelector('[data-testid=screen]').style.imageRendering"
    assert viewer.page.evaluate(rendering) == ""
    width, height = agent.size
    top = height // 2
    agent.send_image(quadrants(width // 2, top // 2), seq=2, size=(width, top), flags=0)
    agent.send_image(quadrants(width // 2, (height - top + 1) // 2), seq=2, y=top,
                     size=(width, height - top))
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    # acknowledged once decided: an update in motion may be painted an animation frame later
    viewer.page.wait_for_function(f"() => {rendering} === 'pixelated'")
    agent.send_image(Image.new("RGB", (64, 64), (20, 180, 60)), seq=3, x=10, y=10)
    agent.expect(protocol.Ack, lambda m: m.seq == 3)
    assert viewer.page.evaluate(rendering) == ""
    agent.send_image(quadrants(width // 2, top // 2), seq=4, size=(width, top))
    agent.expect(protocol.Ack, lambda m: m.seq == 4)
    assert viewer.page.evaluate(rendering) == ""  # half the screen in motion only


def test_an_image_neither_its_rectangles_size_nor_half_is_never_decoded(open_viewer,
                                                                         agents):
    """A 40x40 image sent for a 64x64 rectangle, and a 32x33 one for 64x64 (half across, not
    down), are refused before decoding (the canvas keeps its colour); the update is still
    acknowledged."""
    viewer, agent = accepted_session(open_viewer, agents)
    warnings: list[str] = []
    viewer.page.on("console", lambda m: warnings.append(m.text) if m.type == "warning" else None)
    agent.send_full((200, 40, 40), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    agent.send_image(Image.new("RGB", (40, 40), (20, 180, 60)), seq=2, x=100, y=100,
                     flags=0, size=(64, 64))
    agent.send_image(Image.new("RGB", (32, 33), (20, 180, 60)), seq=2, x=200, y=100,
                     size=(64, 64))
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    agent.send_image(Image.new("RGB", (64, 64), (20, 180, 60)), seq=3, x=500, y=500)
    agent.expect(protocol.Ack, lambda m: m.seq == 3)
    viewer.wait_for_pixel(520, 520, (20, 180, 60))
    assert viewer.pixel(110, 110) == viewer.pixel(210, 110) == (200, 40, 40)
    assert sum("refused an image" in text for text in warnings) == 2, warnings


COUNT_DECODES = """(() => {
    const decode = window.createImageBitmap.bind(window);
    let now = 0;
    window.decodes = { max: 0, total: 0 };
    const started = () => {
        now += 1;
        window.decodes.total += 1;
        window.decodes.max = Math.max(window.decodes.max, now);
    };
    window.createImageBitmap = (...args) => {
        started();
        return decode(...args).finally(() => { now -= 1; });
    };
    // large images are decoded in workers (viewer/decoder.js): one message each way
    const RealWorker = window.Worker;
    window.Worker = class extends RealWorker {
        constructor(...args) {
            super(...args);
            this.addEventListener("message", () => { now -= 1; });
        }
        postMessage(...args) {
            started();
            super.postMessage(...args);
        }
    };
})();"""


def test_the_viewer_decodes_at_most_the_in_flight_number_of_images_at_once(open_viewer,
                                                                           agents):
    """Twelve large JPEG rectangles of one update arrive at once: at most
    MAX_UPDATES_IN_FLIGHT are decoded at the same time, and all are drawn and acknowledged."""
    viewer = open_viewer()
    viewer.context.add_init_script(COUNT_DECODES)  # counts createImageBitmap calls in flight
    viewer.page.reload()
    viewer.signed_in()
    agent = agents()
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    noise = Image.effect_noise((400, 250), 80).convert("RGB")
    flags = protocol.FLAG_FULL
    for i in range(12):
        x, y = 400 * (i % 4), 250 * (i // 4)
        agent.send_image(noise, seq=1, x=x, y=y, kind=protocol.FRAME_JPEG,
                         flags=flags | (protocol.FLAG_LAST if i == 11 else 0))
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    decodes = viewer.page.evaluate("() => window.decodes")
    assert decodes["total"] == 12
    assert 1 <= decodes["max"] <= protocol.MAX_UPDATES_IN_FLIGHT, decodes


def test_large_images_are_decoded_on_the_page_when_the_decode_worker_fails(open_viewer,
                                                                          agents):
    """With the decode worker's script not found, whole images (decoded in workers when they
    work) are still drawn and acknowledged, more of them than the decode slots: a failed
    worker never holds a slot."""
    viewer = open_viewer()
    viewer.context.route("**/decode-worker.js", lambda route: route.fulfill(status=404))
    viewer.page.reload()
    viewer.signed_in()
    agent = agents()
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200),
               (200, 40, 200)]
    assert len(colours) > protocol.MAX_UPDATES_IN_FLIGHT
    for seq, colour in enumerate(colours, 1):
        agent.send_full(colour, seq)
        agent.expect(protocol.Ack, lambda m, seq=seq: m.seq == seq)
    viewer.wait_for_pixel(800, 500, colours[-1])


COUNT_IMAGE_DECODERS = """(() => {
    window.imageDecoders = 0;
    if (typeof ImageDecoder !== "function") return;
    const Real = window.ImageDecoder;
    window.ImageDecoder = class extends Real {
        constructor(...args) {
            super(...args);
            window.imageDecoders += 1;
        }
    };
})();"""


def glyph() -> Image.Image:
    """A typed character's echo as the agent sends it: a small palette PNG."""
    image = Image.new("RGB", (18, 19), (20, 180, 60))
    for x in range(4, 12):
        image.putpixel((x, 9), (250, 240, 7))
    return image.quantize(8)


def test_a_typed_glyph_is_drawn_exactly_by_the_pages_own_png_decoder(open_viewer, agents):
    """A small palette PNG (typing's echo) is decoded on the page by viewer/png.js, in the
    task it arrives in (no hop to the browser's decoder threads), with its exact pixels."""
    viewer, agent = shown_session(open_viewer, agents, COUNT_IMAGE_DECODERS)
    agent.send_image(glyph(), seq=2, x=300, y=200)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    viewer.wait_for_pixel(306, 209, (250, 240, 7))
    assert viewer.pixel(301, 201) == (20, 180, 60)
    assert viewer.page.evaluate("() => window.imageDecoders") == 0


@pytest.mark.parametrize("webcodecs", [True, False])
def test_a_small_png_the_page_does_not_decode_goes_through_imagedecoder_or_without_it(
        open_viewer, agents, webcodecs):
    """A small PNG that viewer/png.js leaves alone (grey) is decoded by WebCodecs' ImageDecoder
    where the browser has one (Chromium: a fifth of createImageBitmap's time) and drawn with
    its exact pixels; a browser without it draws the same through createImageBitmap."""
    viewer, agent = shown_session(
        open_viewer, agents,
        COUNT_IMAGE_DECODERS if webcodecs else "delete window.ImageDecoder;")
    agent.send_image(glyph().convert("L"), seq=2, x=300, y=200)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    grey = glyph().convert("L").getpixel((6, 9))
    viewer.wait_for_pixel(306, 209, (grey, grey, grey))
    assert viewer.pixel(301, 201) == (glyph().convert("L").getpixel((1, 1)),) * 3
    assert viewer.page.evaluate("() => window.imageDecoders ?? null") == (
        1 if webcodecs else None)

COUNT_FRAMES = """(() => {
    // each drawImage onto the page's canvas, with the animation frame it fell in
    window.painted = [];
    window.tick = 0;
    const step = () => { window.tick += 1; requestAnimationFrame(step); };
    requestAnimationFrame(step);
    const draw = CanvasRenderingContext2D.prototype.drawImage;
    CanvasRenderingContext2D.prototype.drawImage = function (...args) {
        window.painted.push([window.tick, args[5], args[6]]);
        return draw.apply(this, args);
    };
})();"""


def shown_session(open_viewer, agents, init_script: str) -> tuple[Viewer, ScriptedAgent]:
    """An accepted session whose page ran ``init_script`` first, after a first whole image."""
    viewer = open_viewer()
    viewer.context.add_init_script(init_script)
    viewer.page.reload()
    viewer.signed_in()
    agent = agents()
    viewer.accept(agent)
    agent.expect(protocol.Accepted)
    agent.send_full((200, 40, 40), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    return viewer, agent


def strips_session(open_viewer, agents) -> tuple[Viewer, ScriptedAgent]:
    """A session whose page records its draws (COUNT_FRAMES), after a first whole image."""
    return shown_session(open_viewer, agents, COUNT_FRAMES)


def drawn_strips(viewer: Viewer, tops: list[int]) -> list[tuple[int, int]]:
    """(animation frame, top) of each draw at x=0 whose top is one of ``tops``, after the first
    whole image (also drawn at 0, 0)."""
    painted = viewer.page.evaluate("() => window.painted")[1:]
    return [(tick, y) for tick, x, y in painted if x == 0 and y in tops]


def test_the_strips_of_one_update_are_drawn_in_one_animation_frame(open_viewer, agents):
    """Four large strips of one update arriving together (each decoded in a worker, at most
    MAX_UPDATES_IN_FLIGHT at once, finishing apart) are drawn in order in one animation
    frame; the update is acknowledged."""
    viewer, agent = strips_session(open_viewer, agents)
    buffer = io.BytesIO()
    Image.effect_noise((1600, 250), 80).convert("RGB").save(buffer, "JPEG", quality=90)
    tops = [0, 250, 500, 750]
    frames = [protocol.encode_frame(protocol.Frame(
        protocol.FRAME_JPEG, protocol.FLAG_LAST if y == tops[-1] else 0, 1, 2, 0, y, 1600, 250,
        buffer.getvalue())) for y in tops]
    for frame in frames:  # back to back, as written on a fast link
        agent.socket.send(frame)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    strips = drawn_strips(viewer, tops)
    assert [y for _, y in strips] == tops
    assert len({tick for tick, _ in strips}) == 1, strips


def test_the_strips_of_an_update_still_arriving_are_drawn_as_they_come(open_viewer, agents):
    """On a slow link: the first three strips of an update, with nothing behind them, are
    drawn before its last has arrived (after HOLD_STRIPS_MS); then the last, and the update
    is acknowledged."""
    viewer, agent = strips_session(open_viewer, agents)
    noise = Image.effect_noise((1600, 250), 80).convert("RGB")
    for y in (0, 250, 500):
        agent.send_image(noise, seq=2, x=0, y=y, kind=protocol.FRAME_JPEG, flags=0)
    viewer.page.wait_for_function(
        "() => window.painted.slice(1).filter(([, x, y]) => x === 0 && y === 500).length")
    agent.send_image(noise, seq=2, x=0, y=750, kind=protocol.FRAME_JPEG)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    assert [y for _, y in drawn_strips(viewer, [0, 250, 500, 750])] == [0, 250, 500, 750]


def test_queue_lists_the_newest_customers_and_counts_the_others(open_viewer, relay):
    """With more customers waiting than the queue lists, the page lists the newest and says
    how many more wait; the count includes them."""
    extra = 4
    waiting = protocol.MAX_QUEUE_ENTRIES + extra
    per_subnet = protocol.MAX_WAITING_PER_SUBNET
    with contextlib.ExitStack() as stack:
        for i in range(waiting):
            socket = stack.enter_context(connect(
                f"{relay.ws_url}/ws/agent", open_timeout=WAIT_S,
                source_address=(f"127.0.{1 + i // per_subnet}.{1 + i % per_subnet}", 0)))
            socket.send(protocol.encode_control(protocol.AgentHello(
                "agent", protocol.PROTOCOL_VERSION, "david", f"PC-{i:03}", "anna",
                (protocol.Screen(0, 0, 800, 600), protocol.Screen(0, 0, 800, 600)))))
            assert isinstance(protocol.decode_control(socket.recv(timeout=WAIT_S)),
                              protocol.Registered)
        viewer = open_viewer().signed_in()
        more = viewer.by("queue-more")
        more.wait_for(state="visible")
        assert more.text_content() == f"{extra} more waiting longer are not listed."
        assert viewer.page.locator("#queue-count").text_content() == str(waiting)
        items = viewer.page.locator('[data-testid="queue-item"] .machine')
        assert items.count() == protocol.MAX_QUEUE_ENTRIES
        assert items.last.text_content() == f"PC-{waiting - 1:03}"  # the newest is listed


def test_customer_pointer_is_drawn_over_the_screen(open_viewer, agents):
    """A `cursor` message from the agent shows the customer's pointer."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((90, 90, 90))
    agent.expect(protocol.Ack)
    agent.send(protocol.Cursor(1, 400, 300))
    pointer = viewer.page.locator("#remote-pointer")
    pointer.wait_for(state="visible")
    # Both boxes from one layout: read one at a time, a layout change between them moves one.
    box, screen = viewer.page.evaluate("""() => ['#remote-pointer', '#screen'].map((css) => {
        const r = document.querySelector(css).getBoundingClientRect();
        return {x: r.x, y: r.y, width: r.width};
    })""")
    scale = screen["width"] / 1600
    assert abs(box["x"] - screen["x"] - 400 * scale) <= 1.5
    assert abs(box["y"] - screen["y"] - 300 * scale) <= 1.5


def test_monitor_chooser_asks_the_agent_for_the_chosen_monitor(open_viewer, agents):
    """With two monitors the chooser lists them and sends refresh for the one picked."""
    viewer, agent = accepted_session(open_viewer, agents, size=(800, 600), monitors=2)
    agent.send_full((10, 10, 10))
    agent.expect(protocol.Ack)
    chooser = viewer.page.locator("#monitor")
    chooser.wait_for(state="visible")
    assert chooser.locator("option").count() == 3
    chooser.select_option("2")
    refresh = agent.expect(protocol.Refresh)
    assert (refresh.session, refresh.monitor) == (agent.session, 2)
    agent.send_image(Image.new("RGB", (800, 600), (0, 120, 200)), seq=5, monitor=2,
                     flags=protocol.FLAG_LAST | protocol.FLAG_FULL)
    agent.expect(protocol.Ack, lambda m: m.seq == 5)
    viewer.wait_for_pixel(700, 500, (0, 120, 200))


def test_fit_and_actual_size(open_viewer, agents):
    """Fit keeps the aspect ratio inside the window; 1:1 shows every pixel with scroll bars."""
    viewer, agent = accepted_session(open_viewer, agents, size=(1600, 1000))
    agent.send_full((70, 70, 70))
    agent.expect(protocol.Ack)
    box = viewer.by("screen").bounding_box()
    area = viewer.page.locator("#viewport").bounding_box()
    assert box["width"] <= area["width"] and box["height"] <= area["height"]
    assert abs(box["width"] / box["height"] - 1.6) < 0.01
    viewer.page.locator("#scale-actual").click()
    viewer.page.wait_for_function(
        "() => document.querySelector('[data-testid=screen]')"
        ".getBoundingClientRect().width === 1600")
    scrolls = viewer.page.evaluate(
        "(() => { const v = document.querySelector('#viewport');"
        " return v.scrollWidth > v.clientWidth; })()")
    assert scrolls


# --- control --------------------------------------------------------------------------------


def test_nothing_is_sent_while_view_only(open_viewer, agents):
    """Before Take control, mouse, wheel and keys inside the screen send no input at all."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((50, 50, 50))
    agent.expect(protocol.Ack)
    x, y = viewer.client_point(400, 300)
    viewer.page.mouse.move(x, y)
    viewer.page.mouse.move(x + 30, y + 20)
    viewer.page.mouse.click(x, y)
    viewer.page.mouse.wheel(0, 200)
    viewer.by("screen").focus()
    viewer.page.keyboard.type("hello")
    viewer.page.keyboard.press("Control+KeyA")
    assert viewer.by("special-keys").is_disabled()
    assert viewer.by("type-text").is_disabled()
    # Messages leave in order: once control is taken and a marker key arrives, anything the
    # view-only actions had sent would be in the record before the take_control.
    viewer.take_control(agent)
    viewer.page.keyboard.press("KeyM")
    marker = agent.expect(protocol.Key)
    assert marker.code == "KeyM"
    kinds = [m["type"] for m in viewer.sent_once(lambda sent: any(
        m.get("code") == "KeyM" for m in sent))]
    first_input = kinds.index("key")
    assert kinds.index("take_control") < first_input
    assert viewer.inputs_sent()[0] == {
        "type": "key", "session": agent.session, "code": "KeyM", "key": "m", "down": True}


def test_control_sends_keys_and_pointer_in_the_remote_pixel_space(open_viewer, agents):
    """In control, pointer positions are scaled to the remote screen; keys carry code and key."""
    viewer, agent = accepted_session(open_viewer, agents, size=(1600, 1000))
    agent.send_full((50, 50, 50))
    agent.expect(protocol.Ack)
    box = viewer.by("screen").bounding_box()
    assert box["width"] < 1600  # fit-to-window really scales here
    viewer.take_control(agent)

    x, y, rx, ry = viewer.aim(800, 500)
    viewer.page.mouse.move(x, y)
    move = agent.expect(protocol.PointerMove, lambda m: (m.x, m.y) == (rx, ry))
    assert move.monitor == 1 and move.session == agent.session
    x, y, rx, ry = viewer.aim(1234, 777)
    viewer.page.mouse.move(x, y)
    viewer.page.mouse.down(button="right")
    down = agent.expect(protocol.Button)
    assert (down.button, down.down, down.x, down.y) == ("right", True, rx, ry)
    viewer.page.mouse.up(button="right")
    up = agent.expect(protocol.Button)
    assert (up.button, up.down) == ("right", False)
    viewer.page.mouse.wheel(0, 100)
    wheel = agent.expect(protocol.Wheel)
    assert (wheel.dx, wheel.dy, wheel.x, wheel.y) == (0, 1, rx, ry)

    viewer.page.keyboard.press("Shift+KeyA")
    keys = [agent.expect(protocol.Key) for _ in range(4)]
    assert [(k.code, k.key, k.down) for k in keys] == [
        ("ShiftLeft", "Shift", True), ("KeyA", "A", True),
        ("KeyA", "A", False), ("ShiftLeft", "Shift", False)]
    # A browser shortcut (Ctrl+S, "save page") goes to the customer instead.
    viewer.page.keyboard.press("Control+KeyS")
    keys = [agent.expect(protocol.Key) for _ in range(4)]
    assert [(k.code, k.down) for k in keys] == [
        ("ControlLeft", True), ("KeyS", True), ("KeyS", False), ("ControlLeft", False)]


def test_special_keys_and_typed_text_reach_the_agent(open_viewer, agents):
    """The special-keys menu sends key sequences; Ctrl+Alt+Del is disabled with its reason."""
    viewer, agent = accepted_session(open_viewer, agents)
    viewer.take_control(agent)
    viewer.by("special-keys").click()
    cad = viewer.page.get_by_role("menuitem", name="Ctrl+Alt+Del")
    assert cad.is_disabled()
    assert "needs a Windows service; not available" in cad.text_content()
    viewer.page.get_by_role("menuitem", name="Alt+Tab").click()
    keys = [agent.expect(protocol.Key) for _ in range(4)]
    assert [(k.code, k.down) for k in keys] == [
        ("AltLeft", True), ("Tab", True), ("Tab", False), ("AltLeft", False)]
    viewer.by("type-text").fill("héllo wörld\nline two")
    viewer.by("type-text").press("Enter")
    text = agent.expect(protocol.Text)
    assert text.text == "héllo wörld\nline two"


def test_held_keys_are_released_when_control_is_released(open_viewer, agents):
    """A key still held when control is released is sent up first; then nothing more is sent."""
    viewer, agent = accepted_session(open_viewer, agents)
    viewer.take_control(agent)
    viewer.page.keyboard.down("ShiftLeft")
    assert agent.expect(protocol.Key).down is True
    viewer.by("control-toggle").click()
    released = agent.expect(protocol.Key)
    assert (released.code, released.down) == ("ShiftLeft", False)
    agent.expect(protocol.Control, lambda m: not m.granted)
    viewer.page.keyboard.up("ShiftLeft")
    viewer.by("screen").focus()
    viewer.page.keyboard.press("KeyZ")     # released: must not be sent
    viewer.take_control(agent)
    viewer.page.keyboard.press("KeyQ")
    assert agent.expect(protocol.Key).code == "KeyQ"
    kinds = [m["type"] for m in viewer.sent_once(lambda sent: any(
        m.get("code") == "KeyQ" for m in sent))]
    released_at = kinds.index("release_control")
    retaken_at = kinds.index("take_control", released_at)
    assert not [k for k in kinds[released_at:retaken_at] if k in ("key", "pointer_move")]


def test_held_keys_are_released_when_the_page_loses_focus(open_viewer, agents):
    """Leaving the page releases what was held, so nothing sticks on the customer's PC."""
    viewer, agent = accepted_session(open_viewer, agents)
    viewer.take_control(agent)
    viewer.page.keyboard.down("ControlLeft")
    assert agent.expect(protocol.Key).down is True
    viewer.page.evaluate("window.dispatchEvent(new Event('blur'))")
    released = agent.expect(protocol.Key)
    assert (released.code, released.down) == ("ControlLeft", False)


def test_reload_mid_session_rejoins_the_same_session(open_viewer, agents):
    """A reload re-authenticates with the tab's token and rejoins the detached session."""
    viewer, agent = accepted_session(open_viewer, agents, machine="REJOIN-PC")
    agent.send_full((120, 30, 160), seq=1)
    agent.expect(protocol.Ack, lambda m: m.seq == 1)
    viewer.page.reload()
    refresh = agent.expect(protocol.Refresh)  # the relay asks for a full image on rejoin
    agent.send_image(Image.new("RGB", (1600, 1000), (120, 30, 160)), seq=2,
                     monitor=refresh.monitor, flags=protocol.FLAG_LAST | protocol.FLAG_FULL)
    agent.expect(protocol.Ack, lambda m: m.seq == 2)
    viewer.wait_for_pixel(5, 5, (120, 30, 160))
    assert viewer.page.locator("#session-machine").text_content() == "REJOIN-PC"
    assert viewer.by("queue").is_hidden()


# --- ending ---------------------------------------------------------------------------------


def relay_events(relay) -> list[tuple]:
    """(at, session, kind, detail) of everything the relay recorded besides the sessions."""
    relay.settle()  # the relay writes its ledger off the event loop (issue 16)
    with Ledger(relay.data / DB_FILE) as ledger:
        return ledger.events()


def test_support_person_ends_the_session(open_viewer, agents):
    """End session tells the agent (by technician) and returns to the queue."""
    viewer, agent = accepted_session(open_viewer, agents)
    viewer.by("end-session").click()
    viewer.by("confirm-end").click()
    ended = agent.expect(protocol.Ended)
    assert ended.by == "technician"
    viewer.by("queue").wait_for(state="visible")
    assert viewer.by("screen").is_hidden()


def test_ending_while_a_key_is_held_releases_it_first_and_records_no_refusal(
        open_viewer, agents, relay):
    """End session with a key held: the customer gets the release before the end, and the
    relay records no refused message (a release after the end would be one)."""
    viewer, agent = accepted_session(open_viewer, agents)
    viewer.take_control(agent)
    viewer.page.keyboard.down("ShiftLeft")
    assert agent.expect(protocol.Key).down is True
    # A click on the button would move the focus first, which releases held keys by itself;
    # a click that leaves the focus on the screen (an access key, a script) must too (the
    # confirmation it opens takes the focus; ending then releases whatever is still held).
    viewer.page.evaluate("() => document.querySelector('[data-testid=end-session]').click()")
    released = agent.expect(protocol.Key)
    assert (released.code, released.down) == ("ShiftLeft", False)
    viewer.by("confirm-end").click()
    agent.expect(protocol.Ended)
    viewer.by("queue").wait_for(state="visible")
    viewer.page.keyboard.up("ShiftLeft")
    kinds = [m["type"] for m in viewer.sent_once(
        lambda sent: any(m["type"] == "end" for m in sent))]
    assert "key" not in kinds[kinds.index("end"):]
    assert not [e for e in relay_events(relay) if e[2] == "refused"]


def test_customer_ending_the_session_is_announced(open_viewer, agents):
    """When the customer closes, the viewer says so and goes back to the queue."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send(protocol.Close("the customer chose Close"))
    notice = viewer.page.locator("#notice")
    notice.wait_for(state="visible")
    assert "The customer ended the session" in notice.text_content()
    assert viewer.by("queue").is_visible()
    assert viewer.by("screen").is_hidden()


# --- the session code and the customer's pause (issue 12) ------------------------------


def test_queue_and_session_header_show_the_code_the_customer_reads_out(open_viewer, agents):
    """The queue row and, once accepted, the session's header show the caller's code, grouped
    as the customer's panel shows it."""
    viewer = open_viewer().signed_in()
    agent = agents()
    code = agent.registered.code
    shown = viewer.item(agent.session).get_by_test_id("session-code")
    shown.wait_for(state="visible")
    assert shown.text_content() == f"{code[:3]} {code[3:]}"
    viewer.accept(agent)
    assert viewer.by("header-session-code").text_content() == f"{code[:3]} {code[3:]}"


def test_a_customers_pause_covers_the_screen_and_stops_input_until_resumed(open_viewer,
                                                                            agents):
    """pause(true): the screen says "Paused by the customer" and keys stay in the page;
    pause(false): the notice goes and keys reach the customer again."""
    viewer, agent = accepted_session(open_viewer, agents)
    agent.send_full((200, 30, 30))
    viewer.take_control(agent)
    viewer.by("screen").click()
    agent.send(protocol.Pause(True))
    viewer.by("paused").wait_for(state="visible")
    assert "Paused by the customer" in viewer.by("paused").text_content()
    viewer.page.keyboard.press("KeyQ")  # the screen keeps the focus, under the notice
    agent.send(protocol.Pause(False))
    viewer.by("paused").wait_for(state="hidden")
    viewer.page.keyboard.press("KeyW")
    agent.expect(protocol.Key, lambda m: m.code == "KeyW" and not m.down)
    assert not [m for m in agent.drain() if isinstance(m, protocol.Key) and m.code == "KeyQ"]
    assert not [m for m in viewer.sent if m.get("code") == "KeyQ"]


def test_with_require_code_the_support_person_types_the_callers_code(browser, relay_factory):
    """serve --require-code: Accept asks for the code; a wrong one is refused with a
    sentence and asked again; the right one (typed grouped) opens the session."""
    relay = relay_factory("--require-code")
    relay.add_technician("david", "David", "david-pw")
    viewer = Viewer(browser, relay).signed_in()
    agent = ScriptedAgent(relay)
    try:
        code = agent.registered.code
        wrong = "000000" if code != "000000" else "999999"
        viewer.item(agent.session).get_by_test_id("accept").click()
        viewer.by("code-input").fill(wrong)
        viewer.by("code-input").press("Enter")
        error = viewer.page.locator("#code-error")
        error.wait_for(state="visible")
        viewer.page.wait_for_function(
            "() => document.querySelector('#code-error').textContent.includes('not this')")
        viewer.by("code-input").fill(f"{code[:3]} {code[3:]}")
        viewer.by("code-accept").click()
        viewer.by("screen").wait_for(state="visible")
        assert agent.expect(protocol.Accepted).code == code
        accepts = [m for m in viewer.sent if m.get("type") == "accept"]
        assert [m["code"] for m in accepts] == ["", wrong, code]
        assert viewer.errors == []
    finally:
        agent.close()
        viewer.close()
