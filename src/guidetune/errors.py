"""User-facing errors: each one line that names what was given and what is allowed."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class GuidetuneError(Exception):
    """An error the user can act on. The CLI prints ``str(error)`` and exits with status 2."""


class ConfigError(GuidetuneError):
    """One or more configuration problems, reported together (one line each)."""

    def __init__(self, messages: Iterable[str]):
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class TrainingDiverged(GuidetuneError):
    """A loss term became NaN or infinite; training stopped before the optimizer step."""


def did_you_mean(given: str, choices: Iterable[str], n: int = 1, synonyms: dict[str, str] | None = None) -> str:
    """``" Did you mean 'x'? Available: a, b, c"`` (the suggestion part only when one is close).

    ``synonyms`` maps names users are likely to type (e.g. Hugging Face's ``learning_rate``) to ours."""
    choices = sorted(set(choices))
    close = [synonyms[given]] if synonyms and given in synonyms else []
    close = close or difflib.get_close_matches(str(given), choices, n=n, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    shown = choices if len(choices) <= 40 else choices[:40] + [f"... ({len(choices) - 40} more)"]
    return f"{hint} Available: {', '.join(shown)}"


def raise_all(messages: list[str]) -> None:
    """Raise a ConfigError holding every message, if there is any."""
    if messages:
        raise ConfigError(messages)
