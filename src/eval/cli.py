"""Every entry point ends in one line on failure: `error: ...` (exit 1), or, on Ctrl-C, how many answers
were kept (exit 130). Tracebacks stay available behind --debug or DUODEC_DEBUG=1."""
import os
import sys


def one_line(error):
    """The first line of a message, and its last when it has several (a worker's traceback ends in the cause)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def run_cli(main, argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DUODEC_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(str(e) or "interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - every failure gets its one line
        if debug:
            raise
        written = getattr(e, "written", None)
        print(f"error: {one_line(e)}" + (" (--debug shows the traceback)" if written is None else ""),
              file=sys.stderr)
        sys.exit(130 if written is not None else 1)
