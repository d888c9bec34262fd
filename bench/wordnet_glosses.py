"""WordNet glosses as a caption-length corpus for the topic-clustering benchmark.

Debian's ``wordnet-base`` package holds ~117k glosses (short English definitions, ~9 words)
in ``dict/data.{noun,verb,adj,adv}``. Get it without root::

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb wordnet
    # the files are then in wordnet/usr/share/wordnet/

The usage examples after a gloss (``; "..."``) are dropped so a line reads like a caption.
"""

from __future__ import annotations

from pathlib import Path

PARTS = ("noun", "verb", "adj", "adv")


def find_dict_dir(root: str | Path) -> Path:
    """The folder holding ``data.noun`` etc.: ``root`` itself or ``root/dict``."""
    root = Path(root)
    for candidate in (root, root / "dict", root / "usr/share/wordnet"):
        if (candidate / "data.noun").exists():
            return candidate
    raise FileNotFoundError(
        f"{root}: no data.noun here or in dict/ (get it with `apt-get download wordnet-base "
        "&& dpkg-deb -x wordnet-base_*.deb wordnet`, then pass wordnet/usr/share/wordnet)"
    )


def read_glosses(root: str | Path) -> list[str]:
    """Every gloss in file order (noun, verb, adj, adv), examples stripped, empty ones skipped."""
    folder = find_dict_dir(root)
    glosses: list[str] = []
    for part in PARTS:
        with (folder / f"data.{part}").open(encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                gloss = line.split("|", 1)[1].split('; "', 1)[0].strip().strip(";").strip()
                if gloss:
                    glosses.append(gloss)
    return glosses
