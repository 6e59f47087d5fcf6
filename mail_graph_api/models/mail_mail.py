# License LGPL-3.0 or later (https://www.gnu.org/licenses/lgpl-3.0).
import contextlib

from odoo import _, fields, models
from odoo.exceptions import AccessError

from .. import compat, deferred
from ..session import GraphSession, pop_outcome


class MailMail(models.Model):
    _inherit = "mail.mail"

    def action_graph_send_again(self):
        """An administrator checked the sender's Sent Items after an uncertain attempt: send the mail again."""
        if not self.env.is_admin():
            raise AccessError(_("Only administrators can decide to send a mail again."))
        Log = self.env["mail.graph.api.log"].sudo()
        for mail in self.filtered(lambda m: m.state == "exception" and m.message_id):
            Log._record_guard(
                mail.mail_server_id,
                mail.message_id,
                "decision",
                _("%s checked Sent Items and chose to send again.", self.env.user.login),
            )
        return compat.retry_mails(self)

    def _send(self, *args, **kwargs):
        graph = isinstance(kwargs.get("smtp_session"), GraphSession)
        with compat.queue_send_gate_lifted(self.env, graph), deferred.graph_batch(graph):
            if compat.SERIES >= 17:
                return super()._send(*args, **kwargs)
            # 14.0-16.0 read the attachments inside _send itself (no _prepare_outgoing_list): the window for
            # stand-ins is the whole batch; nothing else in it reads the files' content.
            with self._graph_stand_ins():
                return super()._send(*args, **kwargs)

    def _prepare_outgoing_list(self, *args, **kwargs):  # 17.0+
        """For a Graph session, large attachments are read as stand-ins (``deferred``), only here: nothing
        else in the batch sees one."""
        with self._graph_stand_ins():
            return super()._prepare_outgoing_list(*args, **kwargs)

    @contextlib.contextmanager
    def _graph_stand_ins(self):
        with deferred.preparing() as handed_out:
            try:
                yield
            finally:
                if handed_out:
                    # Stand-ins were cached as the files' content: no later read in this transaction may see one.
                    compat.invalidate(self.env["ir.attachment"].browse(handed_out), ["raw", "datas"])

    def _postprocess_sent_message(self, *args, **kwargs):
        """Give Graph failures Odoo's own terms: the right failure type, and throttled mails stay queued.

        Arguments pass through untouched: 19.0 added ``success_emails`` after ``success_pids``.
        """
        retry = self.browse()
        for mail in self.filtered(lambda m: m.state == "exception" and m.message_id):
            outcome = pop_outcome(mail.message_id)
            if not outcome:
                continue
            if outcome.retryable:
                retry |= mail
                values = dict(compat.mail_failure_values(False, outcome.reason), state="outgoing")
                if outcome.not_before:
                    # Queue runs before its slot skip it (Odoo's own scheduled date): no build, no attempt.
                    values["scheduled_date"] = fields.Datetime.to_string(outcome.not_before)
                mail.write(values)
                continue
            mail.write(compat.mail_failure_values(outcome.failure_type, outcome.reason))
            if len(self) == 1:
                kwargs.update(failure_type=compat.failure_type(outcome.failure_type), failure_reason=outcome.reason)
        if retry:
            # Nothing went out: back to the queue for the next cron run, notifications back to "ready".
            self.env["mail.notification"].sudo().search(
                [(compat.NOTIFICATION_MAIL_FIELD, "in", retry.ids), ("notification_status", "=", "exception")]
            ).write({"notification_status": "ready", "failure_type": False, "failure_reason": False})
            remaining = self - retry
            if not remaining:
                return True
            return super(MailMail, remaining)._postprocess_sent_message(*args, **kwargs)
        return super()._postprocess_sent_message(*args, **kwargs)
