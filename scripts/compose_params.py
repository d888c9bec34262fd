"""Write params.yaml from conf/, exactly as ``dvc exp run`` does (README "Profiles").

``dvc exp run`` composes ``conf/`` with Hydra into params.yaml before every run; ``dvc repro``
reads params.yaml as it is. After editing ``conf/``, run this so that ``dvc repro`` sees the
edit::

    python scripts/compose_params.py                  # the embedded default
    python scripts/compose_params.py profile=paper    # any Hydra override, as with -S
    python scripts/compose_params.py --check          # exit 1 if params.yaml is stale

It calls DVC's own ``compose_and_dump`` with the settings DVC reads from ``.dvc/config``
(config_dir ``conf``, config_name ``config``), so the bytes are the ones DVC writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compose(output: Path, overrides: list[str]) -> None:
    """Compose ``conf/config.yaml`` with ``overrides`` into ``output`` (DVC's code path)."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(output, str(REPO / "conf"), None, "config", str(REPO), overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. profile=paper")
    parser.add_argument("--output", type=Path, default=REPO / "params.yaml")
    parser.add_argument(
        "--check", action="store_true", help="compare with --output instead of writing it"
    )
    args = parser.parse_args(argv)
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "params.yaml"
        try:
            compose(fresh, args.overrides)
        except (HydraException, OmegaConfBaseException) as error:
            # an unknown profile or key, an unset ${oc.env:...}: one line, as dvc exp run does
            print(f"conf/ with {args.overrides}: {str(error).splitlines()[0]}", file=sys.stderr)
            return 2
        if not args.check:
            args.output.write_bytes(fresh.read_bytes())
            print(f"wrote {args.output}")
            return 0
        if args.output.is_file() and fresh.read_bytes() == args.output.read_bytes():
            print(f"{args.output} is up to date with conf/")
            return 0
    print(
        f"{args.output} differs from conf/ composed with {args.overrides or 'the defaults'}: "
        "run python scripts/compose_params.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
