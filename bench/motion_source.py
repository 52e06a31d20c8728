"""The full-motion source: a tiny X client that puts raw 1080p frames on the screen.

    python -m bench.motion_source RAW_FRAMES --fps 60 [--title bench-motion]

ffplay changed the screen only 4 to 30 times a second on this shared 2-core machine (its
decoder, scaler and SDL window cost more than the copy). This client does only the copy:
the frames (BGRX, WIDTHxHEIGHT each, made once by ffmpeg into bench/.cache/) are read
from a memory map and put with MIT-SHM (XShmPutImage: the X server reads the pixels from
shared memory, no socket copy) into a full-screen window, at a fixed cadence, XSync after
each so a frame is on the screen before the next overwrites the segment. About 3 ms of CPU
a frame here, client and server together. Five times a second it prints the frames put
so far (each on the screen: XSync returned), which the bench reads as the screen's rate.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import mmap
import sys
import time

WIDTH, HEIGHT = 1920, 1080
ZPIXMAP = 2
IPC_PRIVATE, IPC_CREAT, IPC_RMID = 0, 0o1000, 0


class XShmSegmentInfo(ctypes.Structure):
    _fields_ = [("shmseg", ctypes.c_ulong), ("shmid", ctypes.c_int),
                ("shmaddr", ctypes.c_void_p), ("readOnly", ctypes.c_int)]


class XImage(ctypes.Structure):  # the leading fields of Xlib's XImage (those read here)
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("xoffset", ctypes.c_int),
                ("format", ctypes.c_int), ("data", ctypes.c_void_p),
                ("byte_order", ctypes.c_int), ("bitmap_unit", ctypes.c_int),
                ("bitmap_bit_order", ctypes.c_int), ("bitmap_pad", ctypes.c_int),
                ("depth", ctypes.c_int), ("bytes_per_line", ctypes.c_int),
                ("bits_per_pixel", ctypes.c_int)]


def _libs() -> tuple[ctypes.CDLL, ctypes.CDLL, ctypes.CDLL]:
    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    xext = ctypes.CDLL(ctypes.util.find_library("Xext"))
    libc = ctypes.CDLL(None, use_errno=True)
    vp, ul = ctypes.c_void_p, ctypes.c_ulong
    x11.XOpenDisplay.restype = vp
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    for name in ("XDefaultVisual", "XDefaultGC"):
        getattr(x11, name).restype = vp
        getattr(x11, name).argtypes = [vp, ctypes.c_int]
    x11.XRootWindow.restype = ul
    x11.XRootWindow.argtypes = [vp, ctypes.c_int]
    x11.XDefaultDepth.argtypes = [vp, ctypes.c_int]
    x11.XDefaultScreen.argtypes = [vp]
    x11.XCreateSimpleWindow.restype = ul
    x11.XCreateSimpleWindow.argtypes = [vp, ul, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                        ctypes.c_uint, ctypes.c_uint, ul, ul]
    x11.XStoreName.argtypes = [vp, ul, ctypes.c_char_p]
    x11.XMapRaised.argtypes = [vp, ul]
    x11.XSync.argtypes = [vp, ctypes.c_int]
    xext.XShmQueryExtension.argtypes = [vp]
    xext.XShmCreateImage.restype = ctypes.POINTER(XImage)
    xext.XShmCreateImage.argtypes = [vp, vp, ctypes.c_uint, ctypes.c_int, ctypes.c_char_p,
                                     ctypes.POINTER(XShmSegmentInfo), ctypes.c_uint,
                                     ctypes.c_uint]
    xext.XShmAttach.argtypes = [vp, ctypes.POINTER(XShmSegmentInfo)]
    xext.XShmPutImage.argtypes = [vp, ul, vp, ctypes.POINTER(XImage), ctypes.c_int,
                                  ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint,
                                  ctypes.c_uint, ctypes.c_int]
    libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
    libc.shmat.restype = vp
    libc.shmat.argtypes = [ctypes.c_int, vp, ctypes.c_int]
    libc.shmctl.argtypes = [ctypes.c_int, ctypes.c_int, vp]
    return x11, xext, libc


def play(raw_path: str, fps: float, title: str) -> None:
    x11, xext, libc = _libs()
    display = x11.XOpenDisplay(None)
    if not display:
        raise SystemExit("motion_source: cannot open the X display (DISPLAY?)")
    if not xext.XShmQueryExtension(display):
        raise SystemExit("motion_source: the X server has no MIT-SHM")
    screen = x11.XDefaultScreen(display)
    window = x11.XCreateSimpleWindow(display, x11.XRootWindow(display, screen), 0, 0, WIDTH,
                                     HEIGHT, 0, 0, 0)
    x11.XStoreName(display, window, title.encode())
    x11.XMapRaised(display, window)
    info = XShmSegmentInfo()
    image = xext.XShmCreateImage(display, x11.XDefaultVisual(display, screen),
                                 x11.XDefaultDepth(display, screen), ZPIXMAP, None,
                                 ctypes.byref(info), WIDTH, HEIGHT)
    size = image.contents.bytes_per_line * HEIGHT
    if image.contents.bits_per_pixel != 32 or size != WIDTH * HEIGHT * 4:
        raise SystemExit("motion_source: needs a 24-bit screen of 32-bit pixels")
    info.shmid = libc.shmget(IPC_PRIVATE, size, IPC_CREAT | 0o600)
    if info.shmid < 0:
        raise SystemExit(f"motion_source: shmget failed (errno {ctypes.get_errno()})")
    info.shmaddr = libc.shmat(info.shmid, None, 0)
    info.readOnly = 0
    image.contents.data = info.shmaddr
    xext.XShmAttach(display, ctypes.byref(info))
    x11.XSync(display, 0)
    libc.shmctl(info.shmid, IPC_RMID, None)  # freed when both ends detach (or exit)
    gc = x11.XDefaultGC(display, screen)
    with open(raw_path, "rb") as f:
        # copy-on-write (never written): ctypes can take its address, no 8 MB bytes a frame
        frames = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    count = len(frames) // size
    if count == 0:
        raise SystemExit(f"motion_source: {raw_path} holds no {WIDTH}x{HEIGHT} frame")
    base = ctypes.addressof(ctypes.c_char.from_buffer(frames))
    period, put, started = 1 / fps, 0, time.monotonic()
    reported = started
    while True:
        offset = (put % count) * size
        ctypes.memmove(info.shmaddr, base + offset, size)
        xext.XShmPutImage(display, window, gc, image, 0, 0, 0, 0, WIDTH, HEIGHT, 0)
        x11.XSync(display, 0)  # on the screen before the segment is written again
        put += 1
        now = time.monotonic()
        if now - reported >= 0.2:
            reported = now
            print(f"{put} frames in {now - started:.1f} s", flush=True)
        # a fixed cadence; when behind, the next frame goes at once (no catching up burst)
        time.sleep(max(0.0, started + put * period - now))
        if now - (started + put * period) > 1:
            started = now - put * period


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Put raw 1080p frames on the X screen.")
    parser.add_argument("raw", help=f"BGRX frames of {WIDTH}x{HEIGHT}, back to back")
    parser.add_argument("--fps", type=float, default=60.0)
    parser.add_argument("--title", default="bench-motion")
    args = parser.parse_args(argv)
    play(args.raw, args.fps, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
