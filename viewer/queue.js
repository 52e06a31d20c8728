// The list of customers waiting for this support person, and the tone and desktop
// notification when someone new starts waiting. Agent-supplied names go in as text only.

const ALERT_TITLE = "A customer is waiting";

export class QueueList {
    // onSound(blocked) hears whether the browser keeps the chime silent until a click.
    // onDecline(session, machine) asks before turning a waiting customer down.
    constructor({ list, template, count, empty, more }, onAccept, onSound = () => {},
                onDecline = () => {}) {
        this.list = list;
        this.more = more;
        this.template = template;
        this.count = count;
        this.empty = empty;
        this.onAccept = onAccept;
        this.onDecline = onDecline;
        this.entries = [];
        this.moreCount = 0;         // waiting, but not listed
        this._rows = new Map();     // session -> {row, entry, receivedAt}
        this._seen = null;          // ids already announced; null until the first list
        this._chime = new Chime(onSound);
        this._chime.prepare();
    }

    // A fresh list from the relay: the newest entries, and how many older ones wait unlisted
    // (a flood of fake customers must not hide the one on the phone, who is the newest).
    update(entries, more = 0) {
        const now = performance.now();
        const arrivals = [];
        const ids = new Set(entries.map((e) => e.session));
        for (const [id, item] of this._rows) {
            if (!ids.has(id)) {
                item.row.remove();
                this._rows.delete(id);
            }
        }
        for (const entry of entries) {
            let item = this._rows.get(entry.session);
            if (!item) {
                item = { row: this._makeRow(entry) };
                this._rows.set(entry.session, item);
                if (this._seen !== null && !this._seen.has(entry.session)) {
                    arrivals.push(entry);
                    item.row.classList.add("arrived");
                }
            }
            item.entry = entry;
            item.receivedAt = now;
            this._fill(item);
            this.list.append(item.row);  // keeps the relay's order
        }
        this._seen = new Set([...(this._seen || []), ...ids]);
        this.entries = entries;
        this.count.textContent = String(entries.length + more);
        this.count.classList.toggle("some", entries.length + more > 0);
        this.moreCount = more;
        this.more.textContent = more ? `${more} more waiting longer are not listed.` : "";
        this.more.hidden = !more;
        this.empty.hidden = entries.length > 0;
        const waiting = arrivals.filter((e) => e.state === "waiting");
        if (waiting.length) this._announce(waiting);
    }

    // Forget the list (signed out); the next list announces nobody.
    clear() {
        this.update([]);
        this._seen = null;
    }

    // Advance the "waited" times without waiting for the relay.
    tick() {
        const now = performance.now();
        for (const item of this._rows.values()) this._fillWaited(item, now);
    }

    setBusy(session, busy) {
        const item = this._rows.get(session);
        if (!item) return;
        const button = item.row.querySelector("[data-testid=accept]");
        button.disabled = busy;
        button.textContent = busy ? "Opening…" : acceptLabel(item.entry);
        item.row.querySelector("[data-testid=decline]").disabled = busy;
    }

    unlockSound() {
        this._chime.unlock();
    }

    _makeRow(entry) {
        const row = this.template.content.firstElementChild.cloneNode(true);
        row.dataset.sessionId = entry.session;
        row.querySelector("[data-testid=accept]").addEventListener("click", () => {
            this._chime.unlock();
            this.onAccept(row.dataset.sessionId);
        });
        row.querySelector("[data-testid=decline]").addEventListener("click", () => {
            const item = this._rows.get(row.dataset.sessionId);
            this.onDecline(row.dataset.sessionId, item?.entry.machine || "");
        });
        return row;
    }

    _fill(item) {
        const { row, entry } = item;
        row.dataset.state = entry.state;
        row.querySelector(".machine").textContent = entry.machine || "Unnamed computer";
        row.querySelector(".user").textContent = entry.user || "Unknown user";
        row.querySelector(".avatar").textContent = initial(entry.machine);
        const code = row.querySelector("[data-testid=session-code]");
        code.textContent = groupedCode(entry.code);
        code.title = "The session code on the customer's screen";
        code.hidden = !entry.code;
        const button = row.querySelector("[data-testid=accept]");
        if (!button.disabled) button.textContent = acceptLabel(entry);
        // Only a waiting caller can be declined; a detached session of ours is rejoined.
        row.querySelector("[data-testid=decline]").hidden = entry.state !== "waiting";
        this._fillWaited(item, performance.now());
    }

    _fillWaited(item, now) {
        const seconds = item.entry.waited_s + (now - item.receivedAt) / 1000;
        const words = item.entry.state === "detached" ? "Disconnected" : "Waiting";
        const waited = item.row.querySelector(".waited");
        waited.textContent = `${words} ${clock(seconds)}`;
        // The clock time they started, which tells two starts of one computer apart at a glance.
        const since = new Date(Date.now() - seconds * 1000);
        waited.title = `Since ${since.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`;
    }

    _announce(entries) {
        this._chime.play();
        if (!("Notification" in window) || Notification.permission !== "granted") return;
        if (!document.hidden) return;
        for (const entry of entries) {
            const notice = new Notification(ALERT_TITLE, {
                body: `${entry.machine} (${entry.user})`,
                tag: entry.session,
                icon: "favicon.svg",  // beside the console, under /console/
            });
            notice.onclick = () => {
                window.focus();
                notice.close();
            };
        }
    }
}

// "482913" as the customer's panel shows it: "482 913".
export function groupedCode(code) {
    return code ? `${code.slice(0, 3)} ${code.slice(3)}` : "";
}

function acceptLabel(entry) {
    return entry.state === "detached" ? "Rejoin" : "Accept";
}

function initial(name) {
    const first = Array.from((name || "?").trim())[0] || "?";
    return first.toUpperCase();
}

// "0:07", "12:34", "1:02:03"; with hours always: "0:00:07"
export function clock(totalSeconds, withHours = false) {
    const s = Math.max(0, Math.floor(totalSeconds));
    const hours = Math.floor(s / 3600);
    const minutes = Math.floor((s % 3600) / 60);
    const seconds = String(s % 60).padStart(2, "0");
    if (hours || withHours) return `${hours}:${String(minutes).padStart(2, "0")}:${seconds}`;
    return `${minutes}:${seconds}`;
}

// A short two-note tone made with WebAudio. The context is made when the page loads: a
// browser that lets this page play sound (its autoplay policy, or the person's earlier
// use of the site) starts it running, so the chime works after a reload; otherwise it
// stays suspended until a click, and onchange(true) lets the page ask for one.
// Once the browser has let it run, the context rests (suspended by us) except while a
// chime plays: a running context costs Chromium 2.7% of a core rendering silence, all
// day long (its audio service and the page's output thread, measured from /proc).
const CHIME_S = 1;  // the notes end 0.67 s after they start

class Chime {
    constructor(onchange) {
        this.context = null;
        this.onchange = onchange;
        this._allowed = false;  // the browser has let the context run once
        this._rest = null;
    }

    prepare() {
        const Context = window.AudioContext || window.webkitAudioContext;
        if (!Context) return;   // no WebAudio: nothing a click could turn on
        this.context = new Context();
        this.context.onstatechange = () => this._changed();
        this._changed();
    }

    _changed() {
        if (this.context.state === "running" && !this._allowed) {
            this._allowed = true;
            this._restSoon(0);
        }
        this.onchange(!this._allowed);
    }

    _restSoon(seconds) {
        clearTimeout(this._rest);
        const context = this.context;
        this._rest = setTimeout(() => context.suspend().catch(() => {}), seconds * 1000);
    }

    unlock() {
        if (!this._allowed && this.context?.state === "suspended") {
            this.context.resume().catch(() => {});
        }
    }

    play() {
        const context = this.context;
        if (!context || !this._allowed) return;
        // The notes are set on the context's clock, which stands still while it rests and
        // goes on from the resume: they sound 10 ms after it.
        context.resume().catch(() => {});
        this._restSoon(CHIME_S);
        const start = context.currentTime + 0.01;
        [[880, 0], [1175, 0.16]].forEach(([frequency, offset]) => {
            const oscillator = context.createOscillator();
            const gain = context.createGain();
            oscillator.type = "sine";
            oscillator.frequency.value = frequency;
            gain.gain.setValueAtTime(0, start + offset);
            gain.gain.linearRampToValueAtTime(0.18, start + offset + 0.02);
            gain.gain.exponentialRampToValueAtTime(0.001, start + offset + 0.45);
            oscillator.connect(gain).connect(context.destination);
            oscillator.start(start + offset);
            oscillator.stop(start + offset + 0.5);
        });
    }
}
