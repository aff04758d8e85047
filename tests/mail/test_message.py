from __future__ import annotations

import pytest

from conveyor.errors import InvalidInput
from conveyor.mail.message import Message, new_message_id


def test_plain_message_becomes_a_text_email() -> None:
    message = Message(to="ann@example.com", subject="Your code", text="Code: 012345")

    mime = message.to_email("Conveyor <noreply@example.org>", "<id-1@example.org>")

    assert mime["From"] == "Conveyor <noreply@example.org>"
    assert mime["To"] == "ann@example.com"
    assert mime["Subject"] == "Your code"
    assert mime["Message-ID"] == "<id-1@example.org>"
    assert mime["Date"]
    assert mime.get_content_type() == "text/plain"
    assert mime.get_content().strip() == "Code: 012345"


def test_html_is_added_as_an_alternative() -> None:
    message = Message(to="a@example.com", subject="Hi", text="plain", html="<p>rich</p>")

    mime = message.to_email("noreply@example.org", "<id-2@example.org>")

    assert mime.get_content_type() == "multipart/alternative"
    text_part = mime.get_body(("plain",))
    html_part = mime.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    assert text_part.get_content().strip() == "plain"
    assert html_part.get_content().strip() == "<p>rich</p>"


def test_message_sender_overrides_the_default() -> None:
    message = Message(to="a@example.com", subject="Hi", text="x", sender="ops@example.net")

    assert message.to_email("noreply@example.org", "<id@x>")["From"] == "ops@example.net"


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("to", {"to": "a@example.com\r\nBcc: evil@example.com"}),
        ("subject", {"subject": "Hi\nBcc: evil@example.com"}),
        ("sender", {"sender": "x@example.com\rBcc: evil@example.com"}),
    ],
)
def test_header_injection_is_refused(field: str, kwargs: dict[str, str]) -> None:
    values = {"to": "a@example.com", "subject": "Hi", "text": "body"} | kwargs

    with pytest.raises(InvalidInput, match="single line") as caught:
        Message(**values)

    assert caught.value.details == {"field": field}


def test_blank_recipient_is_refused() -> None:
    with pytest.raises(InvalidInput, match="recipient"):
        Message(to=" ", subject="Hi", text="body")


def test_message_id_uses_the_sender_domain() -> None:
    assert new_message_id("Conveyor <noreply@example.org>").endswith("@example.org>")
    assert new_message_id("not an address").endswith("@conveyor.local>")
    assert new_message_id("a@example.org") != new_message_id("a@example.org")
