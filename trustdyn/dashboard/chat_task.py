"""The chat model's own task as the Overview shows it: accuracy, interval, baseline, verdict.

The built-in suite's chat stage stores its held-out task result in the chat checkpoint's
``extra`` (``task_accuracy``, ``task_accuracy_ci``, ``majority_baseline``, ``task_name``,
``task_description``; see ``trustdyn.suites.builtin_task``). This module reads it back from
a study's checkpoints table and words the verdict a reader needs: does the chat model
answer better than always giving the majority answer? Suites whose chat model stores no
task result (public and local suites, older builds) give ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from trustdyn.store import json_object


@dataclass(frozen=True)
class ChatTaskResult:
    """The chat model's held-out accuracy on its task, as stored by the chat stage.

    Attributes:
        name: Short task name.
        description: What an item asks and where held-out items come from.
        accuracy: Held-out accuracy.
        low: Lower end of its 95% bootstrap interval.
        high: Upper end.
        majority_baseline: Accuracy of always giving the majority answer.
        n: Number of held-out items (None when not stored).

    """

    name: str
    description: str
    accuracy: float
    low: float
    high: float
    majority_baseline: float
    n: int | None

    @property
    def beats_majority(self) -> bool:
        """Whether the interval's lower end lies above the majority baseline."""
        return self.low > self.majority_baseline

    def verdict(self) -> str:
        """Return a one-sentence plain verdict against the majority baseline."""
        if self.beats_majority:
            return ("Answers better than always saying the majority answer: the interval's "
                    f"lower end ({self.low:.3f}) lies above the baseline "
                    f"({self.majority_baseline:.3f}).")
        if self.high < self.majority_baseline:
            return ("Answers worse than always saying the majority answer: the whole "
                    f"interval lies below the baseline ({self.majority_baseline:.3f}).")
        return ("Does not answer better than always saying the majority answer: the "
                f"interval ({self.low:.3f} to {self.high:.3f}) reaches the baseline "
                f"({self.majority_baseline:.3f}).")


def chat_task_result(checkpoints: pd.DataFrame) -> ChatTaskResult | None:
    """Return the chat task result stored with a suite's chat checkpoint, if any.

    Args:
        checkpoints: The suite's checkpoints table (``Store.checkpoints``), whose ``extra``
            column holds JSON objects (strings or dicts).

    """
    chat = checkpoints[checkpoints["is_chat"].astype(bool)]
    if chat.empty or "extra" not in chat.columns:
        return None
    extra = json_object(chat["extra"].iloc[0])
    try:
        low, high = (float(v) for v in extra["task_accuracy_ci"])
        accuracy, baseline = float(extra["task_accuracy"]), float(extra["majority_baseline"])
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (accuracy, low, high, baseline)):
        return None
    n = extra.get("task_n")
    return ChatTaskResult(
        name=str(extra.get("task_name", "chat task")),
        description=str(extra.get("task_description", "")),
        accuracy=accuracy, low=low, high=high, majority_baseline=baseline,
        n=int(n) if isinstance(n, int | float) and math.isfinite(n) else None,
    )
