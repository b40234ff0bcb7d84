"""``lowdose-denoise reader-study plan|status|summarize``: the reader study on the command line.

Registered by the main CLI with :func:`add_parser`; errors are the library's
:class:`~LowDoseDenoiseLib.errors.InputError`, which the main CLI turns into exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from . import protocol as p

__all__ = ["add_parser", "cmd_plan", "cmd_status", "cmd_summarize"]


def _window(text: str):
    try:
        width, level = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"the window is WIDTH,LEVEL in HU (e.g. 400,40), got '{text}'") from None
    if width <= 0:
        raise argparse.ArgumentTypeError(f"the window width must be positive, got {width:g}")
    return width, level


def _readers(text: str):
    from ..errors import InputError
    from .plan import parse_readers

    try:
        return parse_readers(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan_study

    say = None if args.quiet else (lambda message: print(message, file=sys.stderr))
    plan = plan_study(args.cases, args.methods, args.out, readers=args.readers, seed=args.seed, pairs=args.pairs,
                      window=args.window, device=args.device, overwrite=args.overwrite, force=args.force,
                      progress=say)
    print(f"study: {plan.folder} ({plan.cases} cases x {len(plan.methods)} methods: {', '.join(plan.methods)}; "
          f"{plan.items} pairs, {plan.images} images, readers {', '.join(plan.readers)})")
    print(f"key: {plan.folder / p.KEY_DIR} -- keep it away from the readers until they are done")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .scores import ReadingSession, Study

    study = Study(args.study)
    for reader in study.readers:
        session = ReadingSession(args.study, reader)
        print(f"{reader}: {session.done}/{session.total} pairs scored")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from .summary import summarize_study

    result = summarize_study(args.study, args.out, overwrite=args.overwrite)
    print(f"report: {result.report}")
    print(f"statistics: {result.json}")
    print(f"figure: {result.figure}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``reader-study`` with its subcommands to the main CLI's subparsers."""
    parser = subparsers.add_parser("reader-study", help="blinded reader study: plan, status, summarize")
    sub = parser.add_subparsers(dest="reader_study_command", metavar="STEP")
    sub.required = True

    plan = sub.add_parser("plan", help="make the images and write a blinded worklist, a separate key and the protocol")
    plan.add_argument("cases", nargs="+", metavar="CASE", help="image file or DICOM series folder (read only)")
    plan.add_argument("--methods", required=True,
                      help="comma-separated: original (required), model[@STRENGTH] (bundled), NAME or PATH.pt"
                      "[@STRENGTH], cad (curvature anisotropic diffusion), gaussian, nlm")
    plan.add_argument("--out", required=True, help="new study folder")
    plan.add_argument("--readers", type=_readers, default=2, help="number of readers (ids R1..RN) or ids a,b,c")
    plan.add_argument("--seed", type=int, default=0, help="randomisation seed (default 0)")
    plan.add_argument("--pairs", choices=["reference", "all"], default="reference",
                      help="reference: every method against the original (default); all: every two methods")
    plan.add_argument("--window", type=_window, default=p.DEFAULT_WINDOW,
                      help="display window WIDTH,LEVEL in HU (default 400,40, liver)")
    plan.add_argument("--device", default="auto", help="device for model methods (auto, cpu, cuda, mps)")
    plan.add_argument("--overwrite", action="store_true", help="replace an existing study folder without scores")
    plan.add_argument("--force", action="store_true", help="accept cases that do not look like CT")
    plan.set_defaults(func=cmd_plan)

    status = sub.add_parser("status", help="how many pairs every reader has scored")
    status.add_argument("study")
    status.set_defaults(func=cmd_status)

    summarize = sub.add_parser("summarize", help="unblind with the key and write a report, statistics and a figure")
    summarize.add_argument("study")
    summarize.add_argument("--out", required=True, help="REPORT.md (with .json and .png beside it) or a folder")
    summarize.add_argument("--overwrite", action="store_true", help="replace an existing report")
    summarize.set_defaults(func=cmd_summarize)
    return parser

