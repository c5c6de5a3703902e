"""The decode work an encoded image asks for, bounded before any decoder runs.

The pixel cap bounds what a decode produces, not what it costs: a progressive JPEG decodes its whole
coefficient buffer once per scan (4096², 3,000 scans, 150 KB: 5.7 s; Pillow's `draft` does not reduce
entropy decoding), and Pillow reads each PNG chunk before the pixels in Python (125 k empty chunks,
1.43 MiB: 0.37 s just to open). Both are counted here from the container's own structure, in one pass
that stops at the bound: JPEG scans against the pixels they each cover, PNG chunks against the bytes
they carry. Beyond a bound the item is refused as its own 400.
"""

from __future__ import annotations

import re
import struct

from runtime.errors import InputError

# A progressive JPEG of libjpeg's or mozjpeg's default scripts has 10-12 scans; one at the pixel cap is allowed
# 16 (at most twice the work of an ordinary one), a smaller image more: the work is scans × pixels.
SCAN_PIXEL_BUDGET_PER_CAP = 16
MAX_JPEG_SEGMENTS = 1024
# Encoders write IDAT chunks of 8-64 KiB and a few ancillary chunks; this allows 2 KiB chunks.
PNG_CHUNK_BASE = 256
PNG_BYTES_PER_CHUNK = 2048

_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the first marker after entropy-coded data
_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}  # TEM, SOI, RSTn: no length field
_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)


def check_decode_work(data: bytes, max_pixels: int, index: int = 0) -> None:
    """Refuse (InputError) a JPEG or PNG whose structure asks for more decode work than its size allows."""
    if data[:2] == b"\xff\xd8":
        _check_jpeg(data, max_pixels, index)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png(data, index)


def _check_jpeg(data: bytes, max_pixels: int, index: int) -> None:
    pos, segments, scans, pixels = 2, 0, 0, 0
    size = len(data)
    while pos + 1 < size:
        if data[pos] != 0xFF:  # not at a marker: the rest is not a JPEG that Pillow would read further
            return
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 1 >= size:
            return
        marker = data[pos + 1]
        pos += 2
        if marker in _STANDALONE:
            continue
        if marker == 0xD9 or pos + 2 > size:  # EOI
            return
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InputError(f"input[{index}]: the JPEG has more than {MAX_JPEG_SEGMENTS} marker segments")
        (length,) = struct.unpack_from(">H", data, pos)
        if marker in _SOF and pos + 7 <= size:
            height, width = struct.unpack_from(">HH", data, pos + 3)
            pixels = width * height
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            scans += 1
            allowed = max(1, SCAN_PIXEL_BUDGET_PER_CAP * max_pixels // max(pixels, 1))  # a baseline JPEG: 1
            if scans > allowed:
                raise InputError(
                    f"input[{index}]: the JPEG has more than {allowed} scans for its {pixels} pixels "
                    "(progressive JPEGs have about 10)"
                )
            found = _MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start()


def _check_png(data: bytes, index: int) -> None:
    allowed = PNG_CHUNK_BASE + len(data) // PNG_BYTES_PER_CHUNK
    pos, chunks, size = 8, 0, len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > allowed:
            raise InputError(f"input[{index}]: the PNG has more than {allowed} chunks for its {size} bytes")
        if kind == b"IEND":
            return
        pos += 12 + length
