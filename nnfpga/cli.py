"""The `nnfpga` command. Contract (scripts depend on it):

    nnfpga compile MODEL -o DIR [--target DEV] [--pipeline P] [--calib FILE.npz] [--force]
                                [--target-fps FPS [--freq MHZ]]
    nnfpga verify DIR [--samples N] [--inputs FILE.npz] [--json]    exit 0 iff bit-exact
    nnfpga ir MODEL [--after PASS]                                  IR text to stdout
    nnfpga report DIR [--json]
    nnfpga run DIR --inputs FILE.npz [--json]                       host prefix -> RTL -> host suffix
    nnfpga build DIR [--target DEV] [--freq MHZ] [--force]   synthesis (+ bitstream on ECP5)
    nnfpga finetune MODEL --train FILE.npz -o OUT.onnx [--pipeline P] [--epochs N] [--seed S] [--force]

    nnfpga --version

User mistakes print one message on stderr and exit 2; a failed verification exits 1; SIGINT
and SIGTERM stop the child tools, clean up, and exit 130 and 143.
"""
from __future__ import annotations

import sys

# Nothing heavy at the top: Ctrl-C is handled from the first line of main() on, so the
# compiler and the console library load inside it.
from nnfpga import processes
from nnfpga.errors import NnfpgaError


def _error(message: str) -> None:
    if "nnfpga.commands" in sys.modules:  # loaded: its console colours the label
        sys.modules["nnfpga.commands"].error(message)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


def _os_error_text(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    return str(e)


def main(argv: list[str] | None = None) -> int:
    with processes.interruptible():
        try:
            # Loaded here, not at the top: a Ctrl-C while it loads is an interruption like any other.
            from nnfpga.commands import build_parser

            args = build_parser().parse_args(argv)
            return args.fn(args)
        except NnfpgaError as e:
            _error(str(e))
            return 2
        except OSError as e:  # a path of the user's that cannot be read or written
            _error(_os_error_text(e))
            return 2
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Interrupted): clean-up has run
            _error("interrupted")
            return 128 + getattr(e, "signum", 2)


if __name__ == "__main__":
    sys.exit(main())
