"""Fetch real corpora of different kinds for the byte-level quality benchmark.

    python data_prep/corpora/fetch_corpora.py --out data/corpora text code image audio exe
    python -m data_prep.corpora.fetch --out data/corpora text ...   (the same, from the repo root)

Every corpus comes from pinned Debian packages (bookworm, `main`) fetched with `apt-get download`
and unpacked with `dpkg-deb -x`; nothing else is downloaded, except Pillow from PyPI for the image
step (into `<out>/.venv`, never the project's own venv). Output of corpus NAME:

    <out>/NAME/files/...        the documents, one file each (what `mbtrain prepare` reads)
    <out>/NAME/SOURCE.md        packages, versions, sha256, licences, decoding, sizes, compressor bpb
    <out>/NAME/MANIFEST.sha256  sha256sum of every document (to check that a rerun gave the same bytes)
    <out>/NAME/.complete        written last; a corpus with it is skipped (use --force to rebuild)

Corpora:
  text   English prose/reference text: GCIDE (Webster 1913 + supplements), Jargon File, FOLDOC,
         Devil's Dictionary (dictd files, dictzip-decompressed), five public-domain SWORD modules
         (KJV, WEB, Spurgeon's Treasury of David, Scofield notes, Nave's Topical Bible; exported
         with `mod2imp -s`, markup stripped) and the English fortune cookie files.
  code   C sources (*.c, *.h) of Linux 6.1 (linux-source-6.1): kernel/ mm/ fs/ (less fs/nls) net/
         block/ ipc/ init/ io_uring/.
  image  38 natural photographs from Debian wallpaper packages, EXIF-orientated, downscaled to at
         most 1024 px on the long side (Lanczos), raw 8-bit RGB, no header; the size is in the name
         (`..._<W>x<H>.rgb`, row-major, W*H*3 bytes).
  audio  Wesnoth's orchestral game music (Ogg Vorbis) decoded by sox to raw PCM: signed 16-bit
         little-endian, mono, 16 kHz, no header (`.s16le`), whole tracks of >= 30 s, up to 100 MB.
  exe    x86-64 ELF executables and shared libraries (regular files with the ELF magic) from a
         dozen common packages (coreutils, binutils, libc6, gdb, ...).

Reproducibility: package versions and .deb sha256 are pinned in data_prep/corpora/pins.json;
Debian keeps only the current version of a package in the archive, so when a security/point
update replaces one, rerun with `--allow-newer` (takes the candidate version, records it in
SOURCE.md, and skips the hash check).
File lists are sorted and every tool runs in a repeatable mode (sox -R, no dither). The decoding
tools' versions are recorded in SOURCE.md as well. Stdlib only, apart from Pillow in the image step
(run as a subprocess: `<out>/.venv/bin/python -m data_prep.corpora.fetch.decode_images ...`).

Modules: cli (arguments), corpus (lock, skip, build one corpus), apt (download, check and unpack
pinned .debs; install tools), pins (reads pins.json), one builder per corpus (text, code, image
and decode_images, audio, exe), manifest (MANIFEST.sha256, stats.json, SOURCE.md), shell
(subprocess and hashing helpers).
"""
