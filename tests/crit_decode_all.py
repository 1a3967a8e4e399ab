"""crit decode, for many images in one interpreter.

    /usr/bin/python3 crit_decode_all.py OUTDIR IMAGE...

Runs crit's own decode (pycriu.cli.decode, what `crit decode -i IMAGE --pretty -o OUT` runs)
on every IMAGE, writing OUTDIR/<name>.json. Starting one Python per image costs a tenth of a
second each; a tree of fifteen processes has a hundred images. Exits 1 naming the first image
crit cannot decode.
"""
import os
import sys

from pycriu import cli

out_dir = sys.argv[1]
for path in sys.argv[2:]:
    out = os.path.join(out_dir, os.path.basename(path) + ".json")
    try:
        cli.decode({"in": path, "out": out, "pretty": True, "nopl": False})
    except BaseException as e:  # noqa: BLE001 - crit exits through SystemExit too
        print(f"crit decode {os.path.basename(path)} failed: {e!r}", file=sys.stderr)
        sys.exit(1)
