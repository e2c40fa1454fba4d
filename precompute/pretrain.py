"""``python -m precompute pretrain``: pre-train (or resume) the built-in checkpoint suite.

Prints a table of the checkpoints (step, tokens, train loss, held-out loss) and the chat
model's held-out yes/no accuracy next to the majority-answer baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trustdyn.suites.base import Suite
from trustdyn.suites.builtin_presets import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain`` subcommand; its handler is stored as ``args.handler``."""
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train the built-in Llama suite from scratch on the vendored corpus",
        description="Pre-train (or resume, or show a finished run of) the built-in suite: "
                    "checkpoints dense early, then a short chat fine-tune.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="model size and schedule (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=None,
                        help="folder holding suite folders (default: <generated>/suites)")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the ``pretrain`` subcommand; return the process exit code.

    Raises:
        SuiteError: for user-facing problems (the CLI's ``main`` prints them in one line).

    """
    # Imported here: the training code loads torch, which building the parser must not.
    from trustdyn.suites.builtin import pretrain

    suite = pretrain(args.preset, seed=args.seed, root=args.root, progress=not args.quiet)
    print(summary(suite))
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary(suite: Suite) -> str:
    """Return the checkpoint table and the chat model's held-out task accuracy as text."""
    lines = [suite.description, "", f"{'step':>7} {'tokens':>11} {'train loss':>10} "
             f"{'held-out':>9}  weight hash"]
    for ref in suite.checkpoints:
        lines.append(f"{ref.step:>7} {ref.tokens or 0:>11,} {_fmt(ref.train_loss):>10} "
                     f"{_fmt(ref.heldout_loss):>9}  {(ref.weight_hash or '')[:12]}")
    if suite.chat is not None:
        extra = suite.chat.extra
        lines += [
            "",
            f"chat model: {suite.chat.source}",
            f"  held-out task accuracy {extra['task_accuracy']:.3f} (95% interval "
            f"{extra['task_accuracy_ci'][0]:.3f}-{extra['task_accuracy_ci'][1]:.3f}) on "
            f"{extra['task_n']} items of '{extra['task_name']}' (majority-answer baseline "
            f"{extra['majority_baseline']:.3f}; before the chat stage "
            f"{extra['task_accuracy_base']:.3f}; answers 'Yes.' to "
            f"{extra['task_predicted_yes_rate']:.0%})",
            f"  held-out LM loss {_fmt(suite.chat.heldout_loss)}",
        ]
    return "\n".join(lines)
