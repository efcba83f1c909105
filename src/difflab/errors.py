"""DifflabError: the one exception type for bad input and unusable environments.

Its message is one line that names the thing at fault (file, record, field, model, URL); the CLI
and the workflow scripts print it without a traceback.
"""


class DifflabError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
