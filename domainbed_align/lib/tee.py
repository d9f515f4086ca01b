"""DomainBed's out.txt / err.txt: what a run prints goes to the terminal and to its folder.

The copy in the folder is best effort: a full or read-only disk must not end a run that could
still finish or checkpoint, and the terminal must keep every line (the `error:` line above all).
"""


class Tee:
    """Write to a stream and append to a file (DomainBed's out.txt / err.txt). The file is
    best effort: on a full or read-only disk it stops, and the stream still gets every line."""

    def __init__(self, stream, path):
        self.stream = stream
        try:
            self.file = open(path, "a")
        except OSError:
            self.file = None

    def write(self, text):
        self.stream.write(text)
        if self.file is not None:
            try:
                self.file.write(text)
                self.file.flush()
            except OSError:
                self._drop()

    def flush(self):
        self.stream.flush()
        if self.file is not None:
            try:
                self.file.flush()
            except OSError:
                self._drop()

    def _drop(self):
        try:
            self.file.close()
        except OSError:
            pass
        self.file = None

    def close(self):
        if self.file is not None:
            self._drop()

    def isatty(self):
        return self.stream.isatty()

