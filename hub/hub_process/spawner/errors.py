"""What a start answers when it cannot have its GPU."""
from tornado import web


class GPUUnavailable(web.HTTPError):
    """No GPU for this server now: 503 with the message in the REST API's JSON error, and
    the same message on the spawn page (JupyterHub shows ``jupyterhub_message`` as it is)."""

    def __init__(self, message: str, status: int = 503):
        super().__init__(status, message.replace("%", "%%"))
        self.jupyterhub_message = message
