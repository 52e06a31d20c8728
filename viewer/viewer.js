// The page: which view shows, the session's state, and the wiring between the connection
// (connection.js), the screen (display.js), the keyboard and pointer (input.js) and the
// queue (queue.js). Everything an agent sends reaches the DOM through textContent only.

import { FLAG_LAST, NOTICE_CODES, technicianWords } from "./protocol.js";
import { Chat } from "./chat.js";
import { Connection, storedToken, viewerSocketUrl } from "./connection.js";
import { Display } from "./display.js";
import { Input } from "./input.js";
import { QueueList, clock, groupedCode } from "./queue.js";
import { SessionNote } from "./note.js";
import { Files } from "./files.js";

const SESSION_KEY = "spotlight.session";
const $ = (id) => document.getElementById(id);

let soundBlocked = false;   // the browser keeps the arrival chime silent until a click
const connection = new Connection(viewerSocketUrl(window.location));
const display = new Display($("screen"), $("viewport"), $("stage"), $("remote-pointer"));
const input = new Input($("screen"), display, (message) => sendForSession(message));
const chat = new Chat(
    { pane: $("chat-pane"), log: $("chat-log"), form: $("chat-form"), input: $("chat-input"),
      toggle: $("chat-toggle"), unread: $("chat-unread"), clip: $("remote-clipboard"),
      clipText: $("remote-clipboard-text"), clipCopy: $("remote-clipboard-copy"),
      clipClose: $("remote-clipboard-close") },
    (message) => session !== null && connection.send({ ...message, session: session.id }),
    (text) => toast(text),
);
input.onrefused = (code) => toast(technicianWords(code));
const queue = new QueueList(
    { list: $("queue"), template: $("queue-item-template"), count: $("queue-count"),
      empty: $("queue-empty"), more: $("queue-more") },
    (session) => accept(session),
    (blocked) => showSound(blocked),
    (session, machine) => askToDecline(session, machine),
);
const note = new SessionNote(
    { form: $("note"), title: $("note-title"), text: $("session-note"), status: $("note-status"),
      done: $("note-done"), live: $("note-live"), after: $("note-after") },
    (message) => connection.send(message),
);

const files = new Files({
    send: (message) => connection.send(message),
    sendBinary: (bytes) => {
        if (!connection.connected) return false;
        connection.socket.send(bytes);
        return true;
    },
    buffered: () => connection.socket?.bufferedAmount ?? 0,
    sessionId: () => (session?.attached ? session.id : null),
}, $("files"), $("file-template"));

// The open session: {id, machine, user, acceptedAt, attached, control: "off"|"asking"|"on"}
let session = null;
let pendingAccept = null;   // the session id we asked to accept, until the relay answers
let rejoin = loadRejoin();  // {id, asked}: the session to rejoin after a reconnect
let rejoining = null;       // the session id of a rejoin accept sent blindly, until answered
let drawnUpdates = 0;
let lastBytes = 0;

// --- views ----------------------------------------------------------------------------

function show(view) {
    $("login-view").hidden = view !== "login";
    $("queue-view").hidden = view !== "queue";
    $("session-view").hidden = view !== "session";
    updateTitle();
}

function notice(text) {
    $("notice-text").textContent = text;
    $("notice").hidden = !text;
}

function updateTitle() {
    // The session just accepted is still listed as waiting until the relay's next queue
    // update; counting it would flash "1 waiting" for the customer now on screen.
    const waiting = queue.entries.filter(
        (e) => e.state === "waiting" && e.session !== session?.id).length + queue.moreCount;
    // In a session the queue is out of sight: say that others are waiting.
    $("session-waiting").textContent = `${waiting} waiting`;
    $("session-waiting").hidden = waiting === 0;
    if (session) document.title = `${session.machine} – Spotlight Remote Support`;
    else if (waiting) document.title = `(${waiting}) waiting – Spotlight Remote Support`;
    else document.title = "Spotlight Remote Support";
}

// --- signing in and out ---------------------------------------------------------------

$("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const user = $("login-user").value.trim();
    const password = $("login-password").value;
    queue.unlockSound();
    if (!user || !password) {
        loginError("Enter your user name and password.");
        return;
    }
    loginError("");
    $("login-submit").disabled = true;
    $("login-submit").textContent = "Signing in…";
    connection.login(user, password);
});

function loginError(text) {
    $("login-error").textContent = text;
    $("login-error").hidden = !text;
}

function resetLoginButton() {
    $("login-submit").disabled = false;
    $("login-submit").textContent = "Sign in";
}

$("logout").addEventListener("click", () => {
    if (session) confirmThen("signout-dialog", signOut);
    else signOut();
});

function signOut() {
    if (session) endSession();
    connection.logout();
}

// --- confirmations ---------------------------------------------------------------------

// A modal dialog: the rest of the page is inert, the confirm button has the focus (Enter
// confirms), Esc cancels, and Tab cycles between its buttons. `action` runs on confirm only.
function confirmThen(id, action) {
    const dialog = $(id);
    if (dialog.open) return;
    dialog.returnValue = "";
    dialog.onclose = () => {
        dialog.onclose = null;
        if (dialog.returnValue === "confirm") action();
    };
    dialog.showModal();
}

function closeDialogs() {
    for (const dialog of document.querySelectorAll("dialog.confirm")) {
        if (dialog.open) dialog.close("");
    }
}

for (const dialog of document.querySelectorAll("dialog.confirm")) {
    dialog.addEventListener("keydown", (event) => {
        if (event.key !== "Tab") return;
        const buttons = [...dialog.querySelectorAll("input, button")];
        const edge = event.shiftKey ? buttons[0] : buttons.at(-1);
        if (document.activeElement !== edge) return;
        event.preventDefault();
        (event.shiftKey ? buttons.at(-1) : buttons[0]).focus();
    });
}

// --- sound -----------------------------------------------------------------------------

// The browser may keep a reloaded page silent until a click: then say so, and let any
// click or key on the page (or this button) turn the chime on.
function showSound(blocked) {
    soundBlocked = blocked;
    $("sound-on").hidden = !blocked || !connection.welcomed;
}

$("sound-on").addEventListener("click", () => queue.unlockSound());
for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => {
        if (soundBlocked) queue.unlockSound();
    }, { capture: true });
}

connection.onstate = (words, kind) => {
    const status = $("status");
    status.textContent = words;
    status.dataset.kind = kind;
    showLinkDown(session && kind !== "ok" ? words : "");
    if (kind === "ok") return;
    if (rejoin) rejoin.asked = false;
    if (session) {
        session.attached = false;
        setControl("off", { sendReleases: false });
    }
};

connection.onwelcome = (welcome) => {
    resetLoginButton();
    $("login-password").value = "";
    $("signed-in").textContent = welcome.name || welcome.technician;
    $("signed-in").hidden = false;
    $("logout").hidden = false;
    showSound(soundBlocked);
    if (!session) show("queue");
};

connection.onsignedout = (reason) => {
    resetLoginButton();
    leaveSession();
    forgetRejoin();
    queue.clear();
    notice("");
    $("signed-in").hidden = true;
    $("logout").hidden = true;
    showSound(soundBlocked);
    $("login-password").value = "";
    loginError(reason);
    show("login");
    $(reason ? "login-password" : "login-user").focus();
};

// --- messages from the relay -----------------------------------------------------------

connection.onmessage = (message) => {
    if (files.handle(message)) return;
    switch (message.type) {
        case "queue":
            queue.update(message.sessions, message.more);
            updateTitle();
            rejoinIfDetached(message.sessions);
            break;
        case "accepted":
            openSession(message);
            break;
        case "pause":
            if (session) setPaused(message.paused);
            break;
        case "desktop":
            if (session) setSecure(message.secure);
            break;
        case "elevation":
            if (session) toast(ELEVATION_WORDS[message.state]);
            break;
        case "control":
            if (session?.id === message.session) {
                setControl(message.granted ? "on" : "off", { sendReleases: false });
            }
            break;
        case "cursor":
            if (session) display.showCursor(message.monitor, message.x, message.y);
            break;
        case "screens":
            if (session) {
                display.setScreens(message.screens);
                fillMonitors(message.screens);
            }
            break;
        case "ended":
            if (session?.id === message.session) {
                const machine = session.machine;
                closeSession(endedWords(message));
                note.ended(machine);
            }
            break;
        case "note":
            note.received(message);
            break;
        case "noted":
            note.noted(message);
            break;
        case "chat":
            if (session?.id === message.session) chat.add("customer", message.text);
            break;
        case "clipboard":  // the relay sends it only while we hold control
            if (session?.id === message.session) chat.offerClipboard(message.text);
            break;
        case "error":
            onError(message);
            break;
        default:
            break;
    }
};

connection.onchunk = (buffer) => files.chunk(buffer);

connection.onframe = (frame) => {
    if (!session) return;
    const id = session.id;
    display.draw(frame).then(() => {
        if (!(frame.flags & FLAG_LAST) || session?.id !== id) return;
        drawnUpdates += 1;
        connection.send({ type: "ack", session: id, seq: frame.seq });
        $("screen-hint").hidden = display.hasImage;
        syncMonitorChoice();
    });
};

function onError(error) {
    const text = technicianWords(error.code, error.message);
    if (error.code === "note-closed" || (error.code === "rate-limited" && note.sent !== null)) {
        note.refused(error.code, text);
        return;
    }
    if (rejoining && ["no-such-session", "open-elsewhere"].includes(error.code)) {
        // The answer to a rejoin of a session the queue no longer listed.
        rejoining = null;
        const words = error.code === "open-elsewhere" ? technicianWords(error.code)
            : "The session ended while the connection was lost.";
        if (session) closeSession(words);
        else forgetRejoin();
        return;
    }
    if (["code-required", "wrong-code"].includes(error.code) && pendingAccept) {
        askForCode(pendingAccept, error.code === "wrong-code");
        return;
    }
    if (NOTICE_CODES.includes(error.code)) {  // one message refused; nothing else changes
        if (session && error.code.startsWith("chat")) chat.add("notice", text);
        else toast(text);
        return;
    }
    if (error.code === "no-such-session") {
        // Also the late answer to an ack sent just before the session ended: say nothing then.
        if (pendingAccept) {
            queue.setBusy(pendingAccept, false);
            pendingAccept = null;
            notice("That customer is no longer waiting.");
        } else if (session) {
            closeSession("The session is no longer available.");
        }
        return;
    }
    if (session) {
        if (session.control === "asking") setControl("off", { sendReleases: false });
        toast(text);
    } else {
        if (pendingAccept) queue.setBusy(pendingAccept, false);
        pendingAccept = null;
        notice(text);
    }
}

let toastTimer = null;
function toast(text) {
    $("toast").textContent = text;
    $("toast").hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { $("toast").hidden = true; }, 6000);
}

function endedWords(ended) {
    if (ended.by === "customer") return technicianWords("customer-closed");
    if (ended.by === "technician") return `You ended the session with ${session.machine}.`;
    return technicianWords(ended.reason);
}

// --- the session -----------------------------------------------------------------------

function accept(id, code = "") {
    queue.unlockSound();
    notice("");
    queue.setBusy(id, true);
    pendingAccept = id;
    if (!connection.send({ type: "accept", session: id, code })) {
        queue.setBusy(id, false);
        pendingAccept = null;
    }
}

function openSession(accepted) {
    pendingAccept = null;
    rejoining = null;
    const same = session?.id === accepted.session;
    // The relay says how long the session has run, so the timer matches the billed time
    // after a reload, a reconnect or a rejoin from another tab.
    const acceptedAt = Date.now() - accepted.elapsed_s * 1000;
    session = {
        id: accepted.session, machine: accepted.machine, user: accepted.user,
        acceptedAt, attached: true, control: "off",
    };
    rejoin = { id: session.id, asked: false };
    saveRejoin();
    if (!same) {
        display.reset(accepted.screens);
        chat.reset(accepted.user || accepted.machine);
    }
    else display.setScreens(accepted.screens);
    fillMonitors(accepted.screens);
    $("session-machine").textContent = accepted.machine || "Unnamed computer";
    $("session-machine").title = $("session-machine").textContent;  // shown cut short when narrow
    $("session-code").textContent = groupedCode(accepted.code);
    $("session-user").textContent = accepted.user || "Unknown user";
    $("screen-hint").hidden = display.hasImage;
    note.open(session.id, session.machine || "this computer");
    const machine = session.machine || "this computer";
    $("end-title").textContent = `End the session with ${machine}?`;
    $("signout-title").textContent = `Sign out and end the session with ${machine}?`;
    showLinkDown("");
    setControl("off", { sendReleases: false });
    setPaused(accepted.paused);
    setSecure(false);  // the relay says `desktop` right after if a prompt is up
    notice("");
    show("session");
    tick();
}

// Paused by the customer: no picture and no input until they resume (the relay drops both
// anyway; the page says so and keeps its keys to itself).
function setPaused(paused) {
    session.paused = paused;
    $("paused").hidden = !paused;
    syncInput();
}

// A Windows administrator prompt on the customer's PC (the secure desktop): nobody's program
// can see or click it, so the last image stays under a notice and no input is sent (the
// relay drops it and the agent refuses it as well).
function setSecure(secure) {
    session.secure = secure;
    $("secure-desktop-text").textContent = technicianWords("secure-desktop");
    $("secure-desktop").hidden = !secure;
    syncInput();
}

function syncInput() {
    if (session.control !== "on") return;
    // the customer's side let go of held keys already
    if (session.paused || session.secure) input.disable({ sendReleases: false });
    else input.enable();
}

const ELEVATION_WORDS = Object.freeze({
    asked: "Asking the customer to restart the program as administrator…",
    declined: "The customer did not restart as administrator; the session goes on as before.",
    started: "The customer's program now runs as administrator; the session goes on.",
    failed: technicianWords("handoff-failed"),
});

$("elevate").addEventListener("click", () => {
    if (session) connection.send({ type: "elevate", session: session.id });
});
// Decline asks first: the button sits beside Accept, and a caller turned down by a slip
// would have to start the program again (there is no undo once the relay ended it).
function askToDecline(id, machine) {
    $("decline-title").textContent = `Decline the call from ${machine || "this computer"}?`;
    confirmThen("decline-dialog", () => {
        queue.unlockSound();
        if (connection.send({ type: "decline", session: id })) {
            notice(`You declined the call from ${machine || "this computer"}.`);
        }
    });
}

// --relay --require-code: the support person types the code the customer reads out.
function askForCode(id, wrong) {
    queue.setBusy(id, false);
    pendingAccept = null;
    $("code-error").textContent = wrong ? technicianWords("wrong-code") : "";
    $("code-input").value = "";
    confirmThen("code-dialog", () => accept(id, $("code-input").value.replace(/\D/g, "")));
}

// Enter in the code field accepts (implicit submission would pick Cancel, the first button).
$("code-input").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    $("code-dialog").querySelector("[value=confirm]").click();
});

// While the link to the relay is down the last picture stays on the canvas: say that it is
// frozen, and that nothing typed reaches the customer, until the link is back.
function showLinkDown(words) {
    if (words) files.stopAll(technicianWords("file-lost")); // the relay cancelled them
    $("link-down").hidden = !words;
    $("link-down-state").textContent = words;
}

function setControl(state, { sendReleases = true } = {}) {
    if (!session) return;
    session.control = state;
    if (state === "on") syncInput();  // (not while paused or under an administrator prompt)
    else input.disable({ sendReleases });
    const toggle = $("control-toggle");
    toggle.textContent = state === "on" ? "Release control" : state === "asking" ? "Asking…" : "Take control";
    toggle.classList.toggle("active", state === "on");
    toggle.disabled = state === "asking" || !connection.connected;
    const mode = $("control-state");
    mode.dataset.control = state;
    mode.textContent = state === "on" ? "You are in control" : state === "asking"
        ? "Asking for control…" : "View only";
    $("viewport").classList.toggle("controlling", state === "on");
    for (const id of ["special-keys", "type-text", "type-send"]) $(id).disabled = state !== "on";
    if (state !== "on") closeKeysMenu();
}

$("control-toggle").addEventListener("click", () => {
    if (!session) return;
    if (session.control === "on") {
        input.releaseAll();
        connection.send({ type: "release_control", session: session.id });
        setControl("off");
    } else if (connection.send({ type: "take_control", session: session.id })) {
        setControl("asking");
    }
});

function endSession() {
    if (!session) return;
    // Release held keys and buttons while the session still exists to take them.
    input.disable();
    const sent = connection.send({
        type: "end", session: session.id, reason: "ended by the support person",
    });
    if (!sent) $("status").textContent = "Not connected: the session cannot be ended yet.";
}

$("end-session").addEventListener("click", () => confirmThen("end-dialog", endSession));

function closeSession(words) {
    leaveSession();
    forgetRejoin();
    show("queue");
    notice(words);
}

function leaveSession() {
    if (!session) return;
    files.stopAll(technicianWords("file-lost"));
    input.disable({ sendReleases: false });
    session = null;
    display.reset([]);
    chat.hideClipboard();  // a copied password does not stay on screen after the session
    closeKeysMenu();
    closeDialogs();
    showLinkDown("");
    $("paused").hidden = true;
    $("secure-desktop").hidden = true;
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    for (const entry of queue.entries) queue.setBusy(entry.session, false);
}

// Messages the keyboard and pointer produce, addressed to the open session.
function sendForSession(message) {
    if (!session || session.control !== "on" || session.secure) return;
    connection.send({ ...message, session: session.id });
}

// After a reload or a lost connection, the relay lists our session as "detached". If it
// is not listed, the relay may still hold our old, silently dead link: ask anyway, and the
// answer (accepted, no-such-session or open-elsewhere) decides.
function rejoinIfDetached(entries) {
    if (!rejoin || rejoin.asked || session?.attached) return;
    const entry = entries.find((e) => e.session === rejoin.id);
    if (entry && entry.state !== "detached") return;
    rejoin.asked = connection.send({ type: "accept", session: rejoin.id });
    rejoining = !entry && rejoin.asked ? rejoin.id : null;
}

function loadRejoin() {
    try {
        const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
        return saved && typeof saved.id === "string" ? saved : null;
    } catch {
        return null;
    }
}

function saveRejoin() {
    try {
        sessionStorage.setItem(SESSION_KEY, JSON.stringify(rejoin));
    } catch {
        // Without storage a reload simply shows the session in the queue to rejoin by hand.
    }
}

function forgetRejoin() {
    rejoin = null;
    try {
        sessionStorage.removeItem(SESSION_KEY);
    } catch {
        // nothing stored
    }
}

// --- screen tools ----------------------------------------------------------------------

function fillMonitors(screens) {
    const select = $("monitor");
    select.replaceChildren();
    if (screens.length <= 2) {
        select.hidden = true;
        return;
    }
    screens.forEach((screen, index) => {
        const option = document.createElement("option");
        option.value = String(index);
        const name = index === 0 ? "All monitors" : `Monitor ${index}`;
        option.textContent = `${name} (${screen.width}×${screen.height})`;
        select.append(option);
    });
    select.hidden = false;
    syncMonitorChoice();
}

function syncMonitorChoice() {
    const select = $("monitor");
    if (!select.hidden && display.monitor !== null && document.activeElement !== select) {
        select.value = String(display.monitor);
    }
}

$("monitor").addEventListener("change", (event) => {
    if (!session) return;
    connection.send({ type: "refresh", session: session.id, monitor: Number(event.target.value) });
    $("screen").focus({ preventScroll: true });
});

for (const [id, mode] of [["scale-fit", "fit"], ["scale-actual", "actual"]]) {
    $(id).addEventListener("click", () => {
        display.setMode(mode);
        $("scale-fit").setAttribute("aria-pressed", String(mode === "fit"));
        $("scale-actual").setAttribute("aria-pressed", String(mode === "actual"));
    });
}

// The special-keys menu follows the menu button pattern: Enter, Space or Down opens it on
// the first item and Up on the last; in it Up/Down move (wrapping), Home/End jump, Enter
// presses, Esc closes it back onto the button and Tab closes it on the way out.
const menuItems = () => [...$("keys-list").querySelectorAll("[role=menuitem]")];

function closeKeysMenu({ focusButton = false } = {}) {
    $("keys-list").hidden = true;
    $("special-keys").setAttribute("aria-expanded", "false");
    if (focusButton) $("special-keys").focus();
}

function openKeysMenu(index) {
    $("keys-list").hidden = false;
    $("special-keys").setAttribute("aria-expanded", "true");
    const items = menuItems();
    items.at(index).focus();
}

$("special-keys").addEventListener("click", (event) => {
    event.stopPropagation();
    if ($("keys-list").hidden) openKeysMenu(0);
    else closeKeysMenu();
});

$("special-keys").addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    openKeysMenu(event.key === "ArrowUp" ? -1 : 0);
});

$("keys-list").addEventListener("keydown", (event) => {
    const items = menuItems();
    const at = items.indexOf(document.activeElement);
    const moves = {
        ArrowDown: (at + 1) % items.length,
        ArrowUp: (at - 1 + items.length) % items.length,
        Home: 0,
        End: items.length - 1,
    };
    if (event.key in moves) {
        event.preventDefault();
        items[moves[event.key]].focus();
    } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeKeysMenu({ focusButton: true });
    } else if (event.key === "Tab") {
        closeKeysMenu();
    }
});

$("keys-list").addEventListener("click", (event) => {
    const item = event.target.closest("button[data-keys]");
    if (!item || item.getAttribute("aria-disabled") === "true") return;
    input.pressSequence(item.dataset.keys);
    closeKeysMenu();
    $("screen").focus({ preventScroll: true });
});

// --- leaving the screen and full screen ------------------------------------------------

// Ctrl+Alt+Home (input.js): out of the screen onto the toolbar, which shows itself in full
// screen because it has the focus.
input.onleave = () => $("control-toggle").focus();

$("fullscreen").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else $("session-view").requestFullscreen({ navigationUI: "hide" }).catch(() => {});
});

document.addEventListener("fullscreenchange", () => {
    const on = document.fullscreenElement === $("session-view");
    $("fullscreen").textContent = on ? "Exit full screen" : "Full screen";
    $("fullscreen").setAttribute("aria-pressed", String(on));
    // Keyboard Lock: in full screen the browser hands Esc, Alt+Tab and the Windows key to
    // the page, so they reach the customer (holding Esc still leaves full screen).
    if (on) {
        navigator.keyboard?.lock?.().catch(() => {});
        $("screen").focus({ preventScroll: true });
    } else {
        navigator.keyboard?.unlock?.();
    }
});

document.addEventListener("click", (event) => {
    if (!$("keys-menu").contains(event.target)) closeKeysMenu();
});
document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("keys-list").hidden) closeKeysMenu();
});

$("type-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const box = $("type-text");
    if (box.value && input.typeText(box.value)) box.value = "";
});

$("type-text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("type-form").requestSubmit();
    }
});

$("notice-close").addEventListener("click", () => notice(""));

$("alerts").addEventListener("click", async () => {
    queue.unlockSound();
    if ("Notification" in window && Notification.permission === "default") {
        await Notification.requestPermission();
    }
    showAlertsState();
});

function showAlertsState() {
    const button = $("alerts");
    if (!("Notification" in window)) {
        button.hidden = true;
        return;
    }
    const permission = Notification.permission;
    button.disabled = permission !== "default";
    button.textContent = permission === "granted" ? "Desktop alerts on"
        : permission === "denied" ? "Desktop alerts blocked" : "Turn on desktop alerts";
}

// --- once a second: times and rates -----------------------------------------------------

function tick() {
    queue.tick();
    note.tick();
    const bytes = connection.bytesReceived;
    const rate = bytes - lastBytes;
    lastBytes = bytes;
    if (!session) {
        drawnUpdates = 0;
        return;
    }
    $("session-timer").textContent = clock((Date.now() - session.acceptedAt) / 1000, true);
    $("stat-fps").textContent = `${drawnUpdates}/s`;
    $("stat-bandwidth").textContent = rate >= 1e6 ? `${(rate / 1e6).toFixed(1)} MB/s`
        : `${Math.round(rate / 1000)} KB/s`;
    $("stat-latency").textContent = connection.rttMs === null ? "–"
        : `${Math.round(connection.rttMs)} ms`;
    $("control-toggle").disabled = session.control === "asking" || !connection.connected;
    $("elevate").disabled = !connection.connected;
    drawnUpdates = 0;
}

setInterval(tick, 1000);
showAlertsState();
if (storedToken() && connection.resume()) show("queue");
else show("login");

// --- files to the customer (files.js) ---------------------------------------------------

$("send-file").addEventListener("change", (event) => {
    for (const file of event.target.files) files.offer(file);
    event.target.value = "";
});
$("viewport").addEventListener("dragover", (event) => {
    if (!session || !event.dataTransfer.types.includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    $("viewport").classList.add("drop-target");
});
$("viewport").addEventListener("dragleave", () => $("viewport").classList.remove("drop-target"));
$("viewport").addEventListener("drop", (event) => {
    $("viewport").classList.remove("drop-target");
    if (!session || !event.dataTransfer.files.length) return;
    event.preventDefault();
    for (const file of event.dataTransfer.files) files.offer(file);
});
