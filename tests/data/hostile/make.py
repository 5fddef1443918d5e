#!/usr/bin/env python3
"""Writes the hostile-archive corpus: tests/data/hostile/*.tar{,.gz,.zst}
and cases.json, which says what sandboxd must answer to each.

Every archive is built by hand, header by header, so that it holds exactly
the bytes an attacker would send (tar libraries refuse or fix most of
them). Bombs are small compressed inputs: zeros compress about 1000:1 in
gzip, and zstd frames are written with RLE blocks (4 bytes per 128 KiB).

The test tests/it/hostile.rs uploads each file to a real daemon started
with the limits in LIMITS below. Cases already covered by
tests/it/upload.rs (plain `..`, absolute names, symlink and hardlink
escapes through the name, devices, FIFOs, cut streams, the entry-count
limit) are not repeated here.

Run it from anywhere: `python3 tests/data/hostile/make.py`. The output is
deterministic (fixed mtimes, gzip mtime 0).
"""

import gzip
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# The daemon of the test runs with these (see tests/it/hostile.rs).
LIMITS = {
    "max_bundle_bytes": 8 << 20,
    "max_extracted_bytes": 16 << 20,
    "max_entries": 1000,
}
MIB = 1 << 20


# ---------------------------------------------------------------- tar --


def octal(value, width):
    """A NUL-terminated octal field; base-256 when the value needs more
    digits than the field has."""
    text = b"%0*o\0" % (width - 1, value)
    if len(text) > width:
        return base256(value, width)
    return text


def base256(value, width):
    """GNU base-256 numeric field (high bit of the first byte set)."""
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def header(name, size=0, kind=b"0", link=b"", mode=0o644, fmt="gnu",
           prefix=b"", size_field=None, mode_field=None, sparse=None,
           realsize=None, extended=False, bad_checksum=False):
    name = name.encode() if isinstance(name, str) else name
    link = link.encode() if isinstance(link, str) else link
    h = bytearray(512)
    assert len(name[:100]) <= 100 and len(link[:100]) <= 100
    h[0:len(name[:100])] = name[:100]
    h[100:108] = mode_field if mode_field is not None else octal(mode, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = size_field if size_field is not None else octal(size, 12)
    h[136:148] = octal(1600000000, 12)
    h[156:157] = kind
    h[157:157 + len(link[:100])] = link[:100]
    if fmt == "gnu":
        h[257:265] = b"ustar  \0"
    else:
        h[257:263] = b"ustar\0"
        h[263:265] = b"00"
        h[345:345 + len(prefix)] = prefix
    if sparse is not None:
        for i, (offset, length) in enumerate(sparse[:4]):
            at = 386 + 24 * i
            h[at:at + 12] = octal(offset, 12)
            h[at + 12:at + 24] = octal(length, 12)
        h[482] = 1 if extended else 0
        h[483:495] = octal(realsize, 12)
    h[148:156] = b" " * 8
    checksum = sum(h) + (1 if bad_checksum else 0)
    h[148:156] = b"%06o\0 " % checksum
    assert len(h) == 512, name
    return bytes(h)


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def entry(name, data=b"", **kw):
    return header(name, size=len(data), **kw) + pad(data)


def pax_records(records):
    out = b""
    for key, value in records.items():
        key = key.encode() if isinstance(key, str) else key
        value = value.encode() if isinstance(value, str) else value
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length).encode()) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def pax(records, kind=b"x"):
    data = pax_records(records)
    return header("PaxHeaders/x", size=len(data), kind=kind, fmt="ustar") + pad(data)


def gnu_long(kind, name):
    name = name.encode() if isinstance(name, str) else name
    data = name + b"\0"
    return header("././@LongLink", size=len(data), kind=kind) + pad(data)


END = b"\0" * 1024


def tar(*parts):
    return b"".join(parts) + END


# --------------------------------------------------------- compression --


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def zstd_frame(blocks, window_log=20):
    """A zstd frame: no content size, no checksum, the given window.
    `blocks` holds ("raw", bytes) and ("rle", byte, count) items."""
    out = struct.pack("<I", 0xFD2FB528)
    out += bytes([0x00])  # FHD: no FCS, not single segment, no checksum
    out += bytes([(window_log - 10) << 3])
    for i, block in enumerate(blocks):
        last = 1 if i == len(blocks) - 1 else 0
        if block[0] == "raw":
            data = block[1]
            out += (last | (0 << 1) | (len(data) << 3)).to_bytes(3, "little") + data
        else:
            _, byte, count = block
            out += (last | (1 << 1) | (count << 3)).to_bytes(3, "little") + bytes([byte])
    return out


def zstd_raw(data, window_log=20):
    """`data` in raw blocks of at most 128 KiB."""
    step = 128 * 1024
    blocks = [("raw", data[i:i + step]) for i in range(0, len(data), step)] or [("raw", b"")]
    return zstd_frame(blocks, window_log)


def zeros_blocks(count):
    step = 128 * 1024
    blocks = []
    while count > 0:
        n = min(step, count)
        blocks.append(("rle", 0, n))
        count -= n
    return blocks


# ---------------------------------------------------------------- cases --

CASES = []


def case(name, body, cls, expect, why):
    """`expect`: {"status": 400, "code": "...", "says": "..."} for a
    refusal, {"status": 201, "files": {path: content or null}, "absent":
    [...], "links": {path: target}} for an archive that is safely
    extracted."""
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(body)
    CASES.append({"file": name, "class": cls, "expect": expect, "why": why})


def refused(code, says, status=400):
    return {"status": status, "code": code, "says": says}


def ok(files=None, absent=None, links=None):
    return {"status": 201, "files": files or {}, "absent": absent or [], "links": links or {}}


GOOD = entry("good.txt", b"fine\n")

# Traversal through the other ways a name is written.
case("pax-path-dotdot.tar",
     tar(GOOD, pax({"path": "../../evil-pax.txt"}), entry("innocent.txt", b"x")),
     "traversal", refused("unsafe_archive", "`..`"),
     "a harmless ustar name overridden by a PAX path with `..`")
case("pax-path-absolute.tar",
     tar(GOOD, pax({"path": "/tmp/sandboxd-evil-pax-abs"}), entry("innocent.txt", b"x")),
     "absolute", refused("unsafe_archive", "absolute"),
     "a PAX path that is absolute")
case("gnu-longname-dotdot.tar",
     tar(GOOD, gnu_long(b"L", "a" * 120 + "/../../../evil-gnu.txt"), entry("short", b"x")),
     "traversal", refused("unsafe_archive", "`..`"),
     "a GNU long name (type L) climbing out after 120 harmless bytes")
case("ustar-prefix-dotdot.tar",
     tar(GOOD, entry("evil-prefix.txt", b"x", fmt="ustar", prefix=b"../..")),
     "traversal", refused("unsafe_archive", "`..`"),
     "the `..` hidden in the POSIX ustar prefix field")
case("pax-path-nul.tar",
     tar(GOOD, pax({"path": b"ok\0/../../evil-nul"}), entry("innocent.txt", b"x")),
     "traversal", refused("unsafe_archive", "NUL"),
     "a PAX path with a NUL byte (C code would stop reading at it)")
case("dot-as-file.tar",
     tar(GOOD, entry("./", b"x")),
     "traversal", refused("unsafe_archive", "root itself"),
     "a regular file named `./`: the extraction root itself")
case("pax-global-path.tar",
     tar(pax({"path": "../../evil-global"}, kind=b"g"), entry("ok.txt", b"ok\n")),
     "traversal", ok({"ok.txt": "ok\n"}),
     "a PAX global header setting a path: metadata only, ignored")

# Symlink and hardlink escapes through the other name fields.
case("gnu-longlink-absolute.tar",
     tar(GOOD, gnu_long(b"K", "/etc/" + "x/" * 60 + "passwd"), entry("evil-link", kind=b"2", link="short")),
     "symlink escape", refused("unsafe_archive", "absolute"),
     "a symlink whose GNU long link name (type K) is absolute")
case("pax-linkpath-escape.tar",
     tar(GOOD, pax({"linkpath": "../../../etc"}), entry("evil-link", kind=b"2", link="good.txt")),
     "symlink escape", refused("unsafe_archive", "outside"),
     "a harmless ustar link target overridden by a PAX linkpath")
case("symlink-parent.tar",
     tar(GOOD, entry("up", kind=b"2", link="..")),
     "symlink escape", refused("unsafe_archive", "outside"),
     "a symlink to `..` at the top")
case("symlink-through-real-dir.tar",
     tar(GOOD, entry("d/", kind=b"5", mode=0o755), entry("d/evil", kind=b"2", link="../../x")),
     "symlink escape", refused("unsafe_archive", "outside"),
     "a symlink climbing through a real directory")
case("symlink-loop.tar",
     tar(GOOD, entry("a", kind=b"2", link="b"), entry("b", kind=b"2", link="a")),
     "symlink escape", refused("unsafe_archive", "symlinks"),
     "two symlinks pointing at each other")
case("symlink-dir-then-write.tar",
     tar(GOOD, entry("d/", kind=b"5", mode=0o755), entry("s", kind=b"2", link="d"), entry("s/evil", b"x")),
     "symlink-then-file", refused("unsafe_archive", "symlink"),
     "a file written through a symlink to a directory of the archive")
case("symlink-then-dir.tar",
     tar(GOOD, entry("s", kind=b"2", link="."), entry("s/", kind=b"5", mode=0o755)),
     "symlink-then-file", refused("unsafe_archive", "symlink"),
     "a directory entry over an earlier symlink")
case("hardlink-through-symlink.tar",
     tar(entry("d/f", b"inner\n"), entry("s", kind=b"2", link="d"), entry("h", kind=b"1", link="s/f")),
     "hardlink escape", refused("unsafe_archive", "symlink"),
     "a hardlink whose target path goes through a symlink")
case("hardlink-to-dir.tar",
     tar(GOOD, entry("d/", kind=b"5", mode=0o755), entry("h", kind=b"1", link="d")),
     "hardlink escape", refused("unsafe_archive", "regular file"),
     "a hardlink to a directory")
case("pax-linkpath-hardlink-escape.tar",
     tar(GOOD, pax({"linkpath": "../../../etc/passwd"}), entry("h", kind=b"1", link="good.txt")),
     "hardlink escape", refused("unsafe_archive", "`..`"),
     "a harmless hardlink target overridden by a PAX linkpath")
case("symlink-long-target.tar",
     tar(GOOD, pax({"linkpath": "a/" * 2500 + "b"}), entry("long-link", kind=b"2", link="x")),
     "long names", refused("bad_archive", "refuses"),
     "a 5 KB symlink target (the file system refuses it)")

# Overwrites: later entries over earlier ones.
case("hardlink-then-file.tar",
     tar(entry("a", b"original\n"), entry("b", kind=b"1", link="a"), entry("b", b"replaced\n")),
     "duplicates", ok({"a": "original\n", "b": "replaced\n"}),
     "a file over a hardlink replaces the link, not the file it shares")
case("symlink-then-hardlink.tar",
     tar(GOOD, entry("s", kind=b"2", link="good.txt"), entry("s", kind=b"1", link="good.txt")),
     "symlink-then-file", refused("unsafe_archive", "symlink"),
     "a hardlink over an earlier symlink")

# Duplicate entries.
case("duplicate-file.tar",
     tar(entry("a.txt", b"first\n"), entry("a.txt", b"second\n")),
     "duplicates", ok({"a.txt": "second\n"}),
     "the same file twice: the last one wins, as with tar")
case("duplicate-file-then-dir.tar",
     tar(entry("a", b"file\n"), entry("a/", kind=b"5", mode=0o755)),
     "duplicates", refused("bad_archive", "directory"),
     "a directory over an earlier file")
case("duplicate-dir-then-file.tar",
     tar(entry("a/", kind=b"5", mode=0o755), entry("a/inner", b"x"), entry("a", b"file\n")),
     "duplicates", refused("bad_archive", "directory"),
     "a file over an earlier directory (and its content)")
case("duplicate-file-as-parent.tar",
     tar(entry("a", b"file\n"), entry("a/b", b"x")),
     "duplicates", refused("bad_archive", "not a directory"),
     "a file used as a directory by a later entry")

# Kinds sandboxd never creates.
case("unknown-type.tar",
     tar(GOOD, entry("evil-z", b"x", kind=b"Z")),
     "devices", refused("unsafe_archive", "unsupported"),
     "an unknown entry type")
case("gnu-multivolume.tar",
     tar(GOOD, entry("evil-m", b"x", kind=b"M")),
     "devices", refused("unsafe_archive", "unsupported"),
     "a GNU multi-volume continuation")
case("readonly-dir-then-unsafe.tar",
     tar(entry("ro/", kind=b"5", mode=0o555), entry("ro/f", b"x", mode=0o000),
         entry("dev", kind=b"3")),
     "devices", refused("unsafe_archive", "device"),
     "a read-only directory and an unreadable file, then a device: the "
     "staging dir must still be removed whole")

# Huge declared sizes.
case("size-base256-huge.tar",
     tar(GOOD, header("huge", size_field=base256(1 << 62, 12)) + pad(b"tiny")),
     "huge sizes", refused("extracted_too_large", "huge", status=413),
     "a base-256 size field declaring 4 EiB, with 4 bytes of data")
case("pax-size-huge.tar",
     tar(GOOD, pax({"size": "99999999999999999"}), entry("huge", b"tiny")),
     "huge sizes", refused("extracted_too_large", "huge", status=413),
     "a PAX size of 100 PB")
case("pax-size-garbage.tar",
     tar(GOOD, pax({"size": "-12x"}), entry("odd", b"tiny")),
     "huge sizes", ok({"good.txt": "fine\n", "odd": "tiny"}),
     "a PAX size that is no number: ignored, the header's size holds")
case("mode-garbage.tar",
     tar(GOOD, entry("odd", b"x", mode_field=b"9z9z9z9\0")),
     "huge sizes", refused("bad_archive", "mode"),
     "a mode field that is not octal")
case("bad-checksum.tar",
     tar(GOOD, entry("odd", b"x", bad_checksum=True)),
     "truncated", refused("bad_archive", "archive"),
     "a header whose checksum is off by one")

# Sparse bombs.
TB = 1 << 40
case("sparse-bomb.tar",
     tar(GOOD, header("sparse-bomb", size=4, kind=b"S", sparse=[(TB - 4, 4)], realsize=TB) + pad(b"tail")),
     "sparse bombs", refused("extracted_too_large", "sparse-bomb", status=413),
     "a GNU sparse file of 1 TiB (all hole) stored in 4 bytes")
# 2200 extension headers of 21 chunks each: 1.1 MB of sparse map, which a
# tar reader collects before the entry starts. (No data follows: the map
# alone is the bomb.)
maps = [(i * 1024, 512) for i in range(4 + 21 * 2200)]
ext_blocks = []
rest = maps[4:]
for i in range(0, len(rest), 21):
    block = bytearray(512)
    for j, (offset, length) in enumerate(rest[i:i + 21]):
        block[j * 24:j * 24 + 12] = octal(offset, 12)
        block[j * 24 + 12:j * 24 + 24] = octal(length, 12)
    block[504] = 1 if i + 21 < len(rest) else 0
    ext_blocks.append(bytes(block))
case("sparse-map-bomb.tar.gz",
     gz(header("holes", size=512 * len(maps), kind=b"S", sparse=maps[:4],
               realsize=maps[-1][0] + 512, extended=True)
        + b"".join(ext_blocks) + END),
     "sparse bombs", refused("bad_archive", "more than"),
     "a sparse map of 46,204 chunks in 2200 extension headers (1.1 MB of "
     "map): stopped at 1 MiB")
case("sparse-beyond-size.tar",
     tar(GOOD, header("odd-sparse", size=4, kind=b"S", sparse=[(1 << 20, 4)], realsize=16) + pad(b"data")),
     "sparse bombs", refused("bad_archive", "archive"),
     "a sparse chunk beyond the file's declared real size")
case("pax-sparse-realsize.tar",
     tar(pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
              "GNU.sparse.name": "sparse-1-0", "GNU.sparse.realsize": str(TB)}),
         entry("GNUSparseFile.0/sparse-1-0", pad(b"1\n0\n512\n") + b"data")),
     "sparse bombs", ok({"GNUSparseFile.0/sparse-1-0": None}),
     "GNU sparse 1.0 (PAX) declaring 1 TiB: not expanded, kept as the small "
     "file it is stored as")

# Compression bombs: the limits stop them after little work.
zeros = tar(*(entry(f"zeros-{i:02}", b"\0" * (4 * MIB)) for i in range(8)))
case("gzip-bomb.tar.gz", gz(zeros),
     "gzip bombs", refused("extracted_too_large", "zeros-04", status=413),
     "32 MiB of zeros in 8 honest 4 MiB files: stopped at 16 MiB")
case("gzip-trailing-zeros.tar.gz", gz(tar(GOOD) + b"\0" * (16 * MIB)),
     "gzip bombs", refused("bad_archive", "more than"),
     "a tiny archive followed by 16 MiB of zero padding: stopped at 1 MiB")
case("gzip-pax-bomb.tar.gz",
     gz(tar(GOOD, header("PaxHeaders/x", size=16 * MIB, kind=b"x", fmt="ustar") + b"9" * (16 * MIB))),
     "gzip bombs", refused("bad_archive", "more than"),
     "a 16 MiB PAX record, which a tar reader holds in memory: stopped at 1 MiB")
case("gzip-longname-bomb.tar.gz",
     gz(tar(GOOD, header("././@LongLink", size=16 * MIB, kind=b"L") + b"a" * (16 * MIB))),
     "long names", refused("bad_archive", "more than"),
     "a 16 MiB GNU long name: stopped at 1 MiB")
zstd_blocks = []
for i in range(8):
    zstd_blocks.append(("raw", header(f"zeros-{i:02}", size=4 * MIB)))
    zstd_blocks.extend(zeros_blocks(4 * MIB))
zstd_blocks.append(("raw", END))
case("zstd-bomb.tar.zst", zstd_frame(zstd_blocks),
     "zstd bombs", refused("extracted_too_large", "zeros-04", status=413),
     "32 MiB of zeros in 8 honest 4 MiB files, as RLE blocks (5 KB): "
     "stopped at 16 MiB")
case("zstd-window-bomb.tar.zst",
     zstd_frame([("raw", tar(GOOD))], window_log=31),
     "zstd bombs", refused("bad_archive", "archive"),
     "a zstd frame asking for a 2 GiB window: refused before any allocation")
case("zstd-multiframe.tar.zst",
     zstd_raw(GOOD) + zstd_raw(entry("second.txt", b"two\n") + END),
     "zstd bombs", ok({"good.txt": "fine\n", "second.txt": "two\n"}),
     "an archive split over two zstd frames")
case("gzip-multimember.tar.gz",
     gz(GOOD) + gz(entry("second.txt", b"two\n")) + gz(END),
     "gzip bombs", ok({"good.txt": "fine\n", "second.txt": "two\n"}),
     "an archive split over three gzip members")

# Truncated streams, in places upload.rs does not cut.
full = tar(GOOD, pax({"path": "long/" * 30 + "name.txt"}), entry("x", b"data" * 300))
case("tar-cut-in-header.tar", full[:1024 + 300],
     "truncated", refused("bad_archive", "archive"),
     "cut in the middle of the second header")
case("tar-cut-in-pax.tar", full[:1536 + 100],
     "truncated", refused("bad_archive", "archive"),
     "cut inside a PAX record")
case("gzip-header-only.tar.gz", gz(full)[:10],
     "truncated", refused("bad_archive", "archive"),
     "only the 10-byte gzip header")
case("zstd-header-only.tar.zst", zstd_raw(full)[:6],
     "truncated", refused("bad_archive", "archive"),
     "only the zstd frame header")
case("zstd-cut-in-block.tar.zst", zstd_raw(full)[:200],
     "truncated", refused("bad_archive", "archive"),
     "a zstd frame cut inside a raw block")
case("gzip-trailing-garbage.tar.gz", gz(tar(GOOD)) + b"not gzip at all",
     "truncated", refused("bad_archive", "archive"),
     "garbage after the last gzip member")

# Long names.
case("gnu-longname-component.tar",
     tar(GOOD, gnu_long(b"L", "n" * 300), entry("short", b"x")),
     "long names", refused("bad_archive", "refuses"),
     "a GNU long name with one 300-byte component (NAME_MAX is 255)")
case("pax-path-too-long.tar",
     tar(GOOD, pax({"path": "d/" * 2100 + "f"}), entry("short", b"x")),
     "long names", refused("bad_archive", "refuses"),
     "a PAX path of 4201 bytes in 2101 components (PATH_MAX is 4096)")
deep = "d/" * 100 + "deep.txt"
case("pax-path-deep.tar",
     tar(GOOD, pax({"path": deep}), entry("short", b"deep\n")),
     "long names", ok({"good.txt": "fine\n", deep: "deep\n"}),
     "a PAX path 100 directories deep (implicit parents)")
long_ok = "L" * 250
case("gnu-longname-ok.tar",
     tar(gnu_long(b"L", long_ok), entry("short", b"long\n")),
     "long names", ok({long_ok: "long\n"}),
     "a GNU long name of 250 bytes: fine")

with open(os.path.join(HERE, "cases.json"), "w") as f:
    json.dump({"limits": LIMITS, "cases": CASES}, f, indent=1)
    f.write("\n")
total = sum(os.path.getsize(os.path.join(HERE, c["file"])) for c in CASES)
print(f"{len(CASES)} archives, {total} bytes")
