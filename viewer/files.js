// Files the support person sends the customer: dropped onto the screen or chosen with the
// "Send file" input. Each is offered with its name, size and SHA-256 (crypto.subtle); the
// customer's agent asks them, and only after they accept do chunks go, within the window
// of protocol.FileWindow (bytes the agent has acknowledged), so that the screen and the
// keys never wait behind a file. Progress, Cancel and the outcome in words, one row per
// file, everything shown through textContent. No DOM outside the rows it is given.
// Files the customer sends ("Send a file to David…" on their panel) are taken at once (the
// relay's cap bounds them), kept in memory, checked against their SHA-256 and offered as a
// download link (a Blob URL) on their row.

import {
    FILE_ACK_BYTES, FILE_CHUNK_BYTES, FileWindow, MAX_FILE_NAME_CHARS, ProtocolError,
    decodeFileChunk, encodeFileChunk, technicianWords,
} from "./protocol.js";

// Chunks wait while the socket's own buffer holds more than this (input goes first).
const MAX_BUFFERED_BYTES = 64 * 1024;
const BUFFER_POLL_MS = 20;

export function sizeText(size) {
    if (size < 1000) return size === 1 ? "1 byte" : `${size} bytes`;
    let value = size;
    for (const unit of ["KB", "MB", "GB", "TB"]) {
        value /= 1000;
        if (value < 999.95 || unit === "TB") return `${value.toFixed(1)} ${unit}`;
    }
    return `${size} bytes`;
}

async function sha256Hex(file) {
    const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
    return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Files {
    // link: {send(message) -> bool, sendBinary(bytes) -> bool, buffered() -> number,
    //        sessionId() -> string | null}; list: the element the rows go into;
    // template: a <template> with .file-name, .file-state, progress and .file-cancel.
    constructor(link, list, template) {
        this.link = link;
        this.list = list;
        this.template = template;
        this.transfers = new Map(); // transfer id -> {file, row, window, state, session}
    }

    // Offer a File to the customer of the open session.
    async offer(file) {
        const session = this.link.sessionId();
        if (!session) return;
        const transfer = this._newId();
        const row = this._row(file.name, file.size, transfer);
        const entry = { file, row, session, state: "hashing", window: new FileWindow(file.size) };
        this.transfers.set(transfer, entry);
        this._say(entry, "Checking the file…");
        let sha256;
        try {
            sha256 = await sha256Hex(file);
        } catch (error) {
            this._end(transfer, `Could not read the file: ${error.message}`);
            return;
        }
        if (entry.state !== "hashing") return; // cancelled meanwhile
        // The name as the customer will see it first; their agent cleans it further.
        const name = Array.from(file.name || "file").slice(0, MAX_FILE_NAME_CHARS).join("");
        const sent = this.link.send({
            type: "file_offer", session, transfer, name, size: file.size, sha256,
        });
        if (!sent) {
            this._end(transfer, "Not connected: the file was not sent.");
            return;
        }
        entry.state = "offered";
        this._say(entry, "Waiting for the customer to accept…");
    }

    // A control message from the relay; true if it was about a file.
    handle(message) {
        if (!message.type.startsWith("file_")) return false;
        const entry = this.transfers.get(message.transfer);
        if (message.type === "file_offer") {
            this._incoming(message);
            return true;
        }
        if (!entry || message.session !== entry.session) return true;
        if (entry.incoming) {
            if (message.type === "file_cancel") {
                this._end(message.transfer, technicianWords(message.reason));
            }
            return true;
        }
        switch (message.type) {
            case "file_answer":
                if (message.accept) {
                    entry.state = "sending";
                    this._say(entry, "Sending…");
                    this._pump(message.transfer);
                } else {
                    this._end(message.transfer, technicianWords("file-declined"));
                }
                break;
            case "file_ack":
                if (!entry.window.ack(message.received)) break;
                this._progress(entry);
                this._pump(message.transfer);
                break;
            case "file_done":
                this._end(message.transfer,
                          `Saved on the customer's computer as ${message.saved_as}`, "saved");
                break;
            case "file_cancel":
                this._end(message.transfer, technicianWords(message.reason));
                break;
            default:
                break;
        }
        return true;
    }

    // A file the customer offers: taken at once, if it is for the open session.
    _incoming(offer) {
        const session = this.link.sessionId();
        if (offer.session !== session || this.transfers.has(offer.transfer)) {
            this.link.send({ type: "file_cancel", session: offer.session,
                             transfer: offer.transfer, reason: "file-busy" });
            return;
        }
        const file = { name: offer.name, size: offer.size };
        const row = this._row(`From the customer: ${offer.name}`, offer.size, offer.transfer);
        const entry = {
            file, row, session, incoming: true, state: "receiving", offer,
            parts: [], received: 0, acked: 0, window: new FileWindow(offer.size),
        };
        this.transfers.set(offer.transfer, entry);
        this._say(entry, "Receiving…");
        this.link.send({ type: "file_answer", session, transfer: offer.transfer, accept: true });
        if (offer.size === 0) this._check(offer.transfer);
    }

    // A binary file chunk from the customer.
    chunk(buffer) {
        let chunk;
        try {
            chunk = decodeFileChunk(buffer);
        } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
            console.warn("ignored a malformed file chunk:", error.message);
            return;
        }
        const entry = this.transfers.get(chunk.transfer);
        if (!entry?.incoming || entry.state !== "receiving") return;
        if (chunk.offset !== entry.received
            || entry.received + chunk.data.length > entry.offer.size) {
            this.cancel(chunk.transfer);
            return;
        }
        entry.parts.push(chunk.data.slice());
        entry.received += chunk.data.length;
        const size = entry.offer.size;
        if (entry.received - entry.acked >= FILE_ACK_BYTES || entry.received === size) {
            entry.acked = entry.received;
            this.link.send({ type: "file_ack", session: entry.session,
                             transfer: chunk.transfer, received: entry.received });
            entry.row.querySelector("progress").value = entry.received;
            this._say(entry, `${sizeText(entry.received)} of ${sizeText(size)}`);
        }
        if (entry.received === size) this._check(chunk.transfer);
    }

    async _check(transfer) {
        const entry = this.transfers.get(transfer);
        entry.state = "checking";
        const blob = new Blob(entry.parts);
        entry.parts = [];
        const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
        const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0"))
            .join("");
        if (entry.state !== "checking") return; // the session ended meanwhile
        if (hex !== entry.offer.sha256) {
            this.link.send({ type: "file_cancel", session: entry.session, transfer,
                             reason: "file-corrupt" });
            this._end(transfer, technicianWords("file-corrupt"));
            return;
        }
        this.link.send({ type: "file_done", session: entry.session, transfer,
                         saved_as: entry.offer.name });
        const link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = entry.offer.name;
        link.className = "file-download";
        link.dataset.testid = "file-download";
        link.textContent = `Download ${entry.offer.name}`;
        entry.row.querySelector(".file-state").after(link);
        this._end(transfer, "Received; its SHA-256 matches.", "saved");
    }

    // The session closed or the link dropped: every transfer under way is over.
    stopAll(words) {
        for (const [transfer, entry] of this.transfers) {
            if (entry.state !== "done") this._end(transfer, words);
        }
    }

    cancel(transfer) {
        const entry = this.transfers.get(transfer);
        if (!entry || entry.state === "done") return;
        if (entry.state !== "hashing") {
            this.link.send({ type: "file_cancel", session: entry.session, transfer,
                             reason: "file-cancelled" });
        }
        this._end(transfer, technicianWords("file-cancelled"));
    }

    async _pump(transfer) {
        const entry = this.transfers.get(transfer);
        if (!entry || entry.pumping) return;
        entry.pumping = true;
        try {
            while (entry.state === "sending" && entry.window.room() > 0) {
                if (this.link.buffered() > MAX_BUFFERED_BYTES) {
                    await new Promise((resolve) => setTimeout(resolve, BUFFER_POLL_MS));
                    continue;
                }
                const offset = entry.window.sent;
                const length = Math.min(FILE_CHUNK_BYTES, entry.window.room());
                const data = new Uint8Array(
                    await entry.file.slice(offset, offset + length).arrayBuffer());
                if (entry.state !== "sending") return;
                if (data.length !== length) {
                    this.cancel(transfer);
                    this._say(entry, "The file changed while it was being sent.");
                    return;
                }
                entry.window.admit(offset, length);
                if (!this.link.sendBinary(encodeFileChunk({ transfer, offset, data }))) {
                    this._end(transfer, "Not connected: the file was not sent.");
                    return;
                }
            }
            if (entry.state === "sending" && entry.window.complete) {
                this._say(entry, "Sent; waiting for the customer's computer to check it…");
            }
        } finally {
            entry.pumping = false;
        }
    }

    _end(transfer, words, outcome = "failed") {
        const entry = this.transfers.get(transfer);
        if (!entry) return;
        entry.state = "done";
        entry.row.dataset.outcome = outcome;
        entry.row.querySelector(".file-cancel").textContent = "Dismiss";
        if (outcome === "saved") entry.row.querySelector("progress").value = entry.file.size;
        this._say(entry, words);
        this.transfers.delete(transfer);
    }

    _progress(entry) {
        const progress = entry.row.querySelector("progress");
        progress.max = Math.max(1, entry.file.size);
        progress.value = entry.window.acked;
        this._say(entry, `${sizeText(entry.window.acked)} of ${sizeText(entry.file.size)}`);
    }

    _say(entry, words) {
        entry.row.querySelector(".file-state").textContent = words;
    }

    _row(name, size, transfer) {
        const row = this.template.content.firstElementChild.cloneNode(true);
        // Cancel while it goes; Dismiss once it is over.
        row.querySelector(".file-cancel").addEventListener("click", () => {
            if (this.transfers.has(transfer)) this.cancel(transfer);
            else row.remove();
        });
        row.querySelector(".file-name").textContent = `${name} (${sizeText(size)})`;
        const progress = row.querySelector("progress");
        progress.max = Math.max(1, size);
        progress.value = 0;
        this.list.prepend(row);
        this.list.hidden = false;
        return row;
    }

    _newId() {
        const ids = new Uint32Array(1);
        let id = 0;
        while (id === 0 || this.transfers.has(id)) {
            crypto.getRandomValues(ids);
            id = ids[0] & 0x7fffffff;
        }
        return id;
    }
}
