"""screen_codec: changed rectangles, the viewer's copy, and the per-rectangle encoder choice."""

from __future__ import annotations

import hashlib
import io
import itertools
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import protocol as p
import screen_codec as codec
import screen_pacing as pacing


def bgrx(height: int, width: int, rgb: tuple[int, int, int] = (0x33, 0x66, 0xCC)) -> np.ndarray:
    image = np.zeros((height, width, 4), np.uint8)
    image[..., :3] = rgb[::-1]
    return image


def decode(frame_or_data) -> np.ndarray:
    data = frame_or_data.image if isinstance(frame_or_data, p.Frame) else frame_or_data
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def text_like(height: int, width: int, seed: int = 1) -> np.ndarray:
    """Anti-aliased dark glyph strokes on white: about 200 grey levels, like xterm text."""
    rng = np.random.default_rng(seed)
    grey = np.full((height, width), 255, np.uint8)
    for _ in range(height * width // 40):
        y, x = rng.integers(0, height), rng.integers(0, width)
        grey[y, x:x + 3] = rng.integers(0, 230)
    image = np.zeros((height, width, 4), np.uint8)
    image[..., 0] = image[..., 1] = image[..., 2] = grey
    return image


def test_changed_rects_merge_runs_of_tiles_and_crop_to_the_changed_pixels() -> None:
    """Adjacent changed tiles merge, also across rows of tiles; each rectangle is cut down to
    the pixels that changed; an unchanged image has none."""
    old = bgrx(200, 300)
    new = old.copy()
    new[10, 70] = new[100, 130] = 1
    new[190, 299] = 1  # in the partial tile at the right edge
    assert codec.changed_rects(old, new) == [(70, 10, 1, 1), (130, 100, 1, 1), (299, 190, 1, 1)]
    new = old.copy()
    new[5:130, 3:100] = 7
    assert codec.changed_rects(old, new) == [(3, 5, 97, 125)]
    assert codec.changed_rects(old, old.copy()) == []


def test_wide_runs_are_sent_as_whole_tiles_without_cropping() -> None:
    """A run longer than CROP_MAX_TILES keeps its tile bounds (cropping costs more than it
    saves on a screen that changed everywhere)."""
    width = codec.TILE_PX * (codec.CROP_MAX_TILES + 2)
    old = bgrx(70, width)
    new = old.copy()
    new[3:5, 1:width - 1] = 9
    assert codec.changed_rects(old, new) == [(0, 0, width, 64)]


def test_the_numpy_path_finds_the_same_rectangles_as_memcmp(monkeypatch) -> None:
    """Without the C library's memcmp (an unusual platform) the result is the same."""
    old = bgrx(150, 200)
    new = old.copy()
    new[70:90, 20:40] = 3
    expected = codec.changed_rects(old, new)
    monkeypatch.setattr(codec, "_MEMCMP", None)
    assert codec.changed_rects(old, new) == expected == [(20, 70, 20, 20)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 129), st.integers(0, 199), st.integers(1, 40),
                          st.integers(1, 40), st.integers(1, 255)), max_size=6))
def test_rectangles_cover_every_changed_pixel_and_stay_inside(edits) -> None:
    """Whatever changed, copying the rectangles over the old image gives the new image."""
    old = bgrx(130, 200)
    new = old.copy()
    for y, x, h, w, v in edits:
        new[y:y + h, x:x + w, 1] = v
    patched = old.copy()
    for x, y, w, h in codec.changed_rects(old, new):
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 200 and y + h <= 130
        patched[y:y + h, x:x + w] = new[y:y + h, x:x + w]
    assert np.array_equal(patched, new)


def test_screen_diff_keeps_its_own_copy_of_what_the_viewer_shows() -> None:
    """After a commit the diff compares with the committed pixels, even if the caller reuses
    its buffer; a new size or forget() asks for a whole image again."""
    diff = codec.ScreenDiff()
    screen = bgrx(128, 128)
    assert not diff.matches(screen)
    with pytest.raises(ValueError):
        diff.changes(screen)
    diff.commit(screen, [])
    assert diff.matches(screen) and diff.changes(screen) == []
    screen[0:4, 0:4] = 0  # the caller's buffer changes; the committed copy does not
    assert diff.changes(screen) == [(0, 0, 4, 4)]
    diff.commit(screen, diff.changes(screen))
    assert diff.changes(screen) == []
    assert not diff.matches(bgrx(64, 128))
    diff.forget()
    assert not diff.matches(screen)


def test_a_sampled_compare_finds_tall_changes_at_once_and_thin_ones_within_its_step() -> None:
    """Reading one row in SAMPLE_ROWS: a change that tall is found on the first call, exactly
    as a full compare finds it; a one-row change within SAMPLE_ROWS calls; none falsely."""
    diff = codec.ScreenDiff()
    screen = bgrx(200, 301)  # an odd width compares 4-byte words
    diff.commit(screen, [])
    assert [diff.changes(screen, codec.SAMPLE_ROWS) for _ in range(5)] == [[]] * 5
    tall = screen.copy()
    tall[70:70 + codec.SAMPLE_ROWS, 10:19] = 255
    assert diff.changes(tall, codec.SAMPLE_ROWS) == diff.changes(tall) == [(10, 70, 9, 4)]
    across = screen.copy()  # a glyph across two bands of tiles: one rectangle, one update
    across[codec.TILE_PX - 2:codec.TILE_PX + 9, 100:109] = 0
    assert diff.changes(across, codec.SAMPLE_ROWS) == diff.changes(across) == \
        [(100, codec.TILE_PX - 2, 9, 11)]
    thin = screen.copy()
    thin[131, 290:301] = 1
    found = [diff.changes(thin, codec.SAMPLE_ROWS) for _ in range(codec.SAMPLE_ROWS)]
    assert [(290, 131, 11, 1)] in found
    assert sum(map(len, found)) == 1


def test_a_screen_changed_everywhere_is_answered_whole_without_a_full_compare() -> None:
    """Video: when the sampled rows differ in every band and column, the rectangle is the
    whole image; a change that spares some columns still gets exact rectangles."""
    diff = codec.ScreenDiff()
    screen = bgrx(200, 300)
    diff.commit(screen, [])
    video = screen.copy()
    video[..., 1] += 1
    assert diff.changes(video, codec.SAMPLE_ROWS) == [(0, 0, 300, 200)]
    window = screen.copy()
    window[:, 40:260, 1] += 1
    assert diff.changes(window, codec.SAMPLE_ROWS) == [(40, 0, 220, 200)]


def test_strip_height_can_be_chosen_per_update() -> None:
    """Motion sends one strip per encoder thread: rows= sets the strip height."""
    noise = np.random.default_rng(4).integers(0, 256, (200, 64, 4), dtype=np.uint8)
    frames = codec.encode_update(noise, [(0, 0, 64, 200)], 0, 1, 75, True, rows=112)
    assert [(f.y, f.height) for f in frames] == [(0, 112), (112, 88)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 129), st.integers(0, 199), st.integers(1, 40),
                          st.integers(1, 40), st.integers(1, 255)), max_size=6))
def test_sampled_polls_converge_on_the_exact_image(edits) -> None:
    """Committing what SAMPLE_ROWS sampled compares find leaves the exact new image."""
    old = bgrx(130, 200)
    new = old.copy()
    for y, x, h, w, value in edits:
        new[y:y + h, x:x + w, 1] = value
    diff = codec.ScreenDiff()
    diff.commit(old, [])
    for _ in range(codec.SAMPLE_ROWS):
        diff.commit(new, diff.changes(new, codec.SAMPLE_ROWS))
    assert np.array_equal(diff.shown, new)


def test_a_whole_image_the_caller_gives_away_is_kept_without_a_copy() -> None:
    """commit(owned=True) of a whole image keeps that array; partial commits still copy."""
    diff = codec.ScreenDiff()
    screen = bgrx(64, 64)
    diff.commit(screen, [(0, 0, 64, 64)], owned=True)
    assert diff.shown is screen
    update = screen.copy()
    update[1:3, 1:3] = 9
    diff.commit(update, [(1, 1, 2, 2)], owned=True)
    assert diff.shown is screen and diff.changes(update) == []


def test_photo_like_content_is_jpeg_at_4_4_4() -> None:
    """Noise (thousands of colours) goes as JPEG without chroma subsampling."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    kind, data = codec.encode_rect(noise, (0, 0, 64, 64), 80)
    assert kind == p.FRAME_JPEG
    assert {layer[1:3] for layer in Image.open(io.BytesIO(data)).layer} == {(1, 1)}


def test_jpeg_is_4_2_0_only_when_asked_and_unknown_subsampling_is_refused() -> None:
    """Motion may ask for 4:2:0 (luma sampled twice as densely as chroma); a subsampling
    that does not exist is a ValueError, not a silently different image."""
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    kind, data = codec.encode_rect(noise, (0, 0, 64, 64), 75, "420")
    assert kind == p.FRAME_JPEG
    assert [layer[1:3] for layer in Image.open(io.BytesIO(data)).layer] == \
        [(2, 2), (1, 1), (1, 1)]
    frames = codec.encode_update(noise, [(0, 0, 64, 64)], 0, 1, 75, False, subsampling="420")
    assert Image.open(io.BytesIO(frames[0].image)).layer[0][1:3] == (2, 2)
    with pytest.raises(ValueError, match="subsampling"):
        codec.encode_rect(noise, (0, 0, 64, 64), 75, "411")


def smooth(height: int, width: int) -> np.ndarray:
    """Photo-like pixels (thousands of colours) that change slowly across: a video frame."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 4), np.uint8)
    image[..., 0] = (x * 255 // max(1, width - 1)).astype(np.uint8)
    image[..., 1] = (y * 255 // max(1, height - 1)).astype(np.uint8)
    image[..., 2] = ((x + y) % 256).astype(np.uint8)
    return image


def test_half_resolution_jpeg_is_each_2x2_block_one_pixel() -> None:
    """scale=2: a JPEG of ceil(w/2) x ceil(h/2) pixels (odd sizes too), each the mean of its
    2x2 block within JPEG's error, in the screen's colours (not red for blue), and fewer than
    half the whole image's bytes; the rectangle right of x = 0 in the last rows too."""
    image = smooth(121, 301)
    for rect in ((0, 0, 301, 121), (3, 40, 297, 81)):
        x, y, w, h = rect
        kind, data = codec.encode_rect(image, rect, 90, "420", scale=2)
        assert kind == p.FRAME_JPEG
        half = decode(data).astype(int)
        assert half.shape == (-(-h // 2), -(-w // 2), 3)
        rgb = Image.fromarray(np.ascontiguousarray(image[y:y + h, x:x + w, 2::-1]))
        expected = np.asarray(rgb.reduce(2)).astype(int)
        assert np.abs(half - expected).mean() < 3, rect
        whole = codec.encode_rect(image, rect, 90, "420")[1]
        assert len(data) < len(whole) / 2, rect
    with pytest.raises(ValueError, match="half"):
        codec.encode_rect(image, (0, 0, 64, 64), 75, "420", scale=3)


def test_at_half_resolution_palette_content_stays_whole_and_exact() -> None:
    """A region in motion with at most 256 colours (a dragged window of text) is an exact
    palette PNG at its full size whatever the scale: nothing to gain by halving it."""
    text = text_like(120, 200)
    kind, data = codec.encode_rect(text, (0, 0, 200, 120), 55, "420", scale=2)
    assert kind == p.FRAME_PNG
    assert np.array_equal(decode(data), text[..., 2::-1])


def test_an_update_at_half_resolution_keeps_its_rectangles_and_frames_pass_image_scale() \
        -> None:
    """encode_update(scale=2): the frames cover the same rectangles as whole ones (strips,
    the last FLAG_LAST), each image half its rectangle (protocol.image_scale 2), also when
    encoded again by the outbox's redo; a whole image is never sent at half resolution."""
    image = smooth(200, 640)
    frames = codec.encode_update(image, [(0, 0, 640, 200)], 1, 7, 75, False,
                                 subsampling="420", rows=64, scale=2)
    assert [(f.x, f.y, f.width, f.height) for f in frames] == \
        [(0, y, 640, min(64, 200 - y)) for y in range(0, 200, 64)]
    assert [p.image_scale(f) for f in frames] == [2] * 4
    assert [f.last for f in frames] == [False, False, False, True]
    diff = codec.ScreenDiff()
    diff.commit(image, [(0, 0, 640, 200)])
    redo = codec.redoer(diff, 1, 7, 75, False, "420", 64, scale=2)
    [(rect, data)] = redo((0, 64, 640, 64), True)
    assert rect == (0, 64, 640, 64) and p.image_scale(p.decode_frame(data)) == 2
    with pytest.raises(ValueError, match="whole image"):
        codec.encode_update(image, [(0, 0, 640, 200)], 1, 7, 75, True, scale=2)


def test_anti_aliased_text_is_an_exact_palette_png() -> None:
    """Text with up to 256 colours (many more than a handful) is lossless, as a palette PNG
    smaller than the JPEG of the same pixels would be."""
    text = text_like(300, 400)
    colours = np.unique(text.view(np.uint32)).size
    assert 48 < colours <= 256
    kind, data = codec.encode_rect(text, (0, 0, 400, 300), 85)
    assert kind == p.FRAME_PNG
    assert Image.open(io.BytesIO(data)).mode == "P"
    assert np.array_equal(decode(data), text[..., 2::-1])
    assert len(data) < len(codec._jpeg(text, 0, 0, 400, 300, 85))


@pytest.mark.parametrize(("colours", "bits"), [(1, 1), (2, 1), (3, 2), (4, 2), (11, 4), (17, 8),
                                               (256, 8)])
def test_palette_pngs_use_the_smallest_bit_depth_and_decode_exactly(colours, bits) -> None:
    """1, 2, 4 or 8 bits per pixel by the number of colours; odd widths pad their rows."""
    rng = np.random.default_rng(colours)
    palette = rng.integers(0, 256, (colours, 4), dtype=np.uint8)
    palette[:, :3] = np.unique(rng.integers(0, 1 << 24, colours * 3, dtype=np.uint32)
                               )[:colours, None].view(np.uint8)[:, :3]
    image = palette[np.arange(37 * 29) % colours].reshape(29, 37, 4)
    image = np.ascontiguousarray(rng.permutation(image.reshape(-1, 4)).reshape(29, 37, 4))
    kind, data = codec.encode_rect(image, (0, 0, 37, 29), 85)
    assert kind == p.FRAME_PNG
    assert data[24] == bits  # IHDR bit depth
    assert np.array_equal(decode(data), image[..., 2::-1])


def test_a_rectangle_inside_a_larger_image_encodes_only_its_pixels() -> None:
    """Both encoders read the rectangle in place (row stride of the whole image)."""
    image = text_like(200, 300, seed=2)
    kind, data = codec.encode_rect(image, (17, 33, 101, 45), 85)
    assert kind == p.FRAME_PNG
    assert np.array_equal(decode(data), image[33:78, 17:118, 2::-1])
    image[..., :3] = np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    kind, data = codec.encode_rect(image, (17, 33, 101, 45), 95)
    assert kind == p.FRAME_JPEG
    error = np.abs(decode(data).astype(int) - image[33:78, 17:118, 2::-1].astype(int))
    assert decode(data).shape == (45, 101, 3) and error.mean() < 20


def test_a_small_rectangle_goes_in_whichever_format_is_smaller() -> None:
    """A small smooth picture of 120 colours: PNG at a high JPEG quality, JPEG at a low one,
    each time the smaller of the two encodings."""
    y, x = np.mgrid[0:128, 0:128]
    wave = ((np.sin(x / 9) + np.cos(y / 7)) * 60 + 128).astype(np.uint8) // 2 * 2
    image = np.zeros((128, 128, 4), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = wave, 255 - wave, wave // 2
    colours = codec._rgb_image(image, 0, 0, 128, 128).getcolors(256)
    png = codec._png(image, 0, 0, 128, 128, colours)
    kinds = []
    for quality in (95, 35):
        jpeg = codec._jpeg(image, 0, 0, 128, 128, quality)
        kind, data = codec.encode_rect(image, (0, 0, 128, 128), quality)
        assert data == min(png, jpeg, key=len)
        kinds.append(kind)
    assert kinds == [p.FRAME_PNG, p.FRAME_JPEG]


def test_an_update_is_cut_into_strips_and_only_the_last_frame_is_flagged_last() -> None:
    """Strips of STRIP_ROWS rows cover each rectangle in order; FLAG_FULL on every frame of
    a full update; a thread pool gives the same frames as plain map."""
    image = text_like(300, 200, seed=4)
    rects = [(0, 0, 200, 300)]
    frames = codec.encode_update(image, rects, 2, 7, 85, True)
    assert [(f.y, f.height) for f in frames] == [(0, 128), (128, 128), (256, 44)]
    assert [f.last for f in frames] == [False, False, True]
    assert all(f.flags & p.FLAG_FULL and f.monitor == 2 and f.seq == 7 for f in frames)
    with ThreadPoolExecutor(2) as pool:
        assert codec.encode_update(image, rects, 2, 7, 85, True, pool.map) == frames
    canvas = np.zeros((300, 200, 3), np.uint8)
    for f in frames:
        canvas[f.y:f.y + f.height, f.x:f.x + f.width] = decode(f)
    assert np.array_equal(canvas, image[..., 2::-1])
    partial = codec.encode_update(image, [(5, 6, 7, 8), (50, 60, 10, 10)], 0, 8, 85, False)
    assert [(f.x, f.y, f.width, f.height, f.last, f.flags & p.FLAG_FULL) for f in partial] == \
        [(5, 6, 7, 8, False, 0), (50, 60, 10, 10, True, 0)]


# --- frames bounded by bytes ---------------------------------------------------------------


def noise(height: int, width: int, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)


def test_wide_rectangles_get_fewer_rows_per_strip() -> None:
    """With a pixel limit a strip of a wide rectangle has fewer rows (a multiple of 16), and
    the strips still cover the rectangle in order."""
    parts = codec.strips([(0, 0, 7680, 1080)], 544, max_px=7680 * 100)
    assert {h for _, _, _, h in parts[:-1]} == {96}
    assert sum(h for _, _, _, h in parts) == 1080 and parts[0][1] == 0
    assert all(a[1] + a[3] == b[1] for a, b in itertools.pairwise(parts))


@pytest.mark.parametrize("subsampling", ["444", "420"])
def test_no_frame_exceeds_the_byte_limit_whatever_the_strip_height(subsampling) -> None:
    """Noise asked for in one strip of 256 rows, with a 40 KB frame limit: every frame fits
    (strips too large after encoding are halved and encoded again), and together they still
    decode to the image."""
    image = noise(256, 320)
    limit = 40_000
    frames = codec.encode_update(image, [(0, 0, 320, 256)], 0, 1, 85, True,
                                 subsampling=subsampling, rows=256, max_frame_bytes=limit)
    assert len(frames) > 2
    assert all(len(p.encode_frame(f)) <= limit for f in frames)
    assert [f.last for f in frames] == [False] * (len(frames) - 1) + [True]
    covered = np.zeros((256, 320), int)
    for f in frames:
        covered[f.y:f.y + f.height, f.x:f.x + f.width] += 1
        assert decode(f).shape == (f.height, f.width, 3)
    assert (covered == 1).all()


def test_four_1080p_monitors_of_noise_fit_in_frames() -> None:
    """The bounding box of four 1080p monitors side by side, all noise, at the best quality and
    in motion's tall strips: every frame is within MAX_FRAME_BYTES."""
    image = noise(1080, 7680)
    with ThreadPoolExecutor(2) as pool:
        for subsampling, rows in (("444", codec.STRIP_ROWS), ("420", 1080)):
            frames = codec.encode_update(image, [(0, 0, 7680, 1080)], 0, 1,
                                         pacing.JPEG_QUALITIES[0], True, pool.map,
                                         subsampling, rows)
            assert max(len(p.encode_frame(f)) for f in frames) <= p.MAX_FRAME_BYTES
            assert sum(f.width * f.height for f in frames) == 7680 * 1080


# --- a whole image ---------------------------------------------------------------------------


def video_beside_desktop(height: int = 128, width: int = 512) -> np.ndarray:
    """A flat dark desktop with a bright window, and smooth photo-like content (a video's
    gradient with noise) over columns 160..288."""
    image = bgrx(height, width, (0, 0, 0))
    image[8:40, 8:120, :3] = 255
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 200, 128, dtype=np.float32)
    photo = ramp[None, :, None] + rng.normal(0, 12, (height, 128, 3))
    image[:, 160:288, :3] = np.clip(photo, 0, 255).astype(np.uint8)
    return image


def test_a_whole_image_strip_is_cut_where_flat_columns_meet_photo_like_ones() -> None:
    """On the 64-pixel column grid: the flat columns before the photo, every column the photo
    touches, the flat columns after it, each a run of its own, covering the strip."""
    image = video_beside_desktop()
    assert codec.palette_runs(image, (0, 0, 512, 128)) == \
        [(0, 0, 128, 128), (128, 0, 192, 128), (320, 0, 192, 128)]
    assert codec.palette_runs(image, (0, 64, 170, 16)) == [(0, 64, 128, 16), (128, 64, 42, 16)]


def test_flat_columns_whose_palettes_together_exceed_256_colours_start_a_new_run() -> None:
    """Each 64-pixel column has 8 colours of its own: 32 columns fill one palette, the 33rd
    begins the next run."""
    image = bgrx(16, 64 * 40)
    for column in range(40):
        for stripe in range(8):
            x = column * 64 + stripe * 8
            image[:, x:x + 8, :3] = (column, stripe, 7)
    assert codec.palette_runs(image, (0, 0, 64 * 40, 16)) == \
        [(0, 0, 64 * 32, 16), (64 * 32, 0, 64 * 8, 16)]


def test_a_full_update_sends_flat_parts_as_exact_png_and_only_the_photo_as_jpeg() -> None:
    """A whole image: the desktop and window beside the photo are palette PNGs, exact; only
    the photo's columns are JPEG; every pixel is covered once; and it takes fewer bytes than
    the same strips each sent as one JPEG (the update that is not a whole image)."""
    image = video_beside_desktop()
    frames = codec.encode_update(image, [(0, 0, 512, 128)], 0, 1, 35, True, subsampling="420")
    assert [(f.x, f.width, f.kind) for f in frames] == \
        [(0, 128, p.FRAME_PNG), (128, 192, p.FRAME_JPEG), (320, 192, p.FRAME_PNG)]
    for f in frames:
        if f.kind == p.FRAME_PNG:
            assert np.array_equal(decode(f), image[:, f.x:f.x + f.width, 2::-1])
    assert [f.last for f in frames] == [False, False, True]
    plain = codec.encode_update(image, [(0, 0, 512, 128)], 0, 1, 35, False, subsampling="420")
    assert [f.kind for f in plain] == [p.FRAME_JPEG]
    assert sum(len(f.image) for f in frames) < sum(len(f.image) for f in plain)


def test_frames_come_out_as_their_strips_are_encoded_not_after_all_of_them() -> None:
    """encode_frames gives the first frame once the second strip is encoded (it must know
    which is last), and in all the same frames as encode_update."""
    image = text_like(300, 200, seed=4)
    encoded = []

    def mapper(encode, parts):
        for part in parts:
            encoded.append(part)
            yield encode(part)

    frames = codec.encode_frames(image, [(0, 0, 200, 300)], 0, 1, 35, True, mapper, "420")
    first = next(frames)
    assert (first.y, first.last, len(encoded)) == (0, False, 2)
    rest = list(frames)
    assert [f.last for f in rest] == [False, True]
    assert [first, *rest] == codec.encode_update(image, [(0, 0, 200, 300)], 0, 1, 35, True,
                                                 subsampling="420")
    assert list(codec.encode_frames(image, [], 0, 1, 35, True)) == []


def test_a_whole_image_jpeg_has_huffman_tables_of_its_own_same_pixels_fewer_bytes() -> None:
    """optimize: the same decoded pixels (only the entropy coding differs), fewer bytes."""
    image = video_beside_desktop()
    plain = codec._jpeg(image, 0, 0, 512, 128, 35, "420")
    tuned = codec._jpeg(image, 0, 0, 512, 128, 35, "420", optimize=True)
    assert len(tuned) < len(plain)
    assert np.array_equal(decode(tuned), decode(plain))


def test_a_whole_image_of_noise_at_the_best_quality_is_still_encoded() -> None:
    """Noise at quality 100 outgrows the buffer Pillow gives an optimised JPEG: it is made the
    plain way instead of failing."""
    image = noise(512, 512)
    data = codec._jpeg(image, 0, 0, 512, 512, 100, optimize=True)
    assert data == codec._jpeg(image, 0, 0, 512, 512, 100)


# --- without numpy: the same bytes, read-only views, nothing imported ----------------------


def palette_image(colours: list[tuple[int, int, int]], height: int, width: int,
                  seed: int) -> np.ndarray:
    """Pixels drawn from ``colours`` (RGB) at random, with a random pad byte (ignored)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 4), np.uint8)
    picks = rng.integers(0, len(colours), (height, width))
    image[..., :3] = np.array(colours, np.uint8)[picks][..., ::-1]
    image[..., 3] = rng.integers(0, 256, (height, width))
    return image


# sha256 of the PNG that screen_codec wrote with numpy (a 16 MB colour table, numpy's bit
# packing), for each way the palette indexes are now looked up: the bytes did not change.
PNG_BEFORE_NUMPY_WENT = {
    "one channel tells the colours apart (grey text)": (
        [(v, v, v) for v in range(0, 250, 5)], 45, 77, 1,
        "bc70dc5094257cb5b1517844e4ec537c764006e311b6ab712552d4b185468710"),
    "blue and green together tell them apart": (
        [(9, g, b) for g in range(0, 200, 20) for b in range(0, 200, 25)], 60, 150, 2,
        "e88cc61d7be977869420c5201016855e83c567a2e341b356a6854638ccc34c14"),
    "green and red together tell them apart": (
        [(r, g, 9) for r in range(0, 240, 16) for g in (3, 130)] + [(7, 3, 200)], 70, 130, 3,
        "7c03ed9f7c2767882341ac59a25578db66dbea49610562a2f70ad99f97283712"),
    "no two channels tell them apart: (blue, green) numbered, then with red": (
        [(r, g, b) for r in (0, 90, 200) for g in (10, 128, 255) for b in (5, 60, 250)],
        50, 90, 6, "1e569fde0b3c2e7257e73c5fc7aeb783f12377f101e25d168467cfbadb323377"),
    "two colours, one bit a pixel": (
        [(0, 0, 0), (255, 255, 255)], 33, 61, 4,
        "603f66805dc9201e68a547feb496c822ef2d0c13db2f069c43a4913b5bca0614"),
    "a glyph, looked up in Python": (
        [(r, 255 - r, 40) for r in range(0, 250, 50)] + [(3, 3, 3)], 9, 7, 5,
        "aa9a8ab9e99de58e3088c79d959cb3faa6548368aba2d62af1a375ebaa57d7b2"),
}


@pytest.mark.parametrize("case", sorted(PNG_BEFORE_NUMPY_WENT))
def test_palette_pngs_are_byte_for_byte_those_of_the_numpy_encoder(case) -> None:
    """Each palette lookup path writes exactly the PNG bytes the numpy encoder wrote, also
    for a rectangle inside a larger image, and decodes to the pixels."""
    colours, height, width, seed, digest = PNG_BEFORE_NUMPY_WENT[case]
    image = palette_image(colours, height, width, seed)
    found = codec._rgb_image(image, 0, 0, width, height).getcolors(256)
    data = codec._png(image, 0, 0, width, height, found)
    assert hashlib.sha256(data).hexdigest() == digest
    assert np.array_equal(decode(data), image[..., 2::-1])
    larger = np.zeros((height + 20, width + 30, 4), np.uint8)
    larger[11:11 + height, 13:13 + width] = image
    assert codec._png(larger, 13, 11, width, height, found) == data


def test_a_read_only_view_is_compared_and_encoded_like_an_array() -> None:
    """A read-only memoryview (the agent's shared-memory grab) gives the same rectangles and
    frames as the same pixels in an array, and is copied, not kept, on commit."""
    old, new = text_like(200, 300, seed=6), text_like(200, 300, seed=6)
    new[40:90, 100:170] = noise(50, 70)
    view = memoryview(new.tobytes()).cast("B", new.shape)
    assert view.readonly and not codec.writeable(view) and codec.writeable(new)
    assert codec.changed_rects(old, view) == codec.changed_rects(old, new) == \
        [(100, 40, 70, 50)]
    diff = codec.ScreenDiff()
    diff.commit(old, [])
    assert diff.changes(view, codec.SAMPLE_ROWS) == diff.changes(new) == [(100, 40, 70, 50)]
    diff.commit(view, [(100, 40, 70, 50)], owned=True)
    assert diff.shown is not view and np.array_equal(np.asarray(diff.shown), new)
    rects = [(0, 0, 300, 200)]
    assert codec.encode_update(view, rects, 0, 1, 85, True) == \
        codec.encode_update(new, rects, 0, 1, 85, True)


def test_an_image_that_is_not_bgrx_is_refused_with_a_clear_error() -> None:
    """Three channels, or rows not contiguous, are a ValueError naming the shape."""
    with pytest.raises(ValueError, match="height, width, 4"):
        codec.changed_rects(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="height, width, 4"):
        codec.ScreenDiff().commit(np.zeros((8, 16, 4), np.uint8)[:, ::2], [])


NO_NUMPY = """
import sys
sys.modules["numpy"] = None  # any import of numpy now fails
import agent, screen_codec as codec
image = codec.new_image(640, 300)
diff = codec.ScreenDiff()
diff.commit(image, [])
image[5, 7, 1] = 200  # a memoryview takes item assignment by index
rects = diff.changes(image, 1)
frames = codec.encode_update(image, rects + [(0, 0, 640, 300)], 0, 1, 85, False)
print(rects, [f.kind for f in frames], "simplejpeg" in sys.modules)
"""


def test_the_agent_and_its_codec_run_without_numpy() -> None:
    """With numpy made unimportable, the agent imports and the codec compares and encodes
    (numpy costs the agent 14 MB of memory and the exe 8.8 MB); simplejpeg is not loaded."""
    result = subprocess.run([sys.executable, "-c", NO_NUMPY], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[(7,", "5,", "1,", "1)]", "[2,", "2,", "2,", "2]",
                                     "False"]


JPEG_PLUGIN_ONLY = """
import io, sys
import screen_codec as codec
from PIL import Image
image = codec.new_image(640, 300)
for y in range(100, 300):  # a photo-like gradient below, two colours of text above
    for x in range(640):
        image[y, x, 0], image[y, x, 1], image[y, x, 2] = x % 256, y % 256, (x * y) % 251
for x in range(7, 30):
    image[5, x, 1] = 200
frames = codec.encode_update(image, [(0, 100, 640, 200), (0, 0, 32, 16)], 0, 1, 85, False)
print(sorted(m for m in sys.modules if m.endswith("ImagePlugin")), sorted({f.kind for f in frames}))
png = io.BytesIO()
Image.new("RGB", (2, 2)).save(png, "PNG")
print(Image.open(io.BytesIO(png.getvalue())).format)
"""


def test_encoding_loads_only_pillows_jpeg_plugin_and_other_formats_still_work() -> None:
    """Encoding an update (JPEG and palette PNG) imports no Pillow format plugin but JPEG's
    (Image.save's preinit would add BMP, GIF, PPM and PNG: 0.4 MB of the agent); a format not
    loaded is still saved and opened (Pillow loads all its plugins then)."""
    result = subprocess.run([sys.executable, "-c", JPEG_PLUGIN_ONLY], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"['PIL.JpegImagePlugin'] [{p.FRAME_JPEG}, {p.FRAME_PNG}]", "PNG"]


def test_a_redone_frame_carries_the_viewers_copy_as_it_is_now_and_its_own_flags() -> None:
    """redoer(): a waiting strip encoded again after an echo was committed shows the echo's
    pixels (exact PNG here), with the update's seq, FLAG_FULL kept and FLAG_LAST only on the
    frame that had it."""
    diff = codec.ScreenDiff()
    diff.commit(bgrx(64, 64, (10, 20, 30)), [])
    redo = codec.redoer(diff, 0, 7, 85, True)
    echo = bgrx(64, 64, (10, 20, 30))
    echo[16:24, 8:16, :3] = (200, 100, 0)  # BGR of (0, 100, 200)
    diff.commit(echo, [(8, 16, 8, 8)])
    (rect, data), = redo((0, 16, 64, 16), True)
    frame = p.decode_frame(data)
    assert rect == (0, 16, 64, 16) and frame.seq == 7
    assert frame.flags == p.FLAG_LAST | p.FLAG_FULL
    assert tuple(decode(frame)[4, 12]) == (0, 100, 200)
    assert tuple(decode(frame)[10, 40]) == (10, 20, 30)
    (_, data), = redo((0, 32, 64, 16), False)
    assert p.decode_frame(data).flags == p.FLAG_FULL


def three_strips() -> np.ndarray:
    """384 rows: three 128-row strips of a flat desktop beside a photo."""
    return np.concatenate([video_beside_desktop(), video_beside_desktop(),
                           video_beside_desktop()])


def test_strips_encoded_ahead_that_did_not_change_go_first_as_encoded_and_the_rest_follow()\
        -> None:
    """After one strip changed, only it is encoded again; the strips encoded ahead come first,
    and the whole image is frame for frame the one encoded at once from the new screen, in
    another order (the last frame still marked last)."""
    ahead = codec.EncodedAhead(35, "420")
    old = three_strips()
    assert ahead.update(old) == [(0, 0, 512, 128), (0, 128, 512, 128), (0, 256, 512, 128)]
    assert ahead.encode(ahead.strips()) == 3
    new = old.copy()
    new[140:150, 10:100, :3] = 90  # in the middle strip
    assert ahead.update(new) == [(0, 128, 512, 128)]
    pieces = ahead.pieces(35, "420")
    assert sorted(pieces) == [(0, 0, 512, 128), (0, 256, 512, 128)]
    reused = []

    def reuse(strip):
        found = pieces.get(strip)
        if found is not None:
            reused.append(strip)
        return found

    whole = [(0, 0, 512, 384)]
    frames = list(codec.encode_frames(new, whole, 0, 1, 35, True, subsampling="420",
                                      reuse=reuse))
    assert reused == [(0, 0, 512, 128), (0, 256, 512, 128)]
    assert [f.y for f in frames] == [0, 0, 0, 256, 256, 256, 128, 128, 128]
    assert [f.last for f in frames] == [False] * 8 + [True]
    at_once = codec.encode_update(new, whole, 0, 1, 35, True, subsampling="420")

    def unmarked(frames):
        return sorted((f.y, f.x, f.kind, f.image) for f in frames)

    assert unmarked(frames) == unmarked(at_once)


def test_nothing_encoded_ahead_serves_other_settings_or_another_screen_size() -> None:
    """Pieces are offered only for the quality and subsampling they were encoded at; a
    screen of another size makes every strip new."""
    ahead = codec.EncodedAhead(35, "420")
    ahead.update(three_strips())
    ahead.encode(ahead.strips())
    assert ahead.pieces(35, "444") == {} and ahead.pieces(85, "420") == {}
    assert len(ahead.pieces(35, "420")) == 3
    assert ahead.update(bgrx(200, 320)) == [(0, 0, 320, 128), (0, 128, 320, 72)]
    assert ahead.pieces(35, "420") == {}


@pytest.mark.parametrize(("false_checks", "stored"), [(1, 0), (2, 1), (3, 1), (4, 2)])
def test_encoding_ahead_stores_nothing_once_told_to_stop(false_checks, stored) -> None:
    """The stop is looked at before each strip and again before its pieces are stored: one
    set while a strip is encoded (the streamer changing the copy meanwhile) keeps that strip
    out too; the strips stored before it stay."""
    class StopAfter:
        checks = 0

        def is_set(self) -> bool:
            self.checks += 1
            return self.checks > false_checks

    ahead = codec.EncodedAhead(35, "420")
    ahead.update(three_strips())
    assert ahead.encode(ahead.strips(), StopAfter()) == stored
    assert sorted(ahead.pieces(35, "420")) == ahead.strips()[:stored]


def test_the_copy_given_away_is_the_latest_screen_and_becomes_the_viewers_copy() -> None:
    """give() hands over the copy brought up to the last update (no second copy for the
    viewer's), and keeps nothing: no image, no pieces."""
    ahead = codec.EncodedAhead(35, "420")
    ahead.update(three_strips())
    ahead.encode(ahead.strips())
    new = three_strips()
    new[300:310, 0:50, :3] = 1
    ahead.update(new)
    given = ahead.give()
    assert np.array_equal(np.asarray(given), new)
    diff = codec.ScreenDiff()
    diff.commit(given, [(0, 0, 512, 384)], owned=True)
    assert diff.shown is given and codec.writeable(given)
    assert ahead.image is None and ahead.pieces(35, "420") == {} and ahead.strips() == []


# --- JPEG straight from BGRX ---------------------------------------------------------------


def jpeg_of_converted(image: np.ndarray, rect: codec.Rect, quality: int, subsampling: str,
                      optimize: bool = False) -> bytes:
    """The JPEG as it was made before: the rectangle converted to an RGB image, then saved."""
    x, y, w, h = rect
    rgb = Image.fromarray(np.ascontiguousarray(image[y:y + h, x:x + w, 2::-1]))
    for tuned in (True, False) if optimize else (False,):
        buffer = io.BytesIO()
        try:
            rgb.save(buffer, "JPEG", quality=quality,
                     subsampling=codec.SUBSAMPLINGS[subsampling], optimize=tuned)
        except OSError:  # noise at quality 100 outgrows an optimised JPEG's buffer
            continue
        return buffer.getvalue()
    raise AssertionError("not encoded")


def test_this_pillow_encodes_jpeg_straight_from_the_bgrx_pixels() -> None:
    """The check made at import found that the direct path gives Pillow's own bytes here (so
    the tests below exercise it, not the fallback)."""
    assert codec._DIRECT_JPEG and codec._direct_jpeg_works()


@pytest.mark.parametrize(("rect", "quality", "subsampling", "optimize"), [
    ((0, 0, 512, 128), 75, "420", False),  # a motion strip: whole rows
    ((160, 16, 128, 80), 85, "444", False),  # inside the image, rows wider than it
    ((160, 48, 200, 80), 35, "420", True),  # down to the last row, right of x = 0: converted
    ((0, 0, 512, 128), 100, "444", True),  # optimised, as a whole image's parts
])
def test_jpeg_from_bgrx_is_byte_for_byte_the_jpeg_of_the_converted_image(
        rect, quality, subsampling, optimize) -> None:
    """Whether the rectangle is mapped (BGR rows packed by the encoder) or converted first,
    the JPEG is the very one Pillow made of the RGB image."""
    image = video_beside_desktop()
    image[:, 300:, :3] = noise(128, 212)[..., :3]
    x, y, w, h = rect
    assert codec._jpeg(image, x, y, w, h, quality, subsampling, optimize=optimize) == \
        jpeg_of_converted(image, rect, quality, subsampling, optimize)


def test_a_many_coloured_rectangle_is_encoded_without_an_rgb_copy(monkeypatch) -> None:
    """Motion (more than 256 colours) is counted and encoded from the BGRX pixels themselves:
    no RGB image of the strip is made (4 MB for a 544-row 1080p strip), same bytes."""
    image = noise(96, 256)
    expected = codec.encode_rect(image, (0, 0, 256, 96), 75, "420")

    def no_conversion(*args):
        raise AssertionError("converted to RGB")

    monkeypatch.setattr(codec, "_rgb_image", no_conversion)
    assert codec.encode_rect(image, (0, 0, 256, 96), 75, "420") == expected
    assert expected[0] == p.FRAME_JPEG


def test_a_mapped_rectangle_counts_the_colours_of_its_own_pixels_only() -> None:
    """_bgr_image: the rectangle's colours (blue first), the fourth byte ignored; none where
    Pillow cannot map it (right of x = 0 down to the image's last row)."""
    image = bgrx(40, 64, (1, 2, 3))
    image[10:20, 30:40, :3] = (30, 20, 10)  # BGR of (10, 20, 30)
    image[..., 3] = np.arange(64, dtype=np.uint8)  # padding that varies: not a colour
    mapped = codec._bgr_image(image, 25, 5, 20, 20)
    assert sorted(mapped.getcolors(256)) == [(100, (30, 20, 10)), (300, (3, 2, 1))]
    assert codec._bgr_image(image, 25, 5, 20, 35) is None
    assert codec._bgr_image(image, 0, 5, 64, 35) is not None


@pytest.mark.parametrize("memcmp", [True, False])
def test_the_rows_a_sampled_compare_reads_are_found_differing_exactly(memcmp, monkeypatch
                                                                      ) -> None:
    """_Compare.differing_rows answers the rows of its range that differ, the first byte of
    a row, its last and the image's last row included; none of an empty range; the same with
    memcmp and without it."""
    if not memcmp:
        monkeypatch.setattr(codec, "_MEMCMP", None)
    old = bgrx(37, 11)
    new = old.copy()
    new[4, 0, 0] = new[9, 10, 3] = new[36, 5, 1] = new[12, 3, 2] = 1
    compare = codec._Compare(memoryview(old).cast("B"), memoryview(new).cast("B"))
    try:
        row_bytes = 11 * 4
        assert compare.differing_rows(range(0, 37), row_bytes) == [4, 9, 12, 36]
        assert compare.differing_rows(range(0, 37, 4), row_bytes) == [4, 12, 36]
        assert compare.differing_rows(range(1, 37, 4), row_bytes) == [9]
        assert compare.differing_rows(range(2, 37, 4), row_bytes) == []
        assert compare.differing_rows(range(40, 37, 4), row_bytes) == []
    finally:
        compare.close()
