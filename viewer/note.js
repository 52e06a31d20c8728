// The support person's note on a session: a ticket number and what was done. It is saved
// as it is typed (the relay answers `noted`), during the session and for NOTE_EDITABLE_S
// after its end, when the note moves from the session's bottom bar to the top of the queue
// so it can be finished after the call. Plain text only: it reaches the DOM as a value.

import { MAX_NOTE_CHARS, NOTE_EDITABLE_S } from "./protocol.js";

const SAVE_AFTER_MS = 800;  // a pause in typing; the relay allows two saves a second

export class SessionNote {
    // send(message) -> bool: false while the link to the relay is down.
    constructor({ form, title, text, status, done, live, after }, send) {
        this.form = form;
        this.title = title;
        this.text = text;
        this.status = status;
        this.live = live;    // where it sits during a session (the bottom bar)
        this.after = after;  // where it sits after the end (above the queue)
        this.send = send;
        this.session = null;   // the session id the note belongs to
        this.sent = null;      // the text sent last, until `noted` answers it
        this.saved = "";       // the text the relay confirmed
        this.closesAt = 0;     // Date.now() after which the relay refuses changes; 0: live
        this._timer = null;
        text.maxLength = MAX_NOTE_CHARS;
        text.addEventListener("input", () => this._schedule());
        text.addEventListener("blur", () => this.save());
        form.addEventListener("submit", (event) => event.preventDefault());
        done.addEventListener("click", () => {
            this.save();
            this._hide();
        });
    }

    // A session opened (or reopened after a reload): its note, empty until the relay sends
    // the one saved before.
    open(session, machine) {
        if (this.session !== session) {
            this.save();
            this.session = session;
            this.text.value = "";
            this.saved = "";
            this.sent = null;
            this._say("");
        }
        this.closesAt = 0;
        this.title.textContent = "Note";
        this.text.placeholder = "Note: ticket, what was done…";
        this.text.disabled = false;
        this.form.dataset.place = "live";
        this.live.append(this.form);
        this.form.hidden = false;
        this.form.setAttribute("aria-label", `Note on the session with ${machine}`);
    }

    // The session ended: save what is typed, and keep the note open above the queue for
    // as long as the relay takes changes.
    ended(machine) {
        if (!this.session) return;
        this.save();
        this.closesAt = Date.now() + NOTE_EDITABLE_S * 1000;
        const until = new Date(this.closesAt).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        this.title.textContent = `Note on the session with ${machine || "this computer"}`;
        this.form.dataset.place = "after";
        this.after.prepend(this.form);
        this.form.hidden = false;
        this._say(this.text.value ? this._savedWords() : `You can write it until ${until}.`);
        this.form.title = `You can change this note until ${until}`;
    }

    // The relay's copy (sent when we rejoin a session): shown unless something newer is typed.
    received(message) {
        if (message.session !== this.session || this.text.value !== this.saved) return;
        this.text.value = message.text;
        this.saved = message.text;
        this._say("Saved");
    }

    noted(message) {
        if (message.session !== this.session || this.sent === null) return;
        this.saved = this.sent;
        this.sent = null;
        if (this.text.value === this.saved) this._say(this._savedWords());
        else this._schedule();
    }

    // The relay refused a change: too late, or too many at once (then try again shortly).
    refused(code, words) {
        this.sent = null;
        if (code === "rate-limited") {
            this._schedule();
            return;
        }
        this._say(words, true);
        if (code === "note-closed") this.text.disabled = true;
    }

    // Once a second: close an ended session's note when the relay no longer takes changes.
    tick() {
        if (this.closesAt && Date.now() > this.closesAt && !this.form.hidden) this._hide();
    }

    save() {
        clearTimeout(this._timer);
        this._timer = null;
        const text = this.text.value;
        if (!this.session || this.text.disabled || text === this.saved || this.sent !== null) {
            return;
        }
        if (this.send({ type: "note", session: this.session, text })) {
            this.sent = text;
            this._say("Saving…");
        } else {
            this._say("Not saved yet: no connection to the relay.", true);
        }
    }

    _schedule() {
        if (this.text.value !== this.saved) this._say("Not saved yet");
        clearTimeout(this._timer);
        this._timer = setTimeout(() => this.save(), SAVE_AFTER_MS);
    }

    _hide() {
        if (this.closesAt === 0) return;  // a live session's note stays
        this.form.hidden = true;
        this.session = null;
    }

    _savedWords() {
        return this.text.value ? "Saved" : "";
    }

    _say(words, problem = false) {
        this.status.textContent = words;
        this.text.title = words;  // where a narrow bottom bar shows it
        this.status.dataset.problem = problem ? "yes" : "no";
    }
}
