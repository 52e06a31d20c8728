// The image decoder's worker: JPEG and PNG bytes in, an ImageBitmap out (transferred, not
// copied), so decoding a 1080p image never holds up the page's main thread. Each message is
// answered with the same id; the page draws the bitmaps in arrival order.

self.onmessage = async (event) => {
    const { id, type, buffer, offset, length } = event.data;
    try {
        const blob = new Blob([new Uint8Array(buffer, offset, length)], { type });
        const bitmap = await createImageBitmap(blob);
        self.postMessage({ id, bitmap }, [bitmap]);
    } catch (error) {
        self.postMessage({ id, error: String(error) });
    }
};
