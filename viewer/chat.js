// The chat pane and the customer's clipboard offer. Every text from the customer is set with
// textContent, never as markup: a line saying "<b>" shows "<b>". No websocket here: the page
// hands in what arrives and passes `send` what to send (it adds the session).

import { CHAT_MESSAGES_PER_S, MAX_CHAT_CHARS, overLimit, technicianWords } from "./protocol.js";

const MAX_LINES = 500;  // a long session's chat stays this long; older lines scroll away

function clock(date) {
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export class Chat {
    // elements: pane, log, form, input, send, toggle, unread, clip, clipText, clipCopy,
    // clipClose. send(message) sends a message without `session`; notify(text) shows a
    // refusal to the support person.
    constructor(elements, send, notify) {
        this.el = elements;
        this.send = send;
        this.notify = notify;
        this.customer = "the customer";
        this.unread = 0;
        this.clipboard = "";
        this._sentAt = [];
        this.el.input.maxLength = MAX_CHAT_CHARS * 2;  // astral characters count twice here
        this.el.form.addEventListener("submit", (event) => {
            event.preventDefault();
            this.submit();
        });
        this.el.input.addEventListener("keydown", (event) => {
            if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
                event.preventDefault();
                this.submit();
            }
        });
        this.el.toggle.addEventListener("click", () => this.setOpen(this.el.pane.hidden));
        this.el.clipCopy.addEventListener("click", () => this.copyClipboard());
        this.el.clipClose.addEventListener("click", () => this.hideClipboard());
    }

    get open() {
        return !this.el.pane.hidden;
    }

    // A new session: an empty log, the clipboard offer gone, the pane as it was.
    reset(customer) {
        this.customer = customer || "the customer";
        this.el.log.replaceChildren();
        this.el.input.value = "";
        this.el.input.placeholder = `Message ${this.customer}`;
        this.unread = 0;
        this._sentAt = [];
        this._showUnread();
        this.hideClipboard();
    }

    setOpen(open) {
        this.el.pane.hidden = !open;
        this.el.toggle.setAttribute("aria-expanded", String(open));
        if (open) {
            this.unread = 0;
            this._showUnread();
            this.el.input.focus({ preventScroll: true });
        }
    }

    submit() {
        const text = this.el.input.value.replace(/\r\n?/g, "\n").trim();
        if (!text) return;
        const message = { type: "chat", text };
        const refused = overLimit(message) || (this._tooFast() ? "chat-rate-limited" : "");
        if (refused) {
            this.notify(technicianWords(refused));
            return;
        }
        if (!this.send(message)) return;
        this._sentAt.push(performance.now());
        this.el.input.value = "";
        this.add("you", text);
    }

    // The relay allows CHAT_MESSAGES_PER_S with a burst of CHAT_BURST; a page that keeps a
    // little under it never has a line refused (the relay's refusal is shown if it does).
    _tooFast() {
        const now = performance.now();
        this._sentAt = this._sentAt.filter((t) => now - t < 5000);
        return this._sentAt.length >= 5 * CHAT_MESSAGES_PER_S;
    }

    // who: "you" (sent), "customer" (received) or "notice".
    add(who, text, at = new Date()) {
        const item = document.createElement("li");
        item.className = `chat-line chat-${who}`;
        item.dataset.who = who;
        const head = document.createElement("span");
        head.className = "chat-head";
        head.textContent = `${who === "you" ? "You" : who === "customer" ? this.customer : ""}`
            + ` ${clock(at)}`;
        const body = document.createElement("span");
        body.className = "chat-text";
        body.textContent = text;
        item.append(head, body);
        this.el.log.append(item);
        while (this.el.log.children.length > MAX_LINES) this.el.log.firstElementChild.remove();
        item.scrollIntoView({ block: "end" });
        if (who === "customer" && !this.open) {
            this.unread += 1;
            this._showUnread();
        }
    }

    _showUnread() {
        this.el.unread.textContent = this.unread ? String(this.unread) : "";
        this.el.unread.hidden = this.unread === 0;
        this.el.toggle.classList.toggle("has-unread", this.unread > 0);
        this.el.toggle.title = this.unread ? `${this.unread} unread message(s)` : "Chat";
    }

    // The customer's clipboard changed while we were in control: offer it.
    offerClipboard(text) {
        this.clipboard = text;
        this.el.clipText.textContent = text;
        this.el.clip.hidden = false;
        this.el.clipCopy.textContent = "Copy";
    }

    hideClipboard() {
        this.clipboard = "";
        this.el.clipText.textContent = "";
        this.el.clip.hidden = true;
    }

    async copyClipboard() {
        const text = this.clipboard;
        if (!text) return;
        try {
            await navigator.clipboard.writeText(text);
            this.el.clipCopy.textContent = "Copied";
        } catch {
            this.notify("The browser did not allow copying: select the text and copy it by hand.");
        }
    }
}
