# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import base64
import email
import email.policy
import hashlib
import os
from contextlib import nullcontext
from unittest.mock import patch

from odoo.tests import tagged
from odoo.tools import mute_logger

from .. import compat, deferred
from .common import SENDER, GraphTransactionCase


@tagged("post_install", "-at_install", "mail_graph_api")
class TestGraphSending(GraphTransactionCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.partner = cls.env["res.partner"].create({"name": "Zoë Client", "email": "zoe@fabrikam.example"})

    def setUp(self):
        super().setUp()
        self.connect_server()

    def _mail(self, **values):
        base = {
            "subject": "Quote réf. 42",
            "body_html": "<p>Hello <b>world</b></p>",
            "email_from": SENDER,
            "email_to": "alice@fabrikam.example",
            "mail_server_id": self.server.id,
        }
        base.update(values)
        return self.env["mail.mail"].sudo().create(base)

    def _attachment(self, size, name):
        return self.env["ir.attachment"].create(
            {"name": name, "raw": os.urandom(size), "mimetype": "application/octet-stream"}
        )

    def test_queue_sends_with_cc_bcc_and_small_attachments(self):
        no_attachment = self._mail(subject="no attachment")
        one_mb = self._attachment(1024 * 1024, "one.bin")
        small = self._attachment(2000, "small.txt")
        mail = self._mail(
            email_cc="carol@fabrikam.example",
            headers=repr({"Bcc": "erin@fabrikam.example"}),
            recipient_ids=[(4, self.partner.id)],
            attachment_ids=[(6, 0, (small | one_mb).ids)],
        )
        self.env["mail.mail"].process_email_queue((mail | no_attachment).ids)
        self.assertEqual(no_attachment.state, "sent", no_attachment.failure_reason)
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        received = self.sent()
        recipients = sorted(addr for message in received for addr in message["to"] + message["cc"])
        self.assertIn("alice@fabrikam.example", recipients)
        self.assertIn("carol@fabrikam.example", recipients)
        self.assertIn("zoe@fabrikam.example", recipients)
        # Odoo's envelope is followed as it is, by SMTP as by Graph. 17.0+ keeps only To and Cc in the queue's
        # envelope (send_validated_to): a Bcc header on a mail.mail goes nowhere. 14.0-16.0 deliver it as a Bcc.
        # Bcc through send_email: test_bcc_delivered_and_invisible.
        everyone = [addr for message in received for addr in message["to"] + message["cc"] + message["bcc"]]
        if compat.queue_delivers_bcc_header():
            self.assertIn("erin@fabrikam.example", [addr for message in received for addr in message["bcc"]])
            self.assertNotIn("erin@fabrikam.example", recipients, "a Bcc never shows in To or Cc")
        else:
            self.assertNotIn("erin@fabrikam.example", everyone)
        names = {a["name"] for message in received for a in message["attachments"]}
        self.assertEqual(names, {"small.txt", "one.bin"})
        sizes = {a["name"]: a["size"] for a in received[-1]["attachments"]}
        self.assertEqual(sizes["one.bin"], 1024 * 1024)
        # Each message fits in 4 MB: one Graph request per message, sent as MIME.
        self.assertEqual(len(self.graph_calls("sendMail")), len(received))
        self.assertTrue(all(m["via"] == "sendMail-mime" for m in received))

    def test_bcc_delivered_and_invisible(self):
        message = compat.build_email(
            self.env["ir.mail_server"],
            email_from=SENDER,
            email_to=["to@fabrikam.example"],
            email_cc=["cc@fabrikam.example"],
            email_bcc=["hidden@fabrikam.example"],
            subject="bcc",
            body="hi",
        )
        self.env["ir.mail_server"].send_email(message, mail_server_id=self.server.id)
        (received,) = self.sent()
        self.assertEqual(received["bcc"], ["hidden@fabrikam.example"])
        raw = self.fake.raw(received["id"])
        self.assertNotIn(b"hidden@fabrikam.example", raw)

    def test_envelope_is_the_one_odoos_smtp_path_computes(self):
        """Odoo's own send_email() hands a plain SMTP session the envelope and headers our Graph path computes
        and sends (14.0 has no _prepare_email_message: compat rebuilds the envelope of its send_email())."""

        def message(**headers):
            return compat.build_email(
                self.env["ir.mail_server"],
                email_from=SENDER,
                email_to=["to@fabrikam.example", "Two <two@fabrikam.example>"],
                email_cc=["cc@fabrikam.example"],
                email_bcc=["hidden@fabrikam.example"],
                subject="envelope",
                body="hi",
                message_id="<envelope.1@contoso.onmicrosoft.com>",
                headers=headers,
            )

        class RecordingSmtp:
            def __init__(self):
                self.sent = []

            def send_message(self, msg, from_addr, to_addrs):
                self.sent.append((msg, from_addr, to_addrs))

            def quit(self):
                pass

        def odoo_smtp_path(msg):
            smtp = RecordingSmtp()
            plain = self.env["ir.mail_server"].with_context(mail_graph_api_smtp=True)  # Odoo's own send_email()
            # 14.0's send_email() also asks the registry whether tests run
            registry_gate = patch.object(type(self.env.registry), "in_test_mode", lambda registry: False)
            with compat.smtp_allowed_in_tests(self.env), registry_gate if compat.SERIES <= 14 else nullcontext():
                plain.send_email(msg, smtp_session=smtp)
            ((sent, smtp_from, recipients),) = smtp.sent
            return sent, smtp_from, recipients

        forged = '"Followers of Order 7" <catchall@contoso.onmicrosoft.com>'
        odoo_message, odoo_from, odoo_recipients = odoo_smtp_path(message(**{"X-Forge-To": forged}))
        ours_from, ours_recipients, ours = compat.prepare_email_message(
            self.env["ir.mail_server"], message(**{"X-Forge-To": forged}), None
        )
        self.assertEqual((ours_from, ours_recipients), (odoo_from, odoo_recipients))
        self.assertEqual(
            [(name, ours[name]) for name in ("To", "Cc", "Bcc", "X-Forge-To", "Message-Id")],
            [(name, odoo_message[name]) for name in ("To", "Cc", "Bcc", "X-Forge-To", "Message-Id")],
        )
        self.assertIn("catchall@contoso.onmicrosoft.com", ours["To"], "X-Forge-To replaced To, as Odoo does")
        self.assertNotIn("to@fabrikam.example", ours["To"])

        # What Microsoft delivers is that envelope: To, Cc and the Bcc, which no recipient sees.
        self.env["ir.mail_server"].send_email(message(), mail_server_id=self.server.id)
        (received,) = self.sent()
        _odoo_message, _odoo_from, odoo_recipients = odoo_smtp_path(message())
        self.assertEqual(sorted(received["to"] + received["cc"] + received["bcc"]), sorted(odoo_recipients))
        self.assertEqual(received["bcc"], ["hidden@fabrikam.example"])
        self.assertNotIn(b"hidden@fabrikam.example", self.fake.raw(received["id"]))

    def test_threading_headers_byte_identical(self):
        parent = "<parent.123@contoso.onmicrosoft.com>"
        message = compat.build_email(
            self.env["ir.mail_server"],
            email_from=SENDER,
            email_to=["to@fabrikam.example"],
            subject="Re: thread",
            body="reply",
            message_id="<reply.456.odoo@contoso.onmicrosoft.com>",
            references=f"<root.1@contoso.onmicrosoft.com> {parent}",
            headers={"In-Reply-To": parent},
            reply_to="catchall@contoso.onmicrosoft.com",
        )
        result = self.env["ir.mail_server"].send_email(message, mail_server_id=self.server.id)
        self.assertEqual(result, "<reply.456.odoo@contoso.onmicrosoft.com>")
        (received,) = self.sent()
        headers = {name.lower(): value for name, value in received["headers"]}
        self.assertEqual(headers["message-id"], "<reply.456.odoo@contoso.onmicrosoft.com>")
        self.assertEqual(headers["in-reply-to"], parent)
        self.assertEqual(headers["references"], f"<root.1@contoso.onmicrosoft.com> {parent}")
        self.assertEqual(received["internet_message_id"], "<reply.456.odoo@contoso.onmicrosoft.com>")

    def test_large_attachments_use_upload_sessions(self):
        self.server.graph_max_email_size = 60
        self.fake.configure(max_message_size=150 * 1024 * 1024)
        ten = self._attachment(10 * 1024 * 1024, "ten.bin")
        forty = self._attachment(40 * 1024 * 1024, "forty.bin")
        mail = self._mail(attachment_ids=[(6, 0, (ten | forty).ids)])
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        (received,) = self.sent()
        self.assertEqual(received["via"], "draft-send")
        sizes = {a["name"]: a["size"] for a in received["attachments"]}
        self.assertEqual(sizes, {"ten.bin": 10 * 1024 * 1024, "forty.bin": 40 * 1024 * 1024})
        self.assertEqual(len(self.graph_calls("createDraft")), 1)
        self.assertEqual(len(self.graph_calls("createUploadSession")), 2)
        self.assertEqual(len(self.graph_calls("send")), 1)
        uploads = self.graph_calls("upload")
        self.assertFalse(any(call["authorization"] for call in uploads))

    def test_large_attachments_go_from_the_filestore_not_through_memory(self):
        """Files of 3 MB and more reach Odoo's message as stand-ins and are uploaded from the filestore."""
        big = self._attachment(5 * 1024 * 1024, "big.bin")
        small = self._attachment(200_000, "small.bin")
        mail = self._mail(attachment_ids=[(6, 0, (big | small).ids)])
        built = []
        server_class = type(self.env["ir.mail_server"])
        build_email = getattr(server_class, compat.BUILD_METHOD)

        def spy(server, *args, **kwargs):
            built.append({name: len(content) for name, content, _ in kwargs.get("attachments") or ()})
            return build_email(server, *args, **kwargs)

        with patch.object(server_class, compat.BUILD_METHOD, spy):
            mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(built[0]["small.bin"], 200_000)
        self.assertLess(built[0]["big.bin"], 100, "Odoo built the message with the file's bytes")
        (received,) = self.sent()
        by_name = {a["name"]: a for a in received["attachments"]}
        self.assertEqual(by_name["big.bin"]["sha256"], hashlib.sha256(big.raw).hexdigest())
        self.assertEqual(by_name["big.bin"]["size"], 5 * 1024 * 1024)
        self.assertEqual(by_name["small.bin"]["sha256"], hashlib.sha256(small.raw).hexdigest())
        self.assertEqual(len(self.graph_calls("createUploadSession")), 1)
        self.assertEqual(len(big.raw), 5 * 1024 * 1024, "a stand-in stayed in the transaction's cache")
        self.assertEqual(deferred._stand_ins, {}, "stand-ins outlived their batch")

    def test_copies_of_one_mail_share_a_large_attachment(self):
        big = self._attachment(4 * 1024 * 1024, "shared.bin")
        mail = self._mail(recipient_ids=[(6, 0, self.partner.ids)], attachment_ids=[(6, 0, big.ids)])
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        received = self.sent()
        self.assertEqual(len(received), 2, "one copy for email_to, one for the partner")
        for copy in received:
            (attachment,) = copy["attachments"]
            self.assertEqual(attachment["sha256"], hashlib.sha256(big.raw).hexdigest())

    def test_content_that_looks_like_a_stand_in_is_sent_as_it_is(self):
        forged = deferred._PREFIX + b"0" * 32
        attachment = self.env["ir.attachment"].create({"name": "forged.txt", "raw": forged})
        mail = self._mail(attachment_ids=[(6, 0, attachment.ids)])
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        (received,) = self.sent()
        self.assertEqual(received["attachments"][0]["sha256"], hashlib.sha256(forged).hexdigest())

    @mute_logger("odoo.addons.mail.models.mail_mail", "odoo.addons.mail_graph_api.session")
    def test_smtp_fallback_sends_the_large_attachment_itself(self):
        sink = self.smtp_fallback_sink()
        self.fake.inject("createDraft", status=403, code="ErrorAccessDenied", count=1)
        big = self._attachment(4 * 1024 * 1024, "big.bin")
        mail = self._mail(attachment_ids=[(6, 0, big.ids)])
        mail.send()
        self.assertEqual(mail.state, "sent", mail.failure_reason)
        self.assertEqual(self.sent(), [])
        (message,) = sink.messages
        parsed = email.message_from_bytes(message["data"], policy=email.policy.default)
        (part,) = [p for p in parsed.walk() if p.get_filename() == "big.bin"]
        self.assertEqual(part.get_content(), big.raw)

    def test_over_the_mailbox_limit_fails_clearly(self):
        self.assertEqual(self.server._get_max_email_size(), 35)
        message = compat.build_email(
            self.env["ir.mail_server"],
            email_from=SENDER,
            email_to=["to@fabrikam.example"],
            subject="huge",
            body="x",
            attachments=[("huge.bin", os.urandom(36 * 1024 * 1024), "application/octet-stream")],
        )
        from odoo.addons.base.models.ir_mail_server import MailDeliveryException

        with self.assertRaises(MailDeliveryException) as caught:
            self.env["ir.mail_server"].send_email(message, mail_server_id=self.server.id)
        self.assertIn("35", str(caught.exception))
        self.assertEqual(self.sent(), [])

    def test_chatter_message_to_followers(self):
        record = self.partner
        record.message_subscribe(partner_ids=self.partner.ids)
        record.with_context(mail_notify_force_send=True).message_post(
            body="<p>Update for followers</p>", subject="Chatter", message_type="comment",
            subtype_xmlid="mail.mt_comment", partner_ids=self.partner.ids,
        )  # fmt: skip
        self.env["mail.mail"].process_email_queue()
        received = [m for m in self.sent() if "zoe@fabrikam.example" in m["to"]]
        self.assertTrue(received, self.sent())

    def test_reset_password_mail(self):
        user = self.env["res.users"].create({"name": "Reset Me", "login": "reset@fabrikam.example",
                                             "email": "reset@fabrikam.example"})  # fmt: skip
        self.mark()
        user.action_reset_password()
        self.env["mail.mail"].process_email_queue()
        received = [m for m in self.sent() if "reset@fabrikam.example" in m["to"]]
        self.assertEqual(len(received), 1, self.sent())

    def test_send_test_email_button(self):
        self.env.user.email = "admin.user@fabrikam.example"
        self.mark()  # 19.0 mails the user about the email change
        self.server.action_graph_send_test_email()
        (received,) = self.sent()
        self.assertEqual(received["to"], ["admin.user@fabrikam.example"])

    def test_batch_shares_one_token_and_one_request_per_mail(self):
        mails = self.env["mail.mail"].sudo()
        for index in range(5):
            mails |= self._mail(email_to=f"user{index}@fabrikam.example", subject=f"batch {index}")
        self.mark()
        mails.send()
        self.assertEqual(set(mails.mapped("state")), {"sent"})
        self.assertEqual(len(self.sent()), 5)
        self.assertEqual(len(self.graph_calls("sendMail")), 5)
        self.assertEqual(self.graph_calls("token"), [], "the stored access token serves the whole batch")
        self.assertEqual(self.graph_calls("me"), [])

    def test_attachment_content_intact(self):
        payload = os.urandom(50_000)
        attachment = self.env["ir.attachment"].create({"name": "data.bin", "datas": base64.b64encode(payload)})
        mail = self._mail(attachment_ids=[(6, 0, attachment.ids)])
        mail.send()
        (received,) = self.sent()
        import hashlib

        self.assertEqual(received["attachments"][0]["sha256"], hashlib.sha256(payload).hexdigest())
