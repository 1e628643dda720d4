"""The one error type of the fine-tuning code (data, model and option problems)."""


class FinetuningError(ValueError):
    """A problem with the data, the model or the options that the user can fix; the message says how."""
