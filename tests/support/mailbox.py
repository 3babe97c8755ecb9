"""A local SMTP server (aiosmtpd) that keeps what it receives, for the email tests."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.server import free_port


@dataclass
class Mailbox:
    port: int
    messages: list[Message] = field(default_factory=list)

    def texts(self) -> list[tuple[EmailMessage, str]]:
        """Each message with its decoded text body."""
        found = []
        for message in self.messages:
            assert isinstance(message, EmailMessage)
            found.append((message, str(message.get_content())))
        return found

    def wait_for(self, match: Callable[[Message], bool], timeout: float = 20.0) -> Message:
        """The first message `match` accepts, waiting for it to arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if match(message):
                    return message
            time.sleep(0.05)
        raise AssertionError("no such message arrived")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@contextmanager
def running_mailbox() -> Iterator[Mailbox]:
    box = Mailbox(free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
