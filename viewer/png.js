// A small PNG (a typed glyph, a cursor's trail) decoded on the page's thread, at once: the
// browser's own decoders (ImageDecoder, createImageBitmap) answer from another thread, and
// that hop was most of the 1-1.4 ms (p50; 2-7 ms p95) between a typed echo's arrival and its
// draw, where a bare echo page took 0.1 (bench/README.md, key to canvas piece by piece).
// Non-interlaced 8-bit RGB or RGBA and palette PNGs of 1-8 bits (the agent's are palette
// PNGs, screen_codec._png); anything else, or anything malformed, gives null and the caller
// uses the browser's decoder. No DOM: an ImageData out.

const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
    67, 83, 99, 115, 131, 163, 195, 227, 258];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5,
    5, 5, 5, 0];
const DISTANCE_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513,
    769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
const DISTANCE_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10,
    11, 11, 12, 12, 13, 13];
const CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const CHANNELS = new Map([[2, 3], [3, 1], [6, 4]]);  // colour type -> samples a pixel
const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

// Bits of a deflate stream, least significant first.
class Bits {
    constructor(data, at) {
        this.data = data;
        this.at = at;
        this.buffer = 0;
        this.count = 0;
    }

    read(n) {
        let value = this.buffer;
        while (this.count < n) {
            if (this.at >= this.data.length) throw new Error("truncated");
            value |= this.data[this.at++] << this.count;
            this.count += 8;
        }
        this.buffer = value >>> n;
        this.count -= n;
        return value & ((1 << n) - 1);
    }
}

// A canonical Huffman code from its code lengths (zlib's puff.c).
function huffman(lengths) {
    const counts = new Uint16Array(16);
    for (const length of lengths) counts[length] += 1;
    counts[0] = 0;
    const offsets = new Uint16Array(16);
    for (let n = 1; n < 16; n += 1) offsets[n] = offsets[n - 1] + counts[n - 1];
    const symbols = new Uint16Array(lengths.length);
    lengths.forEach((length, symbol) => {
        if (length) symbols[offsets[length]++] = symbol;
    });
    return { counts, symbols };
}

function symbol(bits, code) {
    let value = 0;
    let first = 0;
    let index = 0;
    for (let length = 1; length < 16; length += 1) {
        value |= bits.read(1);
        const count = code.counts[length];
        if (value - first < count) return code.symbols[index + value - first];
        index += count;
        first = (first + count) << 1;
        value <<= 1;
    }
    throw new Error("bad code");
}

const FIXED = (() => {
    const lengths = new Uint8Array(288);
    lengths.fill(8, 0, 144);
    lengths.fill(9, 144, 256);
    lengths.fill(7, 256, 280);
    lengths.fill(8, 280, 288);
    return [huffman(lengths), huffman(new Uint8Array(30).fill(5))];
})();

function dynamicCodes(bits) {
    const literals = bits.read(5) + 257;
    const distances = bits.read(5) + 1;
    const codeLengths = new Uint8Array(19);
    const count = bits.read(4) + 4;
    for (let n = 0; n < count; n += 1) codeLengths[CODE_LENGTH_ORDER[n]] = bits.read(3);
    const lengthCode = huffman(codeLengths);
    const lengths = new Uint8Array(literals + distances);
    for (let n = 0; n < lengths.length;) {
        const s = symbol(bits, lengthCode);
        if (s < 16) {
            lengths[n++] = s;
            continue;
        }
        if (s === 16 && n === 0) throw new Error("nothing to repeat");
        const value = s === 16 ? lengths[n - 1] : 0;
        const repeat = s === 16 ? 3 + bits.read(2) : s === 17 ? 3 + bits.read(3) : 11 + bits.read(7);
        if (n + repeat > lengths.length) throw new Error("too many lengths");
        lengths.fill(value, n, n + repeat);
        n += repeat;
    }
    return [huffman(lengths.subarray(0, literals)), huffman(lengths.subarray(literals))];
}

// Exactly ``size`` bytes inflated from the deflate stream at ``data[at]``, or an exception.
export function inflate(data, at, size) {
    const out = new Uint8Array(size);
    const bits = new Bits(data, at);
    let o = 0;
    let last = 0;
    while (!last) {
        last = bits.read(1);
        const type = bits.read(2);
        if (type === 0) {  // stored: from the next byte boundary
            bits.buffer = 0;
            bits.count = 0;
            const start = bits.at + 4;
            const length = data[bits.at] | (data[bits.at + 1] << 8);
            if (start + length > data.length || o + length > size) throw new Error("stored");
            out.set(data.subarray(start, start + length), o);
            o += length;
            bits.at = start + length;
            continue;
        }
        if (type === 3) throw new Error("bad block");
        const [literal, distance] = type === 1 ? FIXED : dynamicCodes(bits);
        for (;;) {
            let s = symbol(bits, literal);
            if (s < 256) {
                if (o >= size) throw new Error("too long");
                out[o++] = s;
                continue;
            }
            if (s === 256) break;
            s -= 257;
            if (s >= 29) throw new Error("bad length");
            const length = LENGTH_BASE[s] + bits.read(LENGTH_EXTRA[s]);
            const d = symbol(bits, distance);
            if (d >= 30) throw new Error("bad distance");
            const back = DISTANCE_BASE[d] + bits.read(DISTANCE_EXTRA[d]);
            if (back > o || o + length > size) throw new Error("bad copy");
            for (let n = 0; n < length; n += 1, o += 1) out[o] = out[o - back];
        }
    }
    if (o !== size) throw new Error("too short");
    return out;
}

function paeth(a, b, c) {
    const p = a + b - c;
    const pa = Math.abs(p - a);
    const pb = Math.abs(p - b);
    const pc = Math.abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// The rows' filters undone in place (each row: its filter type, then its bytes).
function unfilter(raw, rowBytes, height, step) {
    const stride = rowBytes + 1;
    for (let y = 0; y < height; y += 1) {
        const row = y * stride + 1;
        const up = row - stride;
        const filter = raw[row - 1];
        for (let i = 0; i < rowBytes; i += 1) {
            const left = i >= step ? raw[row + i - step] : 0;
            const above = y ? raw[up + i] : 0;
            const corner = y && i >= step ? raw[up + i - step] : 0;
            let add;
            if (filter === 0) break;
            else if (filter === 1) add = left;
            else if (filter === 2) add = above;
            else if (filter === 3) add = (left + above) >> 1;
            else if (filter === 4) add = paeth(left, above, corner);
            else throw new Error("bad filter");
            raw[row + i] = (raw[row + i] + add) & 0xff;
        }
    }
}

// The IDAT chunks' bytes as one array (a zlib stream may be split across them).
function joined(parts) {
    const all = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
    parts.reduce((at, part) => (all.set(part, at), at + part.length), 0);
    return all;
}

// The PNG's pixels as an ImageData, or null (not a kind decoded here, or malformed).
export function decodePng(bytes, maxPixels = 256 * 256) {
    if (bytes.length < 45 || SIGNATURE.some((byte, n) => bytes[n] !== byte)) return null;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let header = null;
    let palette = null;
    let alpha = null;
    const parts = [];
    for (let at = 8; at + 12 <= bytes.length;) {
        const length = view.getUint32(at);
        const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
        if (at + 12 + length > bytes.length) return null;
        const data = bytes.subarray(at + 8, at + 8 + length);
        if (type === "IHDR" && length === 13) header = data;
        else if (type === "PLTE") palette = data;
        else if (type === "tRNS") alpha = data;
        else if (type === "IDAT") parts.push(data);
        else if (type === "IEND") break;
        at += 12 + length;
    }
    if (!header || !parts.length) return null;
    const h = new DataView(header.buffer, header.byteOffset, 13);
    const width = h.getUint32(0);
    const height = h.getUint32(4);
    const [depth, colour, compression, filtering, interlace] = header.subarray(8, 13);
    const channels = CHANNELS.get(colour);
    if (!channels || compression || filtering || interlace || !width || !height ||
        width * height > maxPixels) return null;
    if (colour === 3 ? ![1, 2, 4, 8].includes(depth) || !palette : depth !== 8) return null;
    if (colour === 2 && alpha) return null;  // a transparent colour: not ours, left to the browser
    const zlib = parts.length === 1 ? parts[0] : joined(parts);
    if ((zlib[0] & 0x0f) !== 8 || zlib[1] & 0x20 || ((zlib[0] << 8) | zlib[1]) % 31) return null;
    const rowBytes = Math.ceil(width * depth * channels / 8);
    let raw;
    try {
        raw = inflate(zlib, 2, (rowBytes + 1) * height);
        unfilter(raw, rowBytes, height, Math.max(1, depth * channels / 8));
    } catch {
        return null;
    }
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let y = 0, o = 0; y < height; y += 1) {
        const row = y * (rowBytes + 1) + 1;
        for (let x = 0; x < width; x += 1, o += 4) {
            if (colour === 3) {
                const bit = x * depth;
                const index = (raw[row + (bit >> 3)] >> (8 - depth - (bit & 7))) &
                    ((1 << depth) - 1);
                if (index * 3 + 2 >= palette.length) return null;
                pixels[o] = palette[index * 3];
                pixels[o + 1] = palette[index * 3 + 1];
                pixels[o + 2] = palette[index * 3 + 2];
                pixels[o + 3] = alpha && index < alpha.length ? alpha[index] : 255;
            } else {
                const at = row + x * channels;
                pixels[o] = raw[at];
                pixels[o + 1] = raw[at + 1];
                pixels[o + 2] = raw[at + 2];
                pixels[o + 3] = channels === 4 ? raw[at + 3] : 255;
            }
        }
    }
    return new ImageData(pixels, width, height);
}
