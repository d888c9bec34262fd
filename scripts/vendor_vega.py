"""Build `.dvc/plots/offline.html`, the page `dvc plots show` renders into (`.dvc/config`
[plots] html_template), with vega, vega-lite and vega-embed inlined from their npm packages,
so the page draws with no network (DVC's own page loads them from a CDN).

    npm pack vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0
    python scripts/vendor_vega.py vega-5.33.1.tgz vega-lite-5.23.0.tgz vega-embed-6.29.0.tgz

All three are BSD-3-Clause (University of Washington Interactive Data Lab); the notice is kept
in the page and in `.dvc/plots/VENDORED.md`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

#: package -> its minified UMD build inside the npm tarball (order = load order)
BUILDS = {
    "vega": "package/build/vega.min.js",
    "vega-lite": "package/build/vega-lite.min.js",
    "vega-embed": "package/build/vega-embed.min.js",
}
OUT = Path(".dvc/plots/offline.html")
PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
    <!-- Built by scripts/vendor_vega.py: {versions}, inlined from their npm packages.
         BSD-3-Clause, Copyright (c) 2015, University of Washington Interactive Data Lab.
         See .dvc/plots/VENDORED.md for the licence text. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def read_package(tarball: Path) -> tuple[str, str, str]:
    """(name, version, minified build) of one npm tarball."""
    with tarfile.open(tarball) as archive:
        meta = json.load(archive.extractfile("package/package.json"))
        name = meta["name"]
        if name not in BUILDS:
            raise SystemExit(f"{tarball}: package {name!r} is not one of {list(BUILDS)}")
        if meta.get("license") != "BSD-3-Clause":
            raise SystemExit(f"{tarball}: licence {meta.get('license')!r}, expected BSD-3-Clause")
        code = archive.extractfile(BUILDS[name]).read().decode()
    # the source map is not shipped; drop the comment that points at it
    lines = code.splitlines()
    code = "\n".join(line for line in lines if not line.startswith("//# sourceMappingURL"))
    if "</script" in code:
        raise SystemExit(f"{tarball}: the build contains '</script' and cannot be inlined")
    return name, meta["version"], code


def main(tarballs: list[str]) -> None:
    packages = {}
    for tarball in tarballs:
        name, version, code = read_package(Path(tarball))
        packages[name] = (version, code)
    missing = sorted(set(BUILDS) - set(packages))
    if missing:
        raise SystemExit(f"missing npm tarball(s) for {missing}")
    versions = ", ".join(f"{name} {packages[name][0]}" for name in BUILDS)
    scripts = "\n".join(f"<script>{packages[name][1]}</script>" for name in BUILDS)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(PAGE.format(versions=versions, scripts=scripts))
    for name in BUILDS:
        digest = hashlib.sha256(packages[name][1].encode()).hexdigest()[:16]
        print(f"{name} {packages[name][0]}: {BUILDS[name]} sha256 {digest}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
